"""FastFold command-line interface (Click commands, rich output)."""

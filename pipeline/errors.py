"""Exceptions of the data pipeline. The CLI turns `InputError` into one stderr line and exit code 2."""


class InputError(ValueError):
    """Bad user input (FASTA, flags, database paths). The message is one line, shown as is."""


class DatabaseError(InputError):
    """A database the run needs is missing or malformed; raised before any search starts."""


class ToolError(RuntimeError):
    """An external search tool (hhblits, hhsearch, kalign, ...) failed; carries the tail of its stderr."""

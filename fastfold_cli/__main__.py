from fastfold_cli.main import cli

cli(prog_name="fastfold")

"""User-facing errors: one line on stderr and a non-zero exit, never a traceback."""
from __future__ import annotations

import click


class UserError(click.ClickException):
    """Printed as 'Error: <message>' and exits with code 2."""

    exit_code = 2


def fail(message: str):
    raise UserError(message)

"""The `graphfix` command: a thin typer layer over the library API (app.py: the app and its error layer;
commands.py: one function per verb; progress.py: what a terminal shows)."""

from . import commands as _commands  # noqa: F401  (registers the commands on the app)
from .app import EXIT_CODES, JSON_SCHEMA, app

__all__ = ["EXIT_CODES", "JSON_SCHEMA", "app"]

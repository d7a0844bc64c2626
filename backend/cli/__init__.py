"""The ``sentinel`` command line (typer), one module per command group.

``_common`` holds what the groups share (the invocation's settings, ``parse_utc``, the
console); ``_app`` is the root app, which registers the groups and turns errors into one
line and exit 2 (:func:`main`, the console entry point). The groups import ``_common``
only, never the root, so the package has no import cycle (import-linter checks it).
"""

from backend.cli._app import app, main

__all__ = ["app", "main"]

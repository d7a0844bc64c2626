"""The ``sentinel`` console script, light to import: the CLI (typer, pandas, chromadb...)
is imported inside :func:`main`, so Ctrl-C while it is still importing (seconds on a
loaded machine) ends as Ctrl-C in a command does: ``sentinel: aborted``, exit 130, no
traceback."""

from __future__ import annotations

import sys
from typing import NoReturn

__all__ = ["INTERRUPTED", "aborted", "caused_by_interrupt", "main"]

INTERRUPTED = 130
"""The exit status of a command interrupted by Ctrl-C (128 + SIGINT), as a shell's."""


def caused_by_interrupt(exc: BaseException) -> bool:
    """Whether a ``KeyboardInterrupt`` is in ``exc``'s chain of causes and contexts (an
    interrupt inside a native import surfaces as that import's ``ImportError``)."""
    seen: set[int] = set()
    cause: BaseException | None = exc
    while cause is not None and id(cause) not in seen:
        if isinstance(cause, KeyboardInterrupt):
            return True
        seen.add(id(cause))
        cause = cause.__cause__ or cause.__context__
    return False


def aborted() -> NoReturn:
    """Say ``sentinel: aborted`` on stderr and exit 130."""
    print("sentinel: aborted", file=sys.stderr)
    sys.exit(INTERRUPTED)


def main() -> None:
    """Import the CLI, then run it (:func:`backend.cli.main`)."""
    try:
        from backend.cli import main as cli_main
    except BaseException as exc:
        if isinstance(exc, KeyboardInterrupt) or (
            isinstance(exc, Exception) and caused_by_interrupt(exc)
        ):
            aborted()
        raise
    cli_main()

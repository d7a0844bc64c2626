"""The ``sentinel`` console script, light to import: the CLI (typer, pandas, chromadb...)
is imported inside :func:`main`, so Ctrl-C while it is still importing (seconds on a
loaded machine) ends as Ctrl-C in a command does: ``sentinel: aborted``, exit 130, no
traceback."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import TypeVar

from backend.interrupts import aborted, caused_by_interrupt

__all__ = ["main", "run_script"]

_T = TypeVar("_T")


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


def run_script(name: str, main: Callable[[], _T]) -> _T:
    """Run a ``scripts/*.py`` benchmark's ``main`` as the CLI runs a command: a
    :class:`~backend.errors.SentinelError` (bad settings, a missing data file) is one line
    ``<name>: error: ...`` on stderr and exit 2, Ctrl-C is ``aborted`` and exit 130; no
    traceback for either. Returns what ``main`` returned."""
    from backend.errors import SentinelError

    try:
        return main()
    except SentinelError as err:
        print(f"{name}: error: {err}", file=sys.stderr)
        raise SystemExit(2) from None
    except KeyboardInterrupt:
        aborted()


if __name__ == "__main__":  # ``python -m backend.entry ...`` (a reviewer's did nothing)
    main()

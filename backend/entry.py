"""The ``sentinel`` console script, light to import: the CLI (typer, pandas, chromadb...)
is imported inside :func:`main`, so Ctrl-C while it is still importing (seconds on a
loaded machine) ends as Ctrl-C in a command does: ``sentinel: aborted``, exit 130, no
traceback."""

from __future__ import annotations

from backend.interrupts import aborted, caused_by_interrupt

__all__ = ["main"]


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


if __name__ == "__main__":  # ``python -m backend.entry ...`` (a reviewer's did nothing)
    main()

"""What Ctrl-C ends as, for the console script and the CLI alike: ``sentinel: aborted`` on
stderr and exit 130 (128 + SIGINT, as a shell's), also when the interrupt surfaces as
another error (a native import's ``ImportError``). Imports nothing of the project."""

from __future__ import annotations

import sys
from typing import NoReturn

__all__ = ["INTERRUPTED", "aborted", "caused_by_interrupt"]

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

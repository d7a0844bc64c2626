"""What the audit trail knows of processes and files: who owns a pending row and whether
that process is gone, whether the trail's file is still the one a process opened, and
the writer lock shared by every process of one store."""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import filelock

from backend.errors import StoreError

__all__ = ["WRITER_LOCK_TIMEOUT_S", "WriterLock", "owner_gone", "owner_stamp"]

WRITER_LOCK_TIMEOUT_S = 600.0
"""Longest wait for :class:`WriterLock`. Its holders read, decide and write (persona
versions, episode logs, pruning): milliseconds to a few seconds for a refresh from a
large fills file; a chat model is asked outside it."""


def owner_stamp() -> str:
    """``host:pid`` of this process: the owner of the rows it writes ahead."""
    return f"{socket.gethostname()}:{os.getpid()}"


def owner_gone(owner: str | None) -> bool:
    """Whether the process that owns pending rows is gone (same host only: a process of
    another host, or this one, is taken as alive)."""
    if owner is None:
        return True
    host, _, pid = owner.rpartition(":")
    if host != socket.gethostname() or not pid.isdigit() or int(pid) == os.getpid():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


class WriterLock:
    """Held across processes sharing a trail (``filelock`` on ``<trail>.writer.lock``;
    without a trail file, a lock of this process): a writer that reads what is stored,
    decides and writes what follows from it (a trader's next persona version) holds it,
    so two processes never both write "version n + 1" from the same read. Re-entrant in
    one thread."""

    def __init__(self, trail: Path | None, *, check: Callable[[], None]) -> None:
        """``check``: raises when the trail is gone (called before the lock file is
        taken: taking it made a deleted store's folder again)."""
        self._file = (
            filelock.FileLock(f"{trail}.writer.lock", timeout=WRITER_LOCK_TIMEOUT_S)
            if trail is not None
            else None
        )
        self._local = threading.RLock()
        self._check = check

    @contextmanager
    def held(self) -> Iterator[None]:
        """Hold it for the block. Raises :class:`StoreError` after
        :data:`WRITER_LOCK_TIMEOUT_S` seconds of waiting, when the lock file cannot be
        opened (a read-only store), or the ``check``'s error."""
        with self._local:
            if self._file is None:
                yield
                return
            self._check()
            try:
                self._file.acquire()
            except filelock.Timeout:
                raise StoreError(
                    f"{self._file.lock_file}: another process has held the writer lock "
                    f"for {WRITER_LOCK_TIMEOUT_S:.0f} s"
                ) from None
            except OSError as exc:  # a store that became read-only, a full disk
                raise StoreError(
                    f"{self._file.lock_file}: cannot take the writer lock: {exc.strerror or exc}"
                ) from None
            try:
                yield
            finally:
                self._file.release()

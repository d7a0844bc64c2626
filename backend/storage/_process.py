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


def _started(pid: int) -> str | None:
    """When process ``pid`` started (``/proc/<pid>/stat`` field 22, clock ticks since
    boot; ``proc(5)``), or None where there is no procfs or no such process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (OSError, ValueError):
        return None
    fields = stat.rpartition(")")[2].split()  # the command name may hold spaces
    return fields[19] if len(fields) > 19 else None


def owner_stamp() -> str:
    """``host:pid:start`` of this process (``host:pid`` without procfs): the owner of the
    rows it writes ahead. The start time tells a process from a later one given the same
    pid (pid 1 of a container after every restart): with ``host:pid`` only, a crashed
    write's rows stayed pending for good, taken as this process's own."""
    pid = os.getpid()
    start = _started(pid)
    return f"{socket.gethostname()}:{pid}" + (f":{start}" if start is not None else "")


def owner_gone(owner: str | None) -> bool:
    """Whether the process that owns pending rows is gone (same host only: a process of
    another host is taken as alive): no process has its pid, or the one that has it
    started at another time than the stamp says (:func:`owner_stamp`; a stamp without
    a start time, written before it was kept, is alive while its pid is)."""
    if owner is None:
        return True
    parts = owner.split(":")
    start: str | None = None
    if len(parts) >= 3 and parts[-1].isdigit() and parts[-2].isdigit():  # host:pid:start
        host, pid, start = ":".join(parts[:-2]), parts[-2], parts[-1]
    else:  # host:pid
        host, _, pid = owner.rpartition(":")
    if host != socket.gethostname() or not pid.isdigit():
        return False
    if start is not None:
        return _started(int(pid)) not in (start, None) or not _exists(int(pid))
    return int(pid) != os.getpid() and not _exists(int(pid))


def _exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


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

"""Output files written whole or not at all, output paths checked before a long run, and
whether a file a process keeps open is still the one at its path.

Every file the project writes for a user (OHLCV downloads, eval reports, the ablation's
JSON and HTML) goes through :func:`write_atomic`: a temporary file in the target's folder,
flushed to disk, then renamed over the target (``os.replace`` is atomic on POSIX within
one file system), so a reader never sees half a file and a failure leaves the old one.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

from backend.errors import DataError

__all__ = [
    "check_writable",
    "file_identity",
    "write_atomic",
    "write_files_atomic",
    "write_text_atomic",
]


def write_atomic(path: Path, fill: Callable[[Path], None], *, what: str = "file") -> None:
    """Write ``path`` atomically: ``fill(tmp)`` writes a temporary sibling, which is
    fsynced, made readable by all (0644, as an ordinary new file; ``mkstemp`` makes 0600)
    and renamed over ``path``; parents are created. The temporary file never outlives
    the call. Raises :class:`DataError` naming ``path`` and ``what`` when the file system
    refuses (a missing permission, a file where a folder should be, a full disk)."""
    tmp: Path | None = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
        tmp = Path(name)
        fill(tmp)
        with tmp.open("rb") as handle:
            os.fsync(handle.fileno())
        tmp.chmod(0o644)
        os.replace(tmp, path)
        tmp = None
    except OSError as exc:
        raise DataError(f"cannot write the {what}: {exc.strerror or exc}", path=path) from None
    finally:
        if tmp is not None:
            with contextlib.suppress(OSError):
                tmp.unlink()


def write_files_atomic(
    target: Path, names: Sequence[str], fill: Callable[[Path], None], *, what: str
) -> None:
    """Write the files ``names`` of a run into folder ``target``: ``fill(stage)`` writes
    them all into a temporary sibling folder, then each is moved in (``os.replace``), so
    a failure while writing leaves ``target`` as it was, never old and new files mixed
    (a replay had). Raises :class:`DataError` naming ``target`` and ``what`` when the
    file system refuses, or when ``fill`` did not write one of ``names``."""
    stage: Path | None = None
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        stage = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
        fill(stage)
        missing = [name for name in names if not (stage / name).is_file()]
        if missing:
            raise DataError(f"cannot write the {what}: {missing[0]} was not written", path=target)
        target.mkdir(exist_ok=True)
        for name in names:  # every file is complete before any is moved in
            os.replace(stage / name, target / name)
    except OSError as exc:
        raise DataError(f"cannot write the {what}: {exc.strerror or exc}", path=target) from None
    finally:
        if stage is not None:
            shutil.rmtree(stage, ignore_errors=True)


def write_text_atomic(path: Path, text: str, *, what: str = "file") -> None:
    """:func:`write_atomic` of ``text`` (UTF-8)."""

    def fill(tmp: Path) -> None:
        tmp.write_text(text, encoding="utf-8")

    write_atomic(path, fill, what=what)


def check_writable(path: Path, *, what: str = "file") -> None:
    """Refuse, before any work, an output ``path`` that cannot be written: a directory,
    or a parent that is a file or a folder this process may not write into (the first
    existing ancestor is checked; missing folders are created by the write). Raises
    :class:`DataError` naming ``path`` and ``what``."""
    if path.is_dir():
        raise DataError(f"the {what} would replace a directory", path=path)
    ancestor = path.parent
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise DataError(f"cannot write the {what}: {ancestor} is not a directory", path=path)
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise DataError(f"cannot write the {what}: {ancestor} is not writable", path=path)


def file_identity(path: Path | None) -> tuple[int, int] | None:
    """``(device, inode)`` of the file at ``path`` (None: no path, or no file there). A
    process that keeps a SQLite file open compares it with the identity it opened: a
    connection to a file deleted or replaced under it still reads and writes the old
    inode, without an error (one ``stat``, ~2 us measured)."""
    if path is None:
        return None
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino

"""SQLite audit trail of every memory mutation (event, old, new, as_of), beside the chroma data."""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

from backend.errors import StoreError
from backend.storage.models import AuditEvent

__all__ = ["AuditLog", "AuditRow"]

AuditRow = tuple[
    str, str, Literal["ADD", "UPDATE", "DELETE"], dict[str, Any] | None, dict[str, Any] | None
]
"""(trader_id, record_id, event, old content, new content)."""

_SCHEMA = """
CREATE TABLE IF NOT EXISTS memory_audit (
    seq       INTEGER PRIMARY KEY AUTOINCREMENT,
    trader_id TEXT NOT NULL,
    record_id TEXT NOT NULL,
    event     TEXT NOT NULL CHECK (event IN ('ADD', 'UPDATE', 'DELETE')),
    old       TEXT,
    new       TEXT,
    as_of     TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS memory_audit_trader ON memory_audit (trader_id, record_id, seq);
"""


class AuditLog:
    """Append-only audit trail in SQLite (WAL mode, ``synchronous=FULL``).

    :meth:`transaction` yields a writer whose rows are committed only if the block exits
    cleanly, so the store can write its chroma batch *inside* the block: a chroma failure
    rolls the audit rows back and nothing is half-recorded. Thread-safe.
    """

    def __init__(self, path: Path, *, durable: bool = True) -> None:
        """``durable=False`` (throwaway stores) commits without fsync (``synchronous=OFF``):
        a process kill still keeps committed rows, a power cut may not."""
        self.path = path
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._conn = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute(f"PRAGMA synchronous={'FULL' if durable else 'OFF'}")
            self._conn.executescript(_SCHEMA)
        except sqlite3.Error as exc:
            raise StoreError(f"{path}: cannot open the audit trail ({exc})") from None
        self._lock = threading.RLock()

    @contextmanager
    def transaction(self, *, as_of: datetime) -> Iterator[_Writer]:
        """Open a write transaction; rows are stamped with ``as_of`` (ISO-8601 UTC)."""
        with self._lock:
            try:
                self._conn.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as exc:
                raise StoreError(f"{self.path}: audit trail is not writable ({exc})") from None
            writer = _Writer(self._conn, as_of.isoformat())
            try:
                yield writer
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            try:
                self._conn.execute("COMMIT")
            except sqlite3.Error as exc:
                self._conn.execute("ROLLBACK")
                raise StoreError(f"{self.path}: audit commit failed ({exc})") from None

    def history(self, trader_id: str, record_id: str | None = None) -> list[AuditEvent]:
        """Events of one trader (optionally one record), oldest first."""
        sql = "SELECT seq, trader_id, record_id, event, old, new, as_of FROM memory_audit "
        sql += "WHERE trader_id = ?"
        params: list[str] = [trader_id]
        if record_id is not None:
            sql += " AND record_id = ?"
            params.append(record_id)
        with self._lock:
            rows = self._conn.execute(sql + " ORDER BY seq", params).fetchall()
        return [
            AuditEvent(
                seq=seq,
                trader_id=tid,
                record_id=rid,
                event=event,
                old=json.loads(old) if old is not None else None,
                new=json.loads(new) if new is not None else None,
                as_of=datetime.fromisoformat(as_of),
            )
            for seq, tid, rid, event, old, new, as_of in rows
        ]

    def close(self) -> None:
        with self._lock:
            self._conn.close()


class _Writer:
    def __init__(self, conn: sqlite3.Connection, as_of: str) -> None:
        self._conn = conn
        self._as_of = as_of

    def record(self, rows: Sequence[AuditRow]) -> None:
        self._conn.executemany(
            "INSERT INTO memory_audit (trader_id, record_id, event, old, new, as_of) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            [
                (
                    trader_id,
                    record_id,
                    event,
                    json.dumps(old, sort_keys=True) if old is not None else None,
                    json.dumps(new, sort_keys=True) if new is not None else None,
                    self._as_of,
                )
                for trader_id, record_id, event, old, new in rows
            ],
        )

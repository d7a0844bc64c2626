"""SQLite persistence of working-memory windows (so a restart resumes the same window).

One row per snapshot still in a window (``snapshot``: trader, symbol, as_of in
microseconds, the snapshot JSON) and one cursor per (trader, symbol) (``cursor``: the
``as_of`` up to which snapshots were consolidated into episodic memory), and the agent's
equity marks (``account_equity``: trader, symbol, timeframe, as_of in microseconds,
equity in quote currency; :mod:`backend.memory._equity`; the ``equity`` table of the
first version, keyed without the timeframe, is dropped at open: its marks are derived
state, and a loop that finds none begins a new high-water mark). WAL journal with
``synchronous=NORMAL``: a commit costs no fsync (durable up to the last checkpoint on
power loss, never corrupt). ``path=None`` keeps everything in memory (no resume).

The file is checked to still be the one opened (:func:`~backend.files.file_identity`,
one ``stat``) before every read of its version and every write: a state file deleted or
replaced while a process ran (the run directory removed under ``sentinel mcp``) had
kept answering from the deleted file, and writes into it were lost without a word.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

from backend.errors import StoreError
from backend.files import file_identity
from backend.memory.models import MarketSnapshot

__all__ = ["AccountKey", "WindowDB", "as_of_us", "datetime_us"]

AccountKey = tuple[str, str, str]
"""``(trader_id, symbol, timeframe)``: one decision loop's account."""

_SCHEMA = """
CREATE TABLE IF NOT EXISTS snapshot (
    trader_id TEXT NOT NULL,
    symbol TEXT NOT NULL,
    as_of_us INTEGER NOT NULL,
    body TEXT NOT NULL,
    PRIMARY KEY (trader_id, symbol, as_of_us)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS cursor (
    trader_id TEXT NOT NULL,
    symbol TEXT NOT NULL,
    consolidated_us INTEGER NOT NULL,
    PRIMARY KEY (trader_id, symbol)
) WITHOUT ROWID;
DROP TABLE IF EXISTS equity;
CREATE TABLE IF NOT EXISTS account_equity (
    trader_id TEXT NOT NULL,
    symbol TEXT NOT NULL,
    timeframe TEXT NOT NULL,
    as_of_us INTEGER NOT NULL,
    equity REAL NOT NULL,
    PRIMARY KEY (trader_id, symbol, timeframe, as_of_us)
) WITHOUT ROWID;
"""


def as_of_us(snapshot: MarketSnapshot) -> int:
    """``snapshot.as_of`` in integer microseconds since the epoch (UTC)."""
    return datetime_us(snapshot.as_of)


def datetime_us(moment: datetime) -> int:
    """An aware datetime in integer microseconds since the epoch (UTC; exact, no float)."""
    moment = moment.astimezone(UTC)
    return (moment.toordinal() - 719_163) * 86_400_000_000 + (
        (moment.hour * 3600 + moment.minute * 60 + moment.second) * 1_000_000 + moment.microsecond
    )


class WindowDB:
    """The persisted windows; every method commits (one transaction per call)."""

    def __init__(self, path: str | Path | None) -> None:
        self.path = Path(path) if path is not None else None
        try:
            if self.path is not None:
                self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(
                str(self.path) if self.path is not None else ":memory:",
                isolation_level=None,
                check_same_thread=False,
            )
            self._db.execute("PRAGMA busy_timeout=10000")  # another process may hold it
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.executescript(_SCHEMA)
        except (sqlite3.Error, OSError) as exc:
            raise StoreError(f"working-memory state {path}: {exc}") from None
        self._identity = file_identity(self.path)

    def _check(self) -> None:
        """Raise :class:`StoreError` when the file is no longer the one opened (module doc)."""
        if self._identity is not None and file_identity(self.path) != self._identity:
            raise StoreError(
                f"working-memory state {self.path}: the file is gone or was replaced while "
                "this process ran (the store was deleted or moved): restart on the store"
            )

    def load(self) -> Iterator[tuple[str, str, MarketSnapshot]]:
        """Every stored snapshot as ``(trader_id, symbol, snapshot)``, oldest first per key."""
        rows = self._db.execute(
            "SELECT trader_id, symbol, body FROM snapshot ORDER BY trader_id, symbol, as_of_us"
        )
        for trader_id, symbol, body in rows:
            yield trader_id, symbol, MarketSnapshot.model_validate_json(body)

    def data_version(self) -> int:
        """SQLite's ``PRAGMA data_version`` on this connection: it changes when another
        connection (another process) commits to the file, never for this connection's own
        writes; a reader compares it to know whether what it loaded is still current."""
        self._check()
        return int(self._db.execute("PRAGMA data_version").fetchone()[0])

    def cursors(self) -> dict[tuple[str, str], int]:
        rows = self._db.execute("SELECT trader_id, symbol, consolidated_us FROM cursor")
        return {(t, s): int(us) for t, s, us in rows}

    def put(self, snapshot: MarketSnapshot) -> None:
        """Insert (or replace, same ``as_of``) one snapshot."""
        self._check()
        try:
            self._db.execute(
                "INSERT OR REPLACE INTO snapshot VALUES (?, ?, ?, ?)",
                (
                    snapshot.trader_id,
                    snapshot.symbol,
                    as_of_us(snapshot),
                    snapshot.model_dump_json(),
                ),
            )
        except sqlite3.Error as exc:
            raise StoreError(f"working-memory state: write failed: {exc}") from None

    def consolidated(self, trader_id: str, symbol: str, until_us: int) -> None:
        """Drop the key's snapshots up to ``until_us`` and move its cursor there (atomic)."""
        self._check()
        try:
            with self._transaction():
                self._db.execute(
                    "DELETE FROM snapshot WHERE trader_id = ? AND symbol = ? AND as_of_us <= ?",
                    (trader_id, symbol, until_us),
                )
                self._db.execute(  # a cursor only moves forward (two writers: the later wins)
                    "INSERT INTO cursor VALUES (?, ?, ?) ON CONFLICT (trader_id, symbol) DO "
                    "UPDATE SET consolidated_us = MAX(consolidated_us, excluded.consolidated_us)",
                    (trader_id, symbol, until_us),
                )
        except sqlite3.Error as exc:
            raise StoreError(f"working-memory state: consolidation failed: {exc}") from None

    def load_equity(self) -> Iterator[tuple[AccountKey, int, float]]:
        """Every equity mark as ``((trader_id, symbol, timeframe), as_of_us, equity)``,
        oldest first per account."""
        rows = self._db.execute(
            "SELECT trader_id, symbol, timeframe, as_of_us, equity FROM account_equity "
            "ORDER BY trader_id, symbol, timeframe, as_of_us"
        )
        for trader_id, symbol, timeframe, us, equity in rows:
            yield (str(trader_id), str(symbol), str(timeframe)), int(us), float(equity)

    def put_equity(self, key: AccountKey, us: int, equity: float) -> None:
        """Insert (or replace, same time) one equity mark of the account ``key``."""
        self._write(
            "INSERT OR REPLACE INTO account_equity VALUES (?, ?, ?, ?, ?)", (*key, us, equity)
        )

    def drop_equity(self, key: AccountKey, *, before_us: int, from_us: int) -> None:
        """Delete the account's equity marks before ``before_us`` and at or after ``from_us``."""
        self._write(
            "DELETE FROM account_equity WHERE trader_id = ? AND symbol = ? AND timeframe = ? "
            "AND (as_of_us < ? OR as_of_us >= ?)",
            (*key, before_us, from_us),
        )

    def clear_equity(self, key: AccountKey) -> None:
        """Delete every equity mark of the account ``key`` (a new account)."""
        self._write(
            "DELETE FROM account_equity WHERE trader_id = ? AND symbol = ? AND timeframe = ?", key
        )

    def _write(self, sql: str, args: tuple[object, ...]) -> None:
        self._check()
        try:
            self._db.execute(sql, args)
        except sqlite3.Error as exc:
            raise StoreError(f"working-memory state: write failed: {exc}") from None

    def _transaction(self) -> _Tx:
        return _Tx(self._db)

    def close(self) -> None:
        self._db.close()


class _Tx:
    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db

    def __enter__(self) -> None:
        self._db.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        self._db.execute("ROLLBACK" if exc_type is not None else "COMMIT")

"""SQLite state of the scheduled jobs: fill cursors, job-run log, paper-trading runs.

Tables: ``cursor`` (key -> text value), ``job_run`` (one row per job run: id, time, ok,
JSON summary), and per paper run ``paper_run`` (the :class:`PaperState` JSON),
``paper_candle`` (closed candles fetched, by open time in ms), ``paper_decision`` (the
:class:`DecisionRecord` JSON per bar close), ``paper_fill`` / ``paper_trade`` (broker
fills and closed trades, in order) and ``paper_equity`` (equity and exposure marked at
each bar close). Everything one paper step produced is written in ONE transaction, so a
restart resumes either before or after a step, never in the middle of one. WAL journal;
the connection is shared by the jobs of one process (serialised by a lock).
"""

from __future__ import annotations

import hashlib
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path

import filelock
import pandas as pd
from pydantic import TypeAdapter

from backend.backtest import BrokerFill
from backend.backtest.models import DecisionRecord, TradeRecord
from backend.errors import StoreError
from backend.service.models import PaperState

__all__ = ["ServiceDB"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS cursor (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS job_run (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, job_id TEXT NOT NULL, ran_at TEXT NOT NULL,
    ok INTEGER NOT NULL, summary TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS paper_run (run_id TEXT PRIMARY KEY, state TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS paper_candle (
    run_id TEXT NOT NULL, open_ms INTEGER NOT NULL, open REAL NOT NULL, high REAL NOT NULL,
    low REAL NOT NULL, close REAL NOT NULL, volume REAL NOT NULL,
    PRIMARY KEY (run_id, open_ms)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS paper_decision (
    run_id TEXT NOT NULL, as_of_ms INTEGER NOT NULL, body TEXT NOT NULL,
    PRIMARY KEY (run_id, as_of_ms)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS paper_fill (
    run_id TEXT NOT NULL, seq INTEGER NOT NULL, body TEXT NOT NULL,
    PRIMARY KEY (run_id, seq)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS paper_trade (
    run_id TEXT NOT NULL, seq INTEGER NOT NULL, body TEXT NOT NULL,
    PRIMARY KEY (run_id, seq)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS paper_equity (
    run_id TEXT NOT NULL, as_of_ms INTEGER NOT NULL, equity REAL NOT NULL,
    exposure REAL NOT NULL, PRIMARY KEY (run_id, as_of_ms)) WITHOUT ROWID;
"""
JOB_LOCK_TIMEOUT_S = 900.0
"""Longest wait for :meth:`ServiceDB.job_lock` (a paper step with the LLM policy may
take minutes when it catches up many bars)."""
_FILL = TypeAdapter(BrokerFill)
_COLUMNS = ["open", "high", "low", "close", "volume"]


def _ms(moment: datetime) -> int:
    return int(pd.Timestamp(moment).value // 1_000_000)


class ServiceDB:
    """The jobs' SQLite file (``scheduler.state_path``); see the module doc."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._lock = threading.RLock()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(
                str(self.path), isolation_level=None, check_same_thread=False
            )
            self._db.execute("PRAGMA busy_timeout=10000")  # first: another process may hold it
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.executescript(_SCHEMA)
        except (sqlite3.Error, OSError) as exc:
            raise StoreError(f"service state {self.path}: {exc}") from None
        self._job_locks: dict[str, filelock.FileLock] = {}

    @contextmanager
    def job_lock(self, job_id: str) -> Iterator[None]:
        """Held by job ``job_id``'s work across processes sharing this file (``filelock``,
        one file per job beside it; re-entrant in one thread): two processes never step
        one paper run at once (the second then reads the first's saved state and has
        nothing left to decide), nor run one refresh at once; other jobs do not wait.
        Raises :class:`StoreError` after :data:`JOB_LOCK_TIMEOUT_S` seconds of waiting."""
        with self._lock:
            lock = self._job_locks.get(job_id)
            if lock is None:
                name = hashlib.sha256(job_id.encode()).hexdigest()[:16]
                lock = self._job_locks[job_id] = filelock.FileLock(
                    f"{self.path}.job-{name}.lock", timeout=JOB_LOCK_TIMEOUT_S
                )
        try:
            lock.acquire()
        except filelock.Timeout:
            raise StoreError(
                f"{lock.lock_file}: another process has run job {job_id} for "
                f"{JOB_LOCK_TIMEOUT_S:.0f} s"
            ) from None
        except OSError as exc:  # a state directory that became read-only
            raise StoreError(
                f"{lock.lock_file}: cannot take the lock of job {job_id}: {exc.strerror or exc}"
            ) from None
        try:
            yield
        finally:
            lock.release()

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
                try:
                    yield self._db
                except BaseException:
                    self._db.execute("ROLLBACK")
                    raise
                self._db.execute("COMMIT")
            except sqlite3.Error as exc:
                raise StoreError(f"service state {self.path}: {exc}") from None

    def _rows(self, sql: str, args: Sequence[object] = ()) -> list[tuple[object, ...]]:
        with self._lock:
            try:
                return list(self._db.execute(sql, tuple(args)))
            except sqlite3.Error as exc:
                raise StoreError(f"service state {self.path}: {exc}") from None

    # ------------------------------------------------------------------ cursors

    def cursor(self, key: str) -> str | None:
        rows = self._rows("SELECT value FROM cursor WHERE key = ?", (key,))
        return str(rows[0][0]) if rows else None

    def set_cursor(self, key: str, value: str) -> None:
        with self._tx() as db:
            db.execute("INSERT OR REPLACE INTO cursor VALUES (?, ?)", (key, value))

    def log_run(self, job_id: str, ran_at: datetime, *, ok: bool, summary: str) -> None:
        """Append one job run (its clock time, success, JSON summary)."""
        with self._tx() as db:
            db.execute(
                "INSERT INTO job_run (job_id, ran_at, ok, summary) VALUES (?, ?, ?, ?)",
                (job_id, ran_at.isoformat(), int(ok), summary),
            )

    def runs(self, job_id: str | None = None) -> list[tuple[str, str, bool, str]]:
        """Logged runs ``(job_id, ran_at, ok, summary)``, oldest first."""
        sql = "SELECT job_id, ran_at, ok, summary FROM job_run"
        rows = (
            self._rows(sql + " WHERE job_id = ? ORDER BY seq", (job_id,))
            if job_id
            else (self._rows(sql + " ORDER BY seq"))
        )
        return [(str(j), str(t), bool(ok), str(s)) for j, t, ok, s in rows]

    # ------------------------------------------------------------------ paper

    def paper_states(self) -> list[PaperState]:
        """Every paper run's state (for the jobs that must respect open positions)."""
        rows = self._rows("SELECT state FROM paper_run ORDER BY run_id")
        return [PaperState.model_validate_json(str(r[0])) for r in rows]

    def paper_state(self, run_id: str) -> PaperState | None:
        rows = self._rows("SELECT state FROM paper_run WHERE run_id = ?", (run_id,))
        return PaperState.model_validate_json(str(rows[0][0])) if rows else None

    def add_candles(self, run_id: str, frame: pd.DataFrame) -> int:
        """Store closed candles (UTC open-time index, OHLCV columns); a candle already
        stored is kept as it was (what earlier decisions saw). Returns how many were new."""
        if frame.empty:
            return 0
        opens = pd.DatetimeIndex(frame.index).as_unit("ms").asi8.tolist()
        values = frame[_COLUMNS].to_numpy(dtype=float).tolist()
        with self._tx() as db:
            before = db.total_changes
            db.executemany(
                "INSERT OR IGNORE INTO paper_candle VALUES (?, ?, ?, ?, ?, ?, ?)",
                [(run_id, o, *v) for o, v in zip(opens, values, strict=True)],
            )
            return int(db.total_changes - before)

    def candles(self, run_id: str) -> pd.DataFrame:
        """The stored candles, the canonical OHLCV frame (UTC open-time index ``date``)."""
        rows = self._rows(
            "SELECT open_ms, open, high, low, close, volume FROM paper_candle "
            "WHERE run_id = ? ORDER BY open_ms",
            (run_id,),
        )
        frame = pd.DataFrame(rows, columns=["date", *_COLUMNS])
        index = pd.DatetimeIndex(pd.to_datetime(frame["date"].astype("int64"), unit="ms", utc=True))
        out = frame[_COLUMNS].astype("float64")
        out.index = index.rename("date").as_unit("ns")
        return out

    def save_step(
        self,
        state: PaperState,
        *,
        records: Sequence[DecisionRecord],
        fills: Sequence[BrokerFill],
        trades: Sequence[TradeRecord],
        marks: Sequence[tuple[datetime, float, float]],
    ) -> None:
        """One transaction: the new state, the decisions, fills, trades and equity marks
        ``(bar close, equity, exposure)`` of one step."""
        run = state.run_id
        with self._tx() as db:
            (n_fills,) = db.execute(
                "SELECT COUNT(*) FROM paper_fill WHERE run_id = ?", (run,)
            ).fetchone()
            (n_trades,) = db.execute(
                "SELECT COUNT(*) FROM paper_trade WHERE run_id = ?", (run,)
            ).fetchone()
            db.executemany(
                "INSERT OR REPLACE INTO paper_decision VALUES (?, ?, ?)",
                [(run, _ms(r.as_of), r.model_dump_json()) for r in records],
            )
            db.executemany(
                "INSERT INTO paper_fill VALUES (?, ?, ?)",
                [(run, n_fills + i, _FILL.dump_json(f).decode()) for i, f in enumerate(fills)],
            )
            db.executemany(
                "INSERT INTO paper_trade VALUES (?, ?, ?)",
                [(run, n_trades + i, t.model_dump_json()) for i, t in enumerate(trades)],
            )
            db.executemany(
                "INSERT OR REPLACE INTO paper_equity VALUES (?, ?, ?, ?)",
                [(run, _ms(t), e, x) for t, e, x in marks],
            )
            db.execute(
                "INSERT OR REPLACE INTO paper_run VALUES (?, ?)", (run, state.model_dump_json())
            )

    def decisions(self, run_id: str) -> list[DecisionRecord]:
        rows = self._rows(
            "SELECT body FROM paper_decision WHERE run_id = ? ORDER BY as_of_ms", (run_id,)
        )
        return [DecisionRecord.model_validate_json(str(r[0])) for r in rows]

    def fills(self, run_id: str) -> list[BrokerFill]:
        rows = self._rows("SELECT body FROM paper_fill WHERE run_id = ? ORDER BY seq", (run_id,))
        return [_FILL.validate_json(str(r[0])) for r in rows]

    def trades(self, run_id: str) -> list[TradeRecord]:
        rows = self._rows("SELECT body FROM paper_trade WHERE run_id = ? ORDER BY seq", (run_id,))
        return [TradeRecord.model_validate_json(str(r[0])) for r in rows]

    def equity(self, run_id: str) -> pd.DataFrame:
        """``equity`` and ``exposure`` marked at each bar close (UTC index ``time``)."""
        rows = self._rows(
            "SELECT as_of_ms, equity, exposure FROM paper_equity WHERE run_id = ? "
            "ORDER BY as_of_ms",
            (run_id,),
        )
        frame = pd.DataFrame(rows, columns=["time", "equity", "exposure"])
        frame.index = pd.DatetimeIndex(
            pd.to_datetime(frame.pop("time").astype("int64"), unit="ms", utc=True), name="time"
        )
        return frame

    def close(self) -> None:
        with self._lock:
            self._db.close()

"""The agent's account in working memory: equity marks and their high-water mark.

Per account, i.e. per decision loop (trader, symbol, timeframe: two paper runs of one
pair at 1h and 4h keep two accounts), the agent's equity at each bar close it observed
(quote currency). Marks are kept for twice ``lookback_days`` back from the newest one, so
a read of the past or a replayed bar within one lookback of the newest mark sees every
mark its own lookback needs. They are persisted beside the working-memory windows
(:class:`~backend.memory._window_db.WindowDB`, table ``account_equity``), so a paper
trader restarted from its saved state keeps its high-water mark. An account's history
begins at the first bar of a new decision loop (:meth:`EquityMarks.reset`; a loop
restored from its saved state continues it), so two backtests on one store are two
accounts. What the RulePolicy's drawdown rule reads (:mod:`backend.agents._rules`).

Time: a mark at or before the newest one rewrites the account's history from that time
on (a replayed bar), and a read at ``as_of`` sees only marks at or before it.

Cost: one SQLite upsert per bar (WAL, no fsync; a range delete when marks leave the
kept span); the peak at the newest mark is the head of a monotonic deque (O(1) amortised
per mark); a read at an earlier ``as_of`` scans the marks (at most 2 x lookback / bar:
4,380 at 4h and 365 days).
"""

from __future__ import annotations

import threading
from collections import deque
from datetime import datetime, timedelta

from backend.errors import DataError
from backend.memory._window_db import AccountKey, WindowDB, datetime_us
from backend.memory.models import AccountState
from backend.types import EPOCH, to_utc

__all__ = ["EquityMarks"]

_Mark = tuple[int, float]
"""``(as_of in epoch microseconds, equity)``."""


def _time(us: int) -> datetime:
    return EPOCH + timedelta(microseconds=us)  # exact (no float seconds)


class _Account:
    """The marks of one account, oldest first, with a decreasing deque of the
    candidates for the maximum (Lemire's streaming maximum)."""

    def __init__(self) -> None:
        self.marks: deque[_Mark] = deque()
        self.top: deque[_Mark] = deque()

    def append(self, mark: _Mark) -> None:
        self.marks.append(mark)
        while self.top and self.top[-1][1] <= mark[1]:
            self.top.pop()
        self.top.append(mark)

    def drop_before(self, us: int, *, peak_from: int) -> None:
        """Forget the marks before ``us``; the maximum's candidates before ``peak_from``."""
        while self.marks and self.marks[0][0] < us:
            self.marks.popleft()
        while self.top and self.top[0][0] < peak_from:
            self.top.popleft()

    def drop_from(self, us: int) -> None:
        """Forget the marks at or after ``us`` (rare: a replay); rebuilds the deque."""
        kept = [m for m in self.marks if m[0] < us]
        self.marks.clear()
        self.top.clear()
        for mark in kept:
            self.append(mark)


class EquityMarks:
    """Equity marks of every account (:data:`AccountKey`). Thread-safe; it shares the windows'
    SQLite connection, so :class:`~backend.memory.working.WorkingMemory` calls it under
    its own lock (an equity write never lands inside a consolidation's transaction)."""

    def __init__(self, db: WindowDB, *, lookback_days: float) -> None:
        self._db = db
        self._lookback_us = int(lookback_days * 86_400 * 1_000_000)
        self._lock = threading.Lock()
        self._accounts: dict[AccountKey, _Account] = {}
        self.reload()

    def reload(self) -> None:
        """Read every account's marks from the file again (another process wrote it)."""
        accounts: dict[AccountKey, _Account] = {}
        for key, us, equity in self._db.load_equity():
            accounts.setdefault(key, _Account()).append((us, equity))
        for account in accounts.values():  # the lookback may have changed
            newest = account.marks[-1][0]
            account.drop_before(
                newest - 2 * self._lookback_us, peak_from=newest - self._lookback_us
            )
        with self._lock:
            self._accounts = accounts

    def reset(self, key: AccountKey) -> None:
        """Forget the account's marks: a new account begins (a new decision loop)."""
        with self._lock:
            self._accounts.pop(key, None)
            self._db.clear_equity(key)

    def observe(self, key: AccountKey, *, as_of: datetime, equity: float) -> None:
        """Record the account's ``equity`` (quote currency, > 0) at the close ``as_of``.
        Raises :class:`DataError` (field ``equity``) for a non-positive or NaN equity."""
        if not equity > 0:
            raise DataError(f"equity must be positive, got {equity}", field="equity")
        us = datetime_us(to_utc(as_of))
        with self._lock:
            account = self._accounts.setdefault(key, _Account())
            cutoff = us - 2 * self._lookback_us  # the marks kept (module doc)
            stale = bool(account.marks) and (
                account.marks[-1][0] >= us or account.marks[0][0] < cutoff
            )
            if account.marks and account.marks[-1][0] >= us:
                account.drop_from(us)  # a replayed bar rewrites the history from it on
            account.append((us, float(equity)))
            account.drop_before(cutoff, peak_from=us - self._lookback_us)
            if stale:
                self._db.drop_equity(key, before_us=cutoff, from_us=us)
            self._db.put_equity(key, us, float(equity))

    def account(self, key: AccountKey, *, as_of: datetime) -> AccountState | None:
        """The account at ``as_of`` (its newest mark at or before it, and the high-water
        mark of the lookback before that); None before the first mark."""
        us = datetime_us(to_utc(as_of))
        with self._lock:
            account = self._accounts.get(key)
            if account is None or not account.marks or account.marks[0][0] > us:
                return None
            if account.marks[-1][0] <= us:
                (at, equity), (peak_us, peak) = account.marks[-1], account.top[0]
            else:  # a read of the past: only the marks known then
                known = [m for m in account.marks if m[0] <= us]
                at, equity = known[-1]
                window = [m for m in known if m[0] >= at - self._lookback_us]
                peak_us, peak = max(window, key=lambda m: (m[1], m[0]))  # newest of ties
        trader_id, symbol, timeframe = key
        return AccountState(
            trader_id=trader_id,
            symbol=symbol,
            timeframe=timeframe,
            as_of=_time(at),
            equity=equity,
            peak=peak,
            peak_at=_time(peak_us),
            drawdown=min(0.0, equity / peak - 1.0),
        )

"""The outcomes a :class:`~backend.agents._memory_writer.MemoryWriter` writes: scheduled,
resolved and queued by its :class:`OutcomeBook` (written at the writer's flushes).

- **outcomes** (reflection, :meth:`EpisodicMemory.record_outcomes`) are scheduled at
  ``horizon`` bars of wall-clock time after a recorded decision or a detected event and
  queued at the first bar closing at or after that time: ``market_return`` = close at
  the horizon / close at the episode - 1 (features); for a buy/sell decision ``pnl`` is
  the realised PnL of the trades it opened that closed within the horizon (summed), else
  an estimated mark-to-market PnL = signed exposure x equity at the decision x market
  return (quote currency, before fees); ``close`` decisions and events get no PnL;
- **closed trades** (:meth:`MemoryWriter.trade_closed`, from the engine's
  ``on_trade_closed``): a trade is a position, as ``BacktestMetrics.n_trades`` counts
  it: its rows (one per reduction, sharing the opening decision, side and entry time)
  wait for the row that closes it (``closes_position``). A position that closes within
  its opening decision's horizon is folded into that horizon outcome (one outcome, no
  double reflection); one that closes later adds one outcome of its own, horizon
  ``"trade"`` (market return = the rows' quantity-weighted exit / entry price - 1, PnL
  their sum), at the next bar (docs/benchmarks.md, seventeenth session: each reduction
  had been an outcome of its own). At the end of a run (:meth:`OutcomeBook.queue_all`)
  positions whose decision's horizon has not passed, and the reductions of a position
  still open, are queued as one ``"trade"`` outcome each.
"""

from __future__ import annotations

import bisect
from datetime import datetime, timedelta

from backend.agents._writer_state import (
    DueOutcome,
    WriterState,
    closed_positions,
    position_result,
    positions,
)
from backend.backtest.models import TradeRecord
from backend.memory import FeatureFrame
from backend.memory.models import Episode, Outcome

__all__ = ["OutcomeBook", "horizon_label"]


def horizon_label(seconds: float) -> str:
    """``86400`` -> ``"1d"``, ``86400 + 3600`` -> ``"25h"``, ``900`` -> ``"15m"``."""
    s = round(seconds)
    if s % 86_400 == 0:
        return f"{s // 86_400}d"
    if s % 3_600 == 0:
        return f"{s // 3_600}h"
    return f"{max(1, s // 60)}m"


class OutcomeBook:
    """The outcomes of one writer (module doc): ``due`` (scheduled, by due time),
    ``trades`` (closed-trade rows waiting for their position to close), ``absorbed``
    (positions folded into their decision's horizon outcome, by decision episode id)
    and ``queued`` (resolved, to be written: ``(episode id, outcome)``).

    ``span``: the horizon's wall-clock time; ``horizon``: its label (``"1d"``)."""

    def __init__(self, features: FeatureFrame, *, horizon: timedelta) -> None:
        self.features = features
        self.span = horizon
        self.horizon = horizon_label(horizon.total_seconds())
        self.due: list[DueOutcome] = []
        self.trades: list[TradeRecord] = []
        self.absorbed: dict[str, list[TradeRecord]] = {}
        self.queued: list[tuple[str, Outcome]] = []
        self._close = features.column("close")

    def saved(self, state: WriterState) -> WriterState:
        """``state`` (a writer's, without its outcomes) with this book's outcomes."""
        return state.model_copy(
            update={
                "due": list(self.due),
                "queued": list(self.queued),
                "trades": list(self.trades),
                "absorbed": {k: list(v) for k, v in self.absorbed.items()},
            }
        )

    def restore(self, state: WriterState) -> None:
        """Continue from the outcomes of a writer's saved ``state``."""
        self.due = list(state.due)
        self.queued = list(state.queued)
        self.trades = list(state.trades)
        self.absorbed = {k: list(v) for k, v in state.absorbed.items()}

    def _close_at(self, moment: datetime) -> float | None:
        i = self.features.locate(moment)
        return float(self._close[i]) if i >= 0 else None

    def schedule(self, episode: Episode, exposure: float | None, equity: float) -> None:
        """Schedule the horizon outcome of ``episode``; ``exposure``: the signed exposure
        its decision targeted (None: no PnL; an event, a ``close``), ``equity`` then
        (quote currency). Nothing when the features have no close at the episode."""
        start = self._close_at(episode.occurred_at)
        if start is None or start <= 0:
            return
        item = DueOutcome(
            due=episode.occurred_at + self.span,
            episode_id=episode.id,
            start_close=start,
            exposure=exposure,
            equity=equity,
        )
        bisect.insort(self.due, item, key=lambda d: (d.due, d.episode_id))

    def queue_due(self, as_of: datetime, *, trades: bool) -> None:
        """Queue the outcomes due at ``as_of``; with ``trades``, first fold the positions
        closed by ``as_of`` into their decision's waiting outcome and queue the others'
        ``"trade"`` outcomes."""
        own = self._absorb(as_of) if trades else []
        while self.due and self.due[0].due <= as_of:
            item = self.due.pop(0)
            end = self._close_at(item.due)
            if end is None:
                continue
            ret = end / item.start_close - 1.0
            pnl = None
            if item.exposure is not None:
                closed = self.absorbed.pop(item.episode_id, None)
                pnl = sum(t.pnl for t in closed) if closed else item.exposure * item.equity * ret
            # an event's outcome is known at its due time (the close it reads is at or
            # before it), and stamped so: a step run again after a crash (paper trading's
            # first step, whose warm start writes, then decides a newer bar) logs the same
            # outcome, which the store skips; a decision's PnL can fold in trades closed
            # by ``as_of``, so it is known from ``as_of``
            resolved = item.due if item.exposure is None else as_of
            self._outcome(item.episode_id, self.horizon, ret, pnl, resolved)
        for rows in own:
            if (decision := rows[0].entry_decision) is not None:
                self._outcome(decision, "trade", *position_result(rows), as_of)

    def queue_all(self, as_of: datetime) -> datetime:
        """The end of a run: queue every outcome due at ``as_of`` and the realised PnL of
        every waiting position (as of its exit if that is later); returns the latest
        resolution time queued (at least ``as_of``)."""
        self.queue_due(as_of, trades=True)
        for decision_id, trades in sorted(self.absorbed.items()):  # horizon not reached
            moment = max(as_of, max(t.exit_time for t in trades))
            self._outcome(decision_id, "trade", *position_result(trades), moment)
        self.absorbed.clear()
        for rows in positions(self.trades):  # closed after the last bar, or still open
            if (decision := rows[0].entry_decision) is not None:
                moment = max(as_of, max(t.exit_time for t in rows))
                self._outcome(decision, "trade", *position_result(rows), moment)
        self.trades = []
        return max([as_of, *(o.resolved_at for _, o in self.queued)])

    def _absorb(self, as_of: datetime) -> list[list[TradeRecord]]:
        """Move the positions closed by ``as_of`` whose opening decision still waits for
        its horizon outcome into that outcome (their PnL replaces the estimate); returns
        the others' rows, one list per position, to be written as ``"trade"`` outcomes."""
        waiting = {d.episode_id for d in self.due if d.exposure is not None}
        ready, self.trades = closed_positions(self.trades, as_of)
        own = []
        for rows in ready:
            decision = rows[0].entry_decision
            if decision in waiting and decision is not None:
                self.absorbed.setdefault(decision, []).extend(rows)
            else:
                own.append(rows)
        return own

    def _outcome(
        self, episode_id: str, horizon: str, ret: float, pnl: float | None, as_of: datetime
    ) -> None:
        """Queue one outcome resolved at ``as_of`` (written at the next flush)."""
        outcome = Outcome(
            horizon=horizon,
            market_return=ret,
            pnl=None if pnl is None else round(pnl, 6),
            resolved_at=as_of,
        )
        self.queued.append((episode_id, outcome))

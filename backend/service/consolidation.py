"""Scheduled memory maintenance: consolidation, importance decay, pruning, outcome resolution.

:func:`consolidate_trader` (job ``consolidation``), for one trader as of ``as_of``:

1. working-memory overflow (windows longer than ``memory.working_window``, left by a
   failed consolidation) becomes ``context`` episodes
   (:meth:`WorkingMemory.consolidate_overflow`, done once for every trader);
2. importance decays with age (:meth:`EpisodicMemory.decay_by_age`, half-life
   ``scheduler.decay_half_life_days``, in whole days since the last decay, so repeated
   runs add up to the same decay and a repeated run at the same time does nothing);
3. episodes whose importance is below ``scheduler.prune_below`` and that occurred more
   than ``scheduler.prune_after_days`` before ``as_of`` are deleted, EXCEPT the ones a
   paper run still needs (:func:`protected_ids`: the decision that opened an open
   position, the pending order's decision, episodes waiting for their outcome) and the
   memories those decisions were taken with (their ``memory_ids``), and, for a trader
   with a replay paper run whose clock is behind ``as_of``, the episodes that occurred
   by that clock (the replay reads them; a delete hides an episode at every time, so
   its decisions would depend on when the job ran: :func:`replay_clock`). A replay run's
   state is kept after it stops: remove its run (or give replays their own store) to
   prune those again.

:func:`resolve_outcomes` (job ``outcomes``): every ``decision`` episode of the trader
without an outcome as of ``as_of`` whose horizon (the decision loop's own,
``Episode.outcome_horizon_s``: 4 days for a 4h loop; else ``agent.outcome_horizon_bars``
bars of its price series) has passed gets its outcome, labelled as the loop labels it:
``market_return`` = close at the horizon / close at the decision - 1 (the last closes at
or before those times), ``pnl`` None
(the equity behind it is not known here). Decisions a paper run will resolve itself
are left to it; a decision that already has an outcome is skipped, so the job is
idempotent across restarts. Prices come from the paper runs' stored candles of the
symbol, else from the ``data.market_dir`` file of the symbol at ``1h``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import datetime, timedelta

import pandas as pd

from backend.agents import horizon_label
from backend.backtest.engine import bar_close_times
from backend.compose import MemorySystem
from backend.config import SchedulerSettings
from backend.data import find_ohlcv_file, read_ohlcv_file, timeframe_seconds
from backend.errors import DataError
from backend.service._db import ServiceDB
from backend.service.models import ConsolidationResult, OutcomeResolution, PaperState
from backend.types import to_utc

__all__ = [
    "PriceSeries",
    "consolidate_trader",
    "price_source",
    "protected_ids",
    "replay_clock",
    "resolve_outcomes",
]

PriceSeries = tuple[pd.Series, int]
"""Closes (quote currency) indexed by bar CLOSE time (UTC), and the bar length in s."""


def protected_ids(states: Iterable[PaperState], trader_id: str) -> set[str]:
    """Episode ids the paper runs of ``trader_id`` still need: the decision that opened
    the open position, the pending order's decision, and every episode whose outcome
    (or closed trade) the run's memory writer has not written yet: due, worked out but
    queued for its next write, or waiting in its buffer (with the memories the buffered
    decisions were taken with)."""
    out: set[str] = set()
    for state in states:
        if state.trader_id != trader_id:
            continue
        if state.broker.entry_decision is not None:
            out.add(state.broker.entry_decision)
        if state.pending is not None and state.pending[1] is not None:
            out.add(state.pending[1])
        writer = state.manager.writer if state.manager is not None else None
        if writer is not None:
            out.update(d.episode_id for d in writer.due)
            out.update(episode_id for episode_id, _ in writer.queued)  # worked out, unsaved
            out.update(e.id for e in writer.buffer)
            # and what those buffered decisions were taken with: pruning reads the memory
            # ids of stored episodes only (a reviewer's: a faded episode behind the open
            # position's entry, unwritten for up to flush_every bars, was pruned)
            out.update(m for e in writer.buffer for m in e.memory_ids)
            out.update(writer.absorbed)
            out.update(t.entry_decision for t in writer.trades if t.entry_decision)
    return out


def replay_clock(states: Iterable[PaperState], trader_id: str) -> datetime | None:
    """The earliest clock (last step's time) of the replay paper runs of ``trader_id``,
    None without one."""
    clocks = [
        s.last_now
        for s in states
        if s.trader_id == trader_id and s.clock == "replay" and s.last_now is not None
    ]
    return min(clocks, default=None)


def consolidate_trader(
    system: MemorySystem,
    trader_id: str,
    *,
    as_of: datetime,
    settings: SchedulerSettings,
    protect: set[str],
    consolidated: int = 0,
    replay_clock: datetime | None = None,
) -> ConsolidationResult:
    """Steps 2-3 of the module doc for one trader (``consolidated``: the step-1 count to
    report; ``replay_clock``: the earliest clock of a replay run of the trader; when it is
    behind ``as_of`` the episodes that occurred by then are kept). Returns what was
    decayed and pruned."""
    moment = to_utc(as_of)
    behind = replay_clock if replay_clock is not None and replay_clock < moment else None
    decayed = system.episodic.decay_by_age(
        trader_id, as_of=moment, half_life_days=settings.decay_half_life_days
    )
    old = moment - timedelta(days=settings.prune_after_days)
    # read, decide and delete under the store's writer lock: an outcome another process
    # records meanwhile (raising an episode's importance) is seen before the delete, and
    # its write cannot land between them and bring a pruned episode back
    with system.store.writer_lock():
        episodes = system.episodic.scan(trader_id, as_of=moment)
        protect = protect | {m for e in episodes if e.id in protect for m in e.memory_ids}
        candidates = [
            e for e in episodes if e.importance < settings.prune_below and e.occurred_at < old
        ]
        # a replay run behind reads the episodes of its past (stored as of when they
        # occurred): those stay; a delete would hide them from it at every time
        prune = sorted(
            e.id
            for e in candidates
            if e.id not in protect and (behind is None or e.occurred_at > behind)
        )
        if prune:
            system.store.delete(trader_id, prune, as_of=moment)
    return ConsolidationResult(
        trader_id=trader_id,
        as_of=moment,
        consolidated=consolidated,
        decayed=decayed,
        pruned=prune,
        protected=len(candidates) - len(prune),
        replay_clock=behind,
    )


def price_source(db: ServiceDB, market_dir: str | None) -> Callable[[str], PriceSeries | None]:
    """Closes of a symbol: from a paper run of that pair (its stored candles), else from
    ``market_dir``'s ``1h`` file; None when neither has it. Cached per call of the job
    (one job, one consistent view): loading a pair's 1h file takes ~260 ms (BTC/USDT
    2020-2025, measured 2026-12-06), and a job looks a symbol up for every episode it
    scores."""
    cache: dict[str, PriceSeries | None] = {}
    runs = {s.pair: s for s in db.paper_states()}

    def lookup(symbol: str) -> PriceSeries | None:
        if symbol in cache:
            return cache[symbol]
        found: PriceSeries | None = None
        if symbol in runs:
            run = runs[symbol]
            frame = db.candles(run.run_id)
            tf = run.timeframe
        elif market_dir is not None:
            try:
                frame = read_ohlcv_file(
                    find_ohlcv_file(market_dir, symbol, "1h"), pair=symbol, timeframe="1h"
                ).frame
            except DataError:
                frame = pd.DataFrame()
            tf = "1h"
        else:
            frame = pd.DataFrame()
            tf = "1h"
        if len(frame):
            closes = pd.Series(
                frame["close"].to_numpy(dtype=float),
                index=bar_close_times(pd.DatetimeIndex(frame.index), tf),
            )
            found = (closes, timeframe_seconds(tf))
        cache[symbol] = found
        return found

    return lookup


def _close_at(closes: pd.Series, moment: datetime) -> float | None:
    i = int(closes.index.searchsorted(pd.Timestamp(moment), side="right")) - 1
    return float(closes.iloc[i]) if i >= 0 else None


def resolve_outcomes(
    system: MemorySystem,
    trader_id: str,
    *,
    as_of: datetime,
    prices: Callable[[str], PriceSeries | None],
    horizon_bars: int,
    skip: set[str],
) -> OutcomeResolution:
    """The outcome resolution of the module doc for one trader; returns what it did."""
    moment = to_utc(as_of)
    resolved: list[str] = []
    already = pending = 0
    for episode in system.episodic.scan(trader_id, as_of=moment, event_types=["decision"]):
        if episode.outcome is not None:
            already += 1
            continue
        series = prices(episode.symbol) if episode.id not in skip else None
        if series is None:
            pending += 1
            continue
        closes, step_s = series
        horizon = timedelta(seconds=episode.outcome_horizon_s or horizon_bars * step_s)
        due = episode.occurred_at + horizon
        start = _close_at(closes, episode.occurred_at)
        end = _close_at(closes, due)
        if due > moment or closes.index[-1] < due or start is None or end is None:
            pending += 1
            continue
        system.toolkit.record_outcome(
            trader_id,
            episode.id,
            horizon=horizon_label(horizon.total_seconds()),
            market_return=end / start - 1.0,
            pnl=None,
            as_of=moment,
        )
        resolved.append(episode.id)
    return OutcomeResolution(
        trader_id=trader_id, as_of=moment, resolved=resolved, already=already, pending=pending
    )

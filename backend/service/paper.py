"""Paper trading: the backtest's DeepTraderManager on live closed candles from ccxt.

One run is one (exchange, pair, timeframe, trader). Each :meth:`PaperTrader.step` at
clock time ``now`` (given by the caller: the scheduler reads the clock, this module
never does):

1. fetches the candles CLOSED by ``now`` that are not stored yet
   (:func:`backend.data.exchange.download_ohlcv` pages ``fetch_ohlcv``; the first step
   fetches ``paper.warmup_bars`` of history) and stores them;
2. recomputes the causal features (:func:`backend.memory.compute_features`) and detected
   episodes over every stored candle, builds a :class:`DeepTraderManager` on them and
   restores its state, the broker's and the pending order from the last step;
3. hands every new closed bar, oldest first, to the engine's
   :class:`~backend.backtest.engine.BarStepper` on a
   :class:`~backend.backtest._broker.SimBroker` with ``settings.backtest``'s capital, fee
   and slippage: the order decided at the close of bar t fills at the open of bar t+1,
   exactly as in a backtest (the first step decides on the newest closed bar only; after
   a downtime, the bars missed are decided in order, their orders filled at their
   historical next opens, so the run stays the one an uninterrupted loop would have made);
4. writes the new state, the decisions, fills, trades and equity marks in ONE SQLite
   transaction (:class:`~backend.service._db.ServiceDB`).

The manager's buffered memory writes (decision episodes, scheduled outcomes, queued
trades) are part of the saved state, so a process stopped between two steps and
restarted resumes exactly where it was: the decisions equal an uninterrupted run's.
Because features are causal and detected events only depend on candles up to their bar,
the decisions also equal a backtest's over the same candles (same manager code; only the
clock, the data feed and the broker's owner differ). A crash INSIDE a step redoes that
step: working memory and episode adds are idempotent, an outcome written by the crashed
step may be written again.

Clocks: ``live`` (the scheduler's wall clock) or ``replay`` (a simulated clock that
starts at ``replay_from`` and moves one bar per step: :func:`replay_now`); a run keeps
the clock it was started with.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from pathlib import Path
from typing import Literal

import ccxt
import pandas as pd

from backend.agents import DEFAULT_CONSTRAINTS_NOTE
from backend.agents.policies import Policy
from backend.backtest import SimBroker
from backend.backtest.engine import BarStepper, bar_close_times
from backend.backtest.metrics import LLMUsage, below_share, llm_usage, warmup_decisions
from backend.backtest.models import BrokerState
from backend.compose import MemorySystem, make_manager, make_policy
from backend.config import Settings
from backend.data import download_ohlcv, timeframe_seconds
from backend.errors import ConfigError
from backend.memory import NewsFiles, compute_features
from backend.service._db import ServiceDB
from backend.service.models import PaperState, PaperStepResult
from backend.types import to_utc

__all__ = [
    "IDLE_STEPS_WARNING",
    "PaperTrader",
    "paper_failure",
    "paper_run_id",
    "paper_step_seconds",
    "paper_warning",
    "replay_now",
]

log = logging.getLogger("backend.service")
Clock = Literal["live", "replay"]


IDLE_STEPS_WARNING = 2
"""Consecutive steps without a new closed candle from which a run says so (one can
happen when the exchange publishes a bar after ``paper.delay_s``)."""


def paper_warning(state: PaperState, *, min_answered_share: float) -> str | None:
    """The run's warnings so far on one line, or None: a chat model that answered less
    than ``min_answered_share`` of the decisions asked of it (:meth:`LLMUsage.warning`),
    a memory that failed at any decision, a ruined account, decisions that were holds
    while the features warmed up (a run below 1h with the default ``paper.warmup_bars``
    held for days, silently, a reviewer's), and a feed that gave no new closed candle for
    :data:`IDLE_STEPS_WARNING` steps or more. Said at every step while
    it holds (in the step's result, so in the scheduler's ``job_run`` log, and a WARNING
    log line) and in ``sentinel paper``'s summary: a dead dependency is never a quiet
    run."""
    usage = LLMUsage(state.llm_decisions, state.llm_answered, state.llm_first_error)
    found = [usage.warning(min_share=min_answered_share)]
    if state.memory_error_decisions:
        found.append(_memory_failed(state))
    if state.ruined:
        found.append(
            "the account was ruined: marked equity <= 0 at a close; the position is closed "
            "at the next bar's open and the agent decides no more"
        )
    if state.warmup_decisions:
        found.append(
            f"{state.warmup_decisions} of {state.bars} decisions were holds while the "
            "features warmed up (they need 30 days of candles): raise paper.warmup_bars "
            f"to cover 30 days of {state.timeframe} for a new run"
        )
    if state.idle_steps >= IDLE_STEPS_WARNING:
        newest = state.last_close.isoformat() if state.last_close else "none yet"
        found.append(
            f"the last {state.idle_steps} steps got no new closed candle of {state.pair} "
            f"{state.timeframe} from {state.exchange} (last bar decided: {newest})"
        )
    said = [w for w in found if w]
    return "; ".join(said) if said else None


def _memory_failed(state: PaperState) -> str:
    writes = (
        f" ({state.memory_writes_failed} of {state.memory_writes} writes)"
        if state.memory_writes_failed
        else ""
    )
    return (
        f"the memory failed at {state.memory_error_decisions} of {state.bars} decisions"
        f"{writes}; first error: {state.memory_first_error}"
    )


def paper_failure(state: PaperState, *, min_answered_share: float) -> str | None:
    """What of :func:`paper_warning` is a dependency's failure, or None: the LLM answered
    less than ``min_answered_share`` of its decisions, or the memory worked at less than
    that share of them or of its writes (as
    :func:`backend.backtest.metrics.dependency_failure` for a backtest). ``sentinel
    paper`` exits 3 on it when it stops."""
    usage = LLMUsage(state.llm_decisions, state.llm_answered, state.llm_first_error)
    found = [usage.warning(min_share=min_answered_share)]
    share = min_answered_share
    writes, failed = state.memory_writes, state.memory_writes_failed
    if below_share(state.bars - state.memory_error_decisions, state.bars, min_share=share) or (
        below_share(writes - failed, writes, min_share=share)
    ):
        found.append(_memory_failed(state))
    said = [w for w in found if w]
    return "; ".join(said) if said else None


def paper_step_seconds(timeframe: str) -> int:
    """The length in seconds of one step of a paper run on ``timeframe``. Raises
    :class:`ConfigError` for a calendar timeframe (``1M``, ``1y``: no fixed length) and
    :class:`~backend.errors.DataError` (field ``timeframe``) for one ccxt cannot parse."""
    if timeframe[-1:] in ("M", "y"):
        raise ConfigError(f"paper trading needs a fixed-length timeframe, got {timeframe!r}")
    return timeframe_seconds(timeframe)


def paper_run_id(exchange_id: str, pair: str, timeframe: str, trader_id: str) -> str:
    """``binance:BTC/USDT:1h:agent``."""
    return f"{exchange_id}:{pair}:{timeframe}:{trader_id}"


def replay_now(state: PaperState | None, *, start: datetime, timeframe: str) -> datetime:
    """The simulated clock of a replay run: ``start`` at the first step, then one
    timeframe after the previous step's time (so every step sees exactly one new bar,
    and a restarted run continues from its saved clock).

    Raises :class:`ConfigError` when the saved run started its replay elsewhere: a
    resume asking for another start went on from the saved clock without a word."""
    start = to_utc(start)
    if state is not None and state.replay_from is not None and state.replay_from != start:
        raise ConfigError(
            f"paper run {state.run_id} replays from {state.replay_from.isoformat()}, not "
            f"{start.isoformat()}: resume it with that --replay-from, or use another store"
        )
    if state is None or state.last_now is None:
        return to_utc(start)
    return state.last_now + timedelta(seconds=timeframe_seconds(timeframe))


class PaperTrader:
    """One paper run (module doc). ``system``: the memory (None = memory off, as
    ``agent.memory: false``); ``data_root``: where headlines and Fear & Greed are read
    (``news/``, ``trades/``; None = none); ``policy``: default ``agent.policy``.
    Not thread-safe: the scheduler runs it with ``max_instances=1``."""

    def __init__(
        self,
        settings: Settings,
        *,
        exchange: ccxt.Exchange,
        exchange_id: str,
        pair: str,
        timeframe: str,
        db: ServiceDB,
        system: MemorySystem | None,
        clock: Clock,
        data_root: Path | None = None,
        policy: Policy | None = None,
    ) -> None:
        self.step_s = paper_step_seconds(timeframe)
        self.settings = settings
        self.exchange = exchange
        self.pair = pair
        self.timeframe = timeframe
        self.db = db
        self.agent = settings.agent
        self.system = system if settings.agent.memory else None
        self.clock = clock
        self.policy = policy or make_policy(settings, settings.agent.policy)
        self.news = NewsFiles(settings.data, data_root)  # read again when a file changes
        self.run_id = paper_run_id(exchange_id, pair, timeframe, self.agent.trader_id)
        self.exchange_id = exchange_id

    def state(self) -> PaperState | None:
        """The saved state (None before the first step)."""
        return self.db.paper_state(self.run_id)

    def _initial(self, replay_from: datetime | None) -> PaperState:
        return PaperState(
            run_id=self.run_id,
            exchange=self.exchange_id,
            pair=self.pair,
            timeframe=self.timeframe,
            trader_id=self.agent.trader_id,
            clock=self.clock,
            replay_from=replay_from,
            broker=BrokerState(cash=self.settings.backtest.initial_equity),
        )

    def _fetch(self, now: datetime) -> int:
        stored = self.db.candles(self.run_id)
        step = timedelta(seconds=self.step_s)
        if len(stored):
            since = stored.index[-1].to_pydatetime() + step
        else:  # from a bar boundary: warmup_bars whole candles, not one less mid-bar
            opened = now - timedelta(seconds=now.timestamp() % self.step_s)
            since = opened - step * self.settings.paper.warmup_bars
        candles = download_ohlcv(self.exchange, self.pair, self.timeframe, since=since, until=now)
        return self.db.add_candles(self.run_id, candles)

    def _broker(self, state: BrokerState) -> SimBroker:
        cost = self.settings.backtest
        broker = SimBroker(
            symbol=self.pair,
            initial_cash=cost.initial_equity,
            fee_rate=cost.fee_rate,
            slippage=cost.slippage,
        )
        broker.restore(state)
        return broker

    def _seed_note(self, state: PaperState, first_close: datetime, now: datetime) -> str | None:
        """The default constraints note a new run records as of its first bar's close,
        unless the trader's persona was written after that close and by ``now``: a persona
        refresh ran in between (at a service's start every job is due at once), and a note
        as of the earlier close would write into the persona's past (the step failed with
        a look-ahead error and the run started a bar late). The seed is the default of a
        trader without a persona, as when a refresh ran before the close; here the first
        bar decides with the persona known at its close (none), the next ones with the
        refreshed one. A persona written after ``now`` keeps the seed, and its error. A
        refresh that commits between this check and the seed's write (the first bar's
        decision, milliseconds later) still fails that step; the next step sees it."""
        if state.manager is not None or self.system is None:
            return DEFAULT_CONSTRAINTS_NOTE
        written = self.system.persona.written_until(self.agent.trader_id)
        if written is not None and first_close < written <= now:
            return None
        return DEFAULT_CONSTRAINTS_NOTE

    def step(self, now: datetime, *, replay_from: datetime | None = None) -> PaperStepResult:
        """Run one step at clock time ``now`` (module doc); ``replay_from``: where a
        replay run's clock started, kept with a new run (:func:`replay_now` refuses
        another). Raises :class:`~backend.errors.ExchangeError` when the exchange fails
        (nothing is written then but the candles already fetched), :class:`ConfigError`
        when the saved run used another clock."""
        now = to_utc(now)
        replay_from = to_utc(replay_from) if replay_from is not None else None
        state = self.state() or self._initial(replay_from)
        if state.clock != self.clock:
            raise ConfigError(
                f"paper run {self.run_id} was started with the {state.clock} clock, "
                f"not {self.clock}: use another store, or the same clock"
            )
        fetched = self._fetch(now)
        frame = self.db.candles(self.run_id)
        closes = list(bar_close_times(pd.DatetimeIndex(frame.index), self.timeframe))
        if state.last_close is None:
            todo = [len(frame) - 1] if len(frame) else []
        else:
            todo = [i for i, c in enumerate(closes) if c > state.last_close]
        state = state.model_copy(update={"last_now": now, "steps": state.steps + 1})
        if not todo:
            state = state.model_copy(update={"idle_steps": state.idle_steps + 1})
            self.db.save_step(state, records=[], fills=[], trades=[], marks=[])
            warning = paper_warning(state, min_answered_share=self.settings.llm.min_answered_share)
            if warning is not None:
                log.warning("paper %s: %s", self.run_id, warning)
            failure = paper_failure(state, min_answered_share=self.settings.llm.min_answered_share)
            return PaperStepResult(
                run_id=self.run_id, now=now, fetched=fetched, warning=warning, failure=failure
            )
        features = compute_features(
            frame,
            symbol=self.pair,
            timeframe=self.timeframe,
            breakout_lookback_bars=self.settings.memory.detectors.breakout_lookback_bars,
        )
        manager = make_manager(
            self.settings,
            features=features,
            news=self.news.current(),
            system=self.system,
            policy=self.policy,
            seed_note=self._seed_note(state, closes[todo[0]].to_pydatetime(), now),
        )
        if state.manager is not None:
            manager.restore_state(state.manager)
        stepper = BarStepper(
            maker=manager,
            broker=self._broker(state.broker),
            trader_id=self.agent.trader_id,
            symbol=self.pair,
            timeframe=self.timeframe,
            min_trade_fraction=self.settings.backtest.min_trade_fraction,
            pending=state.pending,
            ruined=state.ruined,
        )
        values = frame[["open", "high", "low", "close", "volume"]].to_numpy(dtype=float)
        records, marks, decided = [], [], []
        for i in todo:
            o, h, lo, c, v = (float(x) for x in values[i])
            close_time = closes[i].to_pydatetime()
            out = stepper.step(
                index=i,
                open_time=frame.index[i].to_pydatetime(),
                close_time=close_time,
                bar=(o, h, lo, c, v),
                has_next=True,
            )
            marks.append((close_time, out.equity, out.exposure))
            if out.record is not None:
                records.append(out.record)
                decided.append((close_time, out.record.decision.action, out.record.decision.size))
        broker = stepper.broker
        asked = llm_usage(records)
        usage = LLMUsage(state.llm_decisions, state.llm_answered, state.llm_first_error).merge(
            asked
        )
        failed = [r.memory_errors[0] for r in records if r.memory_errors]
        counted = manager.stats()
        state = state.model_copy(
            update={
                "llm_decisions": usage.asked,
                "llm_answered": usage.answered,
                "llm_first_error": usage.first_error,
                "memory_error_decisions": state.memory_error_decisions + len(failed),
                "memory_first_error": state.memory_first_error or next(iter(failed), None),
                "memory_writes": int(counted.get("writes", 0)),  # the writer's, kept with it
                "memory_writes_failed": int(counted.get("writes_failed", 0)),
                "broker": broker.state(),
                "pending": stepper.pending,
                "ruined": stepper.ruined,
                "manager": manager.export_state(),
                "last_close": closes[todo[-1]].to_pydatetime(),
                "bars": state.bars + len(records),
                "warmup_decisions": state.warmup_decisions + warmup_decisions(records),
                "idle_steps": 0,
            }
        )
        self.db.save_step(
            state, records=records, fills=broker.fills, trades=broker.trades, marks=marks
        )
        warning = paper_warning(state, min_answered_share=self.settings.llm.min_answered_share)
        if warning is not None:  # at every step: a scheduler left running logs it each time
            log.warning("paper %s: %s", self.run_id, warning)
        last = marks[-1]
        log.info(
            "paper %s at %s: %d bars decided, equity %.2f", self.run_id, now, len(todo), last[1]
        )
        return PaperStepResult(
            run_id=self.run_id,
            now=now,
            fetched=fetched,
            decided=decided,
            equity=last[1],
            exposure=last[2],
            fills=len(broker.fills),
            trades=sum(1 for t in broker.trades if t.closes_position),
            llm_asked=asked.asked,
            llm_answered=asked.answered,
            warning=warning,
            failure=paper_failure(state, min_answered_share=self.settings.llm.min_answered_share),
        )

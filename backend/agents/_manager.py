"""The DeepTraderManager class: the per-bar decision loop (see
:mod:`backend.agents.deep_trader_manager` for the steps and the builder)."""

from __future__ import annotations

import bisect
import logging
import time
from collections import defaultdict
from collections.abc import Sequence
from datetime import date, datetime
from functools import partial

import pandas as pd

from backend.agents._manager_state import ManagerState, seed_profile
from backend.agents._memory_reader import MemoryReader, bar_state, situation_query
from backend.agents._memory_writer import MemoryWriter
from backend.agents.constraints import enforce
from backend.agents.policies import DecisionView, Policy, daily_vol
from backend.agents.system import MemorySystem
from backend.backtest.models import BarContext, Decision, DecisionRecord, TradeRecord
from backend.config import AgentSettings
from backend.data import Fill
from backend.errors import DataError, LookAheadError, SentinelError
from backend.memory import FearGreedIndex, FeatureFrame, HeadlineIndex
from backend.memory.models import Episode, MemoryContext, PersonaProfile, RenderedContext
from backend.storage import stable_id

__all__ = ["DeepTraderManager", "ManagerState", "situation_query"]

log = logging.getLogger("backend.agents")
_EPS = 1e-9


class DeepTraderManager:
    """One agent (``agent.trader_id``) trading one symbol on precomputed ``features``.

    ``system``: the memory (None = memory off); ``episodes``: detected episodes of the
    whole frame (added as the clock passes them); ``headlines``/``fear_greed``: for the
    working-memory snapshots; ``seed_note``: the trader's words recorded as of the first
    bar when the persona is empty (module doc); ``min_trade_fraction``: the engine's
    no-trade threshold (decides which decisions are recorded); ``flush_every``: bars
    between batched memory writes (default ``min(24, outcome_horizon_bars)``; see
    :mod:`backend.agents._memory_writer`); ``fills``: the trader's own fills (any order;
    other traders' are ignored): with memory on, the persona is given those at or before
    each bar before it decides (a bar without new fills costs a bisect), so every decision
    reads the persona as the trader's fills known then made it
    (:meth:`PersonaManager.update_from_fills`; it was once a day, and a day's fills were
    seen only the next day).
    Implements :class:`~backend.backtest.models.DecisionMaker`. Not thread-safe.
    """

    def __init__(
        self,
        *,
        features: FeatureFrame,
        policy: Policy,
        agent: AgentSettings,
        system: MemorySystem | None = None,
        episodes: Sequence[Episode] = (),
        headlines: HeadlineIndex | None = None,
        fear_greed: FearGreedIndex | None = None,
        seed_note: str | None = None,
        min_trade_fraction: float = 0.02,
        flush_every: int | None = None,
        prime_ahead: int = 256,
        fills: Sequence[Fill] = (),
    ) -> None:
        self.features = features
        self.policy = policy
        self.agent = agent
        self.trader_id = agent.trader_id
        self.system = system if agent.memory else None
        self.seeded = False
        """True once the store held no persona of the trader at the first bar and the seed
        note was recorded: the run's persona is that note (and ``fills``) alone."""
        self.episodes = sorted(episodes, key=lambda e: (e.occurred_at, e.id))
        self.headlines = headlines
        self.fear_greed = fear_greed
        self.seed_note = seed_note
        self.min_trade_fraction = min_trade_fraction
        every = flush_every or min(24, agent.outcome_horizon_bars)
        self.writer = (
            MemoryWriter(
                self.system,
                trader_id=self.trader_id,
                features=features,
                episodes=self.episodes,
                horizon_bars=agent.outcome_horizon_bars,
                flush_every=every,
            )
            if self.system is not None
            else None
        )
        self.fills = sorted(
            (f for f in fills if f.trader_id == self.trader_id), key=lambda f: f.timestamp
        )
        self._fill_ms = [f.timestamp for f in self.fills]
        self._fills_known = 0
        """Fills already given to the persona (a prefix of ``self.fills``)."""
        self.prime_ahead = max(1, prime_ahead)
        self.reader = (
            MemoryReader(
                self.system,
                trader_id=self.trader_id,
                features=features,
                agent=agent,
                headlines=headlines,
                fear_greed=fear_greed,
                prime_ahead=self.prime_ahead,
            )
            if self.system is not None
            else None
        )
        self._static_profile: PersonaProfile | None = None
        self._ctx: tuple[MemoryContext, RenderedContext] | None = None
        self._bars = 0
        self._first: datetime | None = None
        self._last: datetime | None = None
        self._day: date | None = None
        self._day_equity: float | None = None
        self.timings: defaultdict[str, float] = defaultdict(float)
        """Seconds spent per stage (prime, observe, episodes, retrieve, decide, check,
        write)."""
        self.violations = 0

    @property
    def memory_on(self) -> bool:
        return self.system is not None

    # ----------------------------------------------------------------- persona

    def _seed(self, as_of: datetime) -> None:
        note = self.seed_note
        if not note:
            return
        if self.system is None:
            self._static_profile = seed_profile(self.trader_id, note, as_of)
            return
        if self.system.persona.get_profile(self.trader_id, as_of) is not None:
            return
        written = self.system.persona.written_until(self.trader_id)
        if written is not None and written > as_of:
            # persona versions only move forward: the note cannot go before records
            # written later (a chat imported, a store reused for an earlier window), and
            # skipping it would make the run's limits depend on what the store learned
            # after this bar
            raise LookAheadError(
                f"trader {self.trader_id} has persona records from {written.isoformat()} "
                f"on, after this run's first bar {as_of.isoformat()}: the default "
                "constraints note cannot be recorded before them; start the run at or "
                "after that time, or use a store without them (--store-path)"
            )
        # its own id, so the evidence tells the default from the trader's words (it had
        # been "note-<hash>", like any note the trader wrote)
        seed_id = "default-constraints-" + stable_id(self.trader_id, as_of.isoformat(), note)[:12]
        self.system.toolkit.record_note(self.trader_id, note, as_of=as_of, note_id=seed_id)
        self.seeded = True

    def profile_at(self, as_of: datetime) -> PersonaProfile | None:
        """The persona the constraints are checked against at ``as_of``."""
        if self.system is None:
            return self._static_profile
        return self.system.persona.get_profile(self.trader_id, as_of)

    # ----------------------------------------------------------------- the loop

    def _row_index(self, bar: BarContext) -> int:
        if bar.trader_id != self.trader_id:
            raise DataError(
                f"bar for trader {bar.trader_id!r} given to the agent of {self.trader_id!r}",
                field="trader_id",
            )
        if bar.symbol != self.features.symbol:
            raise DataError(
                f"bar of {bar.symbol} given to the manager of {self.features.symbol}",
                field="symbol",
            )
        i = self.features.locate(bar.as_of)
        if i < 0 or self.features.row(i).as_of != bar.as_of:
            raise DataError(
                f"{bar.symbol}: no features for the bar closing {bar.as_of.isoformat()}",
                field="as_of",
            )
        return i

    def _clock(self, bar: BarContext) -> None:
        if self._first is None:
            self._first = bar.as_of
            self._seed(bar.as_of)
        if self._last is not None and bar.as_of <= self._last:
            raise DataError(
                f"bar closing {bar.as_of.isoformat()} is not after the last one "
                f"({self._last.isoformat()})",
                field="as_of",
            )
        self._last = bar.as_of
        if bar.as_of.date() != self._day:
            self._day, self._day_equity = bar.as_of.date(), bar.position.equity
        self._refresh_persona(bar.as_of)  # the fills known at this bar (a bisect when none)

    def _refresh_persona(self, as_of: datetime) -> None:
        """Give the persona the trader's fills at or before ``as_of`` not given yet."""
        if self.system is None or not self.fills:
            return
        upto = bisect.bisect_right(self._fill_ms, int(as_of.timestamp() * 1000))
        if upto > self._fills_known:
            new = self.fills[self._fills_known : upto]
            self.system.persona.update_from_fills(self.trader_id, new, as_of=as_of)
            self._fills_known = upto

    def on_bar(self, bar: BarContext) -> DecisionRecord:
        """Process one closed bar (module doc, steps a-g); returns the decision record.

        Raises :class:`DataError` for a bar of another trader or symbol, without
        features, or not after the previous bar. Policy and memory-write faults never
        raise: they become ``hold`` with ``error`` / are logged and counted.
        """
        i = self._row_index(bar)
        first = self._first is None  # a new loop (not one restored from a saved state)
        self._clock(bar)
        row = self.features.row(i)
        as_of = bar.as_of
        t = self.timings
        started = time.perf_counter()
        situation = ""
        retrieval_ms = 0.0
        ctx: MemoryContext | None = None
        rendered: RenderedContext | None = None
        memory_errors: list[str] = []
        if self.reader is not None and self.writer is not None:
            if not self.reader.primed(i):
                self.reader.prime(i, self._bars)
                t["prime"] += (now := time.perf_counter()) - started
                started = now
            if first:  # the warm start: what was detected before it, readable now
                self.writer.start(as_of)
            situation, failed = self.reader.observe(
                i, equity=bar.position.equity, first=first, write=self.writer.write_landing
            )  # a consolidation's episode goes in this bar's due flush (one store call)
            self.writer.flush_if_due(as_of)  # before any read of this bar
            memory_errors += failed
            t["observe"] += (now := time.perf_counter()) - started
            self.writer.add_due(as_of)
            t["episodes"] += (mark := time.perf_counter()) - now
            if self._ctx is None or self._bars % self.agent.context_every_bars == 0:
                self._ctx = self.reader.build_context(
                    bar.symbol, as_of, situation, bar_state(row), self.writer.horizon
                )
                retrieval_ms = (time.perf_counter() - mark) * 1000
                t["retrieve"] += retrieval_ms / 1000
                memory_errors += [f"{tier}: {error}" for tier, error in self._ctx[0].errors.items()]
            ctx, rendered = self._ctx
        mark = time.perf_counter()
        view = DecisionView(
            bar=bar,
            features=row,
            context=ctx,
            prompt=rendered.text if rendered is not None else None,
            prompt_ids=tuple(rendered.memory_ids) if rendered is not None else (),
        )
        try:
            proposed = self.policy.decide(view)
        except SentinelError as err:
            log.warning("policy failed at %s: %s", as_of.isoformat(), err)
            proposed = Decision.hold("policy failed", error=f"{type(err).__name__}: {err}")
        t["decide"] += (now := time.perf_counter()) - mark
        profile = self.profile_at(as_of)
        executed = partial(
            enforce,
            profile=profile,
            symbol=bar.symbol,
            position=bar.position,
            daily_vol=daily_vol(row),
            max_exposure=self.agent.max_exposure,
            allow_short=self.agent.allow_short,
            day_start_equity=self._day_equity,
            hold_tolerance=self.min_trade_fraction,
            band=self.agent.rebalance_band,
        )
        decision, violations = executed(proposed)
        self.violations += bool(violations)
        if (effect := proposed.memory_effect) is not None:  # "without memory", as executed
            alone = Decision(action=effect.without_action, size=effect.without_size)
            without = executed(alone)[0].target_exposure(bar.position.exposure)
            effect = effect.model_copy(update={"without_exposure": without})
            proposed = proposed.model_copy(update={"memory_effect": effect})
        t["check"] += (mark := time.perf_counter()) - now
        episode_id = None
        if self.writer is not None:
            if self._trades(decision, bar.position.exposure):
                episode_id = self.writer.record_decision(
                    decision,
                    symbol=bar.symbol,
                    as_of=as_of,
                    market_state=situation,
                    equity=bar.position.equity,
                    state=bar_state(row),
                )
            self.writer.tick(as_of)
            memory_errors += self.writer.take_errors()
            t["write"] += time.perf_counter() - mark
        self._bars += 1
        return DecisionRecord(
            as_of=as_of,
            symbol=bar.symbol,
            decision=decision,
            proposed=proposed,
            violations=violations,
            memory_ids=list(decision.memory_ids),
            prompt_tokens=rendered.tokens if rendered is not None else 0,
            episode_id=episode_id,
            retrieval_ms=round(retrieval_ms, 3),
            memory_errors=memory_errors,
        )

    def _trades(self, decision: Decision, current: float) -> bool:
        """Whether executing ``decision`` trades: its target exposure differs from the
        current one by ``min_trade_fraction`` or more (any close of an open position)."""
        if decision.action == "close":
            return abs(current) > _EPS
        target = decision.target_exposure(current)
        return abs(target - current) >= max(self.min_trade_fraction, _EPS)

    def on_trade_closed(self, trade: TradeRecord) -> None:
        """Queue the trade's realised PnL as an outcome of the decision that opened it
        (written at the next bar, or by :meth:`finish`). Ignored with memory off."""
        if self.writer is not None:
            self.writer.trade_closed(trade)

    def finish(self) -> list[str]:
        """Write what is still buffered (decisions, due outcomes, closed trades) as of the
        last bar processed; returns the writes that failed (``"write <what>: <error>"``,
        none when all landed). The backtest engine calls it after the last bar and puts
        them on the last decision; the builder's close calls it too (then nothing is left
        to write: a second call writes nothing and returns [])."""
        if self.writer is None or self._last is None:
            return []
        self.writer.resolve(self._last)
        return self.writer.take_errors()

    # ----------------------------------------------------------------- state

    def export_state(self) -> ManagerState:
        """The state :meth:`restore_state` needs to continue after the last bar processed,
        in a new process and on a longer feature frame (paper trading restarts)."""
        return ManagerState(
            bars=self._bars,
            first=self._first,
            last=self._last,
            day=self._day,
            day_equity=self._day_equity,
            context=self._ctx,
            static_profile=self._static_profile,
            violations=self.violations,
            writer=self.writer.export_state() if self.writer is not None else None,
        )

    def restore_state(self, state: ManagerState) -> None:
        """Continue from ``state`` (of a manager of the same trader and symbol whose feature
        frame is a prefix of this one's): the next bar must close after ``state.last``."""
        self._bars = state.bars
        self._first, self._last = state.first, state.last
        self._day, self._day_equity = state.day, state.day_equity
        self._ctx = state.context
        self._static_profile = state.static_profile
        self.violations = state.violations
        if self.reader is not None:
            self.reader.reset()
        if state.last is not None:  # the persona already holds those (update ignores repeats)
            stamp = int(state.last.timestamp() * 1000)
            self._fills_known = bisect.bisect_right(self._fill_ms, stamp)
        if self.writer is not None and state.writer is not None:
            self.writer.restore_state(state.writer, added_until=state.last)

    # ----------------------------------------------------------------- reports

    def salient_events(self, *, limit: int | None = 40) -> list[tuple[datetime, str]]:
        """Detected episodes that occurred between the first and the last bar processed,
        as ``(time, "type: reason")``, oldest first (for the report; also with memory
        off); with ``limit``, only the ``limit`` most important (ties: earliest)."""
        if self._first is None or self._last is None:
            return []
        first, last = self._first, self._last
        seen = [e for e in self.episodes if first <= e.occurred_at <= last]
        if limit is not None and len(seen) > limit:
            seen = sorted(seen, key=lambda e: (-e.importance, e.occurred_at))[:limit]
        return [
            (e.occurred_at, f"{e.event_type}: {e.description.split('. Market: ')[0]}"[:200])
            for e in sorted(seen, key=lambda e: e.occurred_at)
        ]

    def persona_timeline(self) -> pd.DataFrame | None:
        """The persona changes of the agent's trader known at the last bar (None with
        memory off or before the first bar). Call before the memory system is closed."""
        if self.system is None or self._last is None:
            return None
        return self.system.persona.timeline_frame(self.trader_id, as_of=self._last)

    def stats(self) -> dict[str, float]:
        """Counters and seconds per stage, for benchmarks and reports."""
        out: dict[str, float] = {"bars": self._bars, "violations": self.violations}
        out.update({f"{k}_s": round(v, 4) for k, v in self.timings.items()})
        if self.writer is not None:
            out.update(self.writer.stats)
        return out

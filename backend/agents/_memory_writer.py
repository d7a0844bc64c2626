"""The decision loop's memory writes, batched and clocked (used by the DeepTraderManager).

Every write happens at a **flush**: at the start of the bar after every ``flush_every``
bars, before that bar reads anything (:meth:`MemoryWriter.flush_if_due`), and at the end
of the run (:meth:`MemoryWriter.resolve`), as of the close of the bar being processed, in
at most two store calls — one ``episodic.add`` of every episode buffered since the last flush
(with the ``context`` episode of working memory's consolidation at that bar, if any:
:meth:`MemoryWriter.write_landing`), then one ``episodic.record_outcomes`` of every
outcome queued since. A chroma write call
costs ~10-50 ms whatever its size (measured on this machine, persistent or in process),
and writing at every bar was most of a backtest's time; the price is visibility: a
memory becomes recallable up to ``flush_every`` bars after the bar that produced it
(outcomes are logged as known from their own resolution time, so reads as of a later
time replay them correctly). Only things known by the flush are written:

- **detected episodes** (market events, news shocks) precomputed from the whole feature
  frame wait in a queue sorted by ``occurred_at``; at each bar, all whose time has come
  are buffered (:meth:`MemoryWriter.add_due`); the descriptions of the next
  :data:`PRIME_EPISODES` are embedded in one batch beforehand (not written) when the
  embedder keeps vectors (:meth:`backend.embeddings.Embedder.prime`);
- **decision episodes** are buffered the same way. The episode is the one
  :meth:`MemoryToolkit.record_decision` writes (same id, text and importance 0.3), built
  here so that many can be written in one call;
- **outcomes** (reflection) of recorded decisions and detected events, and of closed
  trades: scheduled, resolved and queued by the writer's
  :class:`~backend.agents._outcomes.OutcomeBook` (its module doc);
- **a new decision loop's first bar** (:meth:`MemoryWriter.start`) buffers the episodes
  detected before it, queues their outcomes and flushes, so its first decision reads
  them (the warm start).

Write failures (:class:`~backend.errors.SentinelError`) are logged and counted in
:attr:`MemoryWriter.stats` (``writes``: episodes and outcomes a flush tried to write,
a retry counted again; ``writes_failed``: those that failed, alone as well as in their
batch), never raised: the agent keeps trading. What failed is tried
again, one write at a time, at the next flushes, then dropped and counted
(``episodes_lost``, ``outcomes_lost``; :func:`~backend.agents._writer_state.retry_or_drop`):
a chroma server restarting during a flush had lost that day's episodes for good, while
one bad write still loses only itself. The writes are idempotent, so retrying one that
did land changes nothing.
"""

from __future__ import annotations

import bisect
import logging
from collections import Counter
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from typing import TypeVar

from backend.agents._outcomes import OutcomeBook
from backend.agents._writer_state import WRITE_ATTEMPTS, DueOutcome, WriterState, retry_or_drop
from backend.agents.system import MemorySystem
from backend.backtest.models import Decision, TradeRecord
from backend.errors import SentinelError
from backend.memory import FeatureFrame
from backend.memory.models import Episode, Outcome
from backend.tools.memory_toolkit import DECISION_IMPORTANCE, decision_episode

__all__ = [
    "WRITE_ATTEMPTS",
    "DueOutcome",
    "MemoryWriter",
    "WriterState",
]

log = logging.getLogger("backend.agents")
_T = TypeVar("_T")
_RATIONALE_CHARS = 160
PRIME_EPISODES = 32
"""Detected episodes whose descriptions are embedded in one batch when the next is due."""


class MemoryWriter:
    """Clocked, batched writes of one trader on one symbol (module doc)."""

    def __init__(
        self,
        system: MemorySystem,
        *,
        trader_id: str,
        features: FeatureFrame,
        episodes: Sequence[Episode] = (),
        horizon_bars: int = 24,
        flush_every: int = 24,
    ) -> None:
        self.system = system
        self.trader_id = trader_id
        self.features = features
        self._pending = sorted(episodes, key=lambda e: (e.occurred_at, e.id))
        self._next = 0
        self._primed = 0
        self.outcomes = OutcomeBook(
            features, horizon=timedelta(seconds=horizon_bars * 86_400 / features.bars_per_day)
        )
        self.flush_every = max(1, flush_every)
        self._buffer: list[Episode] = []
        self._bars_since_flush = 0
        self.stats: Counter[str] = Counter()
        self._errors: list[str] = []
        self._attempts: dict[str, int] = {}
        """Failed flushes per write still to be retried (``WriterState.attempts``)."""

    @property
    def horizon(self) -> str:
        """The outcome horizon's label (``"1d"``: :attr:`OutcomeBook.horizon`)."""
        return self.outcomes.horizon

    # ----------------------------------------------------------------- helpers

    def _guard(self, what: str, err: SentinelError) -> None:
        log.warning("memory write failed (%s): %s", what, err)
        self.stats["write_errors"] += 1
        self._errors.append(f"write {what}: {type(err).__name__}: {err}")

    def take_errors(self) -> list[str]:
        """The write failures since the last call (each ``"write <what>: <error>"``),
        then none: the manager puts them on the decision of the bar they happened at."""
        errors, self._errors = self._errors, []
        return errors

    # ----------------------------------------------------------------- state

    def export_state(self) -> WriterState:
        """The in-process state between two bars (for a loop that restarts: paper trading)."""
        return self.outcomes.saved(
            WriterState(
                buffer=list(self._buffer),
                bars_since_flush=self._bars_since_flush,
                stats=dict(self.stats),
                attempts=dict(self._attempts),
            )
        )

    def restore_state(self, state: WriterState, *, added_until: datetime | None) -> None:
        """Continue from ``state`` (:meth:`export_state` of a writer of the same trader and
        symbol, possibly on a shorter feature frame); detected episodes that occurred at or
        before ``added_until`` (the last bar processed) count as already added."""
        self._next = 0
        if added_until is not None:
            self._next = bisect.bisect_right([e.occurred_at for e in self._pending], added_until)
        self._primed = self._next
        self._buffer = list(state.buffer)
        self._bars_since_flush = state.bars_since_flush
        self.outcomes.restore(state)
        self.stats = Counter(state.stats)
        self._attempts = dict(state.attempts)

    # ----------------------------------------------------------------- per bar

    def add_due(self, as_of: datetime) -> list[Episode]:
        """Buffer every detected episode with ``occurred_at <= as_of`` not yet buffered
        (written at the next flush) and schedule their outcomes; returns them."""
        end = self._next
        while end < len(self._pending) and self._pending[end].occurred_at <= as_of:
            end += 1
        due = self._pending[self._next : end]
        if not due:
            return []
        if end > self._primed:  # embed the next ones in a batch
            self._primed = max(end, self._next + PRIME_EPISODES)
            try:
                self.system.store.embedder.prime(
                    e.description for e in self._pending[self._next : self._primed]
                )
            except SentinelError as err:  # a dead embedding endpoint: the writes that
                # need the vectors fail and are counted (module doc); it had ended the run
                # with nothing written and the store half-filled
                self._guard("embedding", err)
        self._next = end
        self._buffer.extend(due)
        self.stats["episodes_added"] += len(due)
        for episode in due:
            self.outcomes.schedule(episode, None, 0.0)
        return due

    def record_decision(
        self,
        decision: Decision,
        *,
        symbol: str,
        as_of: datetime,
        market_state: str,
        equity: float,
        state: dict[str, float] | None = None,
    ) -> str:
        """Buffer the decision's episode (written at the next flush); returns its id."""
        episode = decision_episode(  # the toolkit's, the rationale cut: it embeds faster
            self.trader_id, symbol=symbol, action=decision.action,
            size=decision.size if decision.action in ("buy", "sell") else 0.0,
            rationale=decision.rationale[:_RATIONALE_CHARS] or "no rationale",
            memory_ids=decision.memory_ids, as_of=as_of, market_state=market_state,
            importance=DECISION_IMPORTANCE, state=state,
            outcome_horizon_s=round(self.outcomes.span.total_seconds()),
        )  # fmt: skip
        self._buffer.append(episode)
        entering = decision.action in ("buy", "sell")
        exposure = decision.target_exposure(0.0) if entering else None
        self.outcomes.schedule(episode, exposure, equity)
        self.stats["decisions_recorded"] += 1
        return episode.id

    def flush(self, as_of: datetime, *, landing: Sequence[Episode] = ()) -> int:
        """Write the buffered episodes (one batch), then the queued outcomes (one batch);
        returns how many episodes were written. A failed batch is written one episode (or
        outcome) at a time; what still fails is kept for the next flush (module doc).

        ``landing``: episodes of another writer that must land now or raise (working
        memory's consolidation, :meth:`write_landing`), written in the same store call as
        the buffer; if that call fails, the buffer is written as above and ``landing``
        alone, after the outcomes, raising its error (:class:`SentinelError`)."""
        self._bars_since_flush = 0
        written = 0
        if landing:
            batch = self._buffer
            try:
                self.system.episodic.add([*batch, *landing], as_of=as_of)
            except SentinelError:
                pass  # written apart below: the buffer kept and retried, landing raised
            else:
                landing, self._buffer = (), []
                self.stats["writes"] += len(batch)
                if batch:
                    self.stats["flushes"] += 1
                for episode in batch:
                    self._attempts.pop(episode.id, None)
                written = len(batch)
        if self._buffer:
            batch, self._buffer = self._buffer, []
            written, kept = self._write_all(
                batch,
                lambda episodes: self.system.episodic.add(episodes, as_of=as_of),
                what="episodes",
                key=lambda episode: episode.id,
                lost="episodes_lost",
                batched="flushes",
            )
            self._buffer.extend(kept)
        self._write_queued(as_of)
        if landing:
            self.system.episodic.add(landing, as_of=as_of)
        return written

    def write_landing(self, episodes: Sequence[Episode], *, as_of: datetime) -> None:
        """Write ``episodes`` that must land now or raise (:class:`SentinelError`):
        working memory's consolidation, which keeps its window and says so when they do
        not. On a bar whose flush is due (:meth:`flush_if_due`) they go in the flush's
        store call, else alone. A chroma write costs ~10-30 ms whatever its size: on a
        durable store, the consolidation's call was 29 of the 91 store writes of the
        May 2022 BTC/USDT 1h bench window, one per 24 bars, each on a flush bar; in the
        flush's call, 64 writes (33 upserts, 31 updates) and 112.8-138.8 decisions/s
        instead of 87.6-100.9 (``scripts/bench_backtest.py --backend chroma``, same
        total return)."""
        if self._bars_since_flush >= self.flush_every:
            self.flush(as_of, landing=episodes)
        else:
            self.system.episodic.add(episodes, as_of=as_of)

    def _write_all(
        self,
        batch: list[_T],
        write: Callable[[list[_T]], object],
        *,
        what: str,
        key: Callable[[_T], str],
        lost: str,
        batched: str | None = None,
    ) -> tuple[int, list[_T]]:
        """Write ``batch`` in one call; if it fails, one item at a time, so one bad item
        loses only itself. Returns how many were written and those to try again at the
        next flush (:meth:`_retry`; ``lost``: the stat of those dropped). Counts
        ``writes`` and ``writes_failed`` (module doc), and ``batched`` (a stat) when the
        one call wrote the whole batch."""
        self.stats["writes"] += len(batch)
        try:
            write(batch)
        except SentinelError as err:
            self._guard(what, err)
        else:
            for item in batch:
                self._attempts.pop(key(item), None)
            if batched is not None:
                self.stats[batched] += 1
            return len(batch), []
        written, kept = 0, []
        for item in batch:
            try:
                write([item])
            except SentinelError as one:
                self.stats["writes_failed"] += 1
                if self._retry(key(item), lost, one):
                    kept.append(item)
                continue
            self._attempts.pop(key(item), None)
            written += 1
        return written, kept

    def _retry(self, key: str, lost: str, err: SentinelError) -> bool:
        """Whether the write ``key`` that failed with ``err`` is tried again at the next
        flush (:func:`retry_or_drop`), else it is dropped, counted in ``stats[lost]`` and
        said."""
        tries = retry_or_drop(self._attempts, key, err)
        if not tries:
            return True
        self.stats[lost] += 1
        self._guard(f"{key} (dropped after {tries} flush{'es' if tries > 1 else ''})", err)
        return False

    def trade_closed(self, trade: TradeRecord) -> None:
        """Queue a closed trade row (a reduction of a position) for the decision that
        opened the position (module doc)."""
        if trade.entry_decision is None:
            self.stats["trades_without_decision"] += 1
            return
        self.outcomes.trades.append(trade)

    def start(self, as_of: datetime) -> None:
        """A new decision loop's first bar, before anything is read: buffer the episodes
        detected up to ``as_of``, queue the outcomes due and flush (module doc)."""
        self.add_due(as_of)
        self.outcomes.queue_due(as_of, trades=False)
        self.flush(as_of)

    def tick(self, as_of: datetime) -> None:
        """Per bar, after the decision: queue the outcomes whose horizon has passed and
        the PnL of trades closed after their decision's horizon (written by the next
        :meth:`flush_if_due`)."""
        self._bars_since_flush += 1
        self.outcomes.queue_due(as_of, trades=True)

    def flush_if_due(self, as_of: datetime) -> None:
        """Per bar, before anything is read: flush when ``flush_every`` bars have passed
        since the last flush. Flushing at the start of the next bar rather than at the end
        of this one makes no difference to what any read sees, but a step that is re-run
        after a crash (paper trading: the store write landed, the step's state save did
        not) then reads the same memory as the first time: the flush comes before the
        read both times, and writing it again changes nothing (episodes are upserted
        unchanged, outcomes already logged are skipped)."""
        if self._bars_since_flush >= self.flush_every:
            self.flush(as_of)

    def resolve(self, as_of: datetime) -> None:
        """The end of a run: queue every outcome due at ``as_of`` and the realised PnL of
        every queued trade (as of its exit if that is later), and flush."""
        latest = self.outcomes.queue_all(as_of)
        self.flush(latest)
        queued = self.outcomes.queued
        if self._buffer or queued:  # no later flush will retry them: lost, and said
            self.stats["episodes_lost"] += len(self._buffer)
            self.stats["outcomes_lost"] += len(queued)
            self._errors.append(
                f"write at the end of the run: {len(self._buffer)} episodes and "
                f"{len(queued)} outcomes were never written (the store failed)"
            )
            self._buffer, self.outcomes.queued = [], []
            self._attempts.clear()

    def _write_queued(self, as_of: datetime) -> None:
        """Write the queued outcomes in one batch. A failed batch is retried one outcome
        at a time, so one bad outcome loses only itself, and what still fails is kept for
        the next flush (module doc). The outcomes of an episode still waiting in the
        buffer (its write failed) wait with it, without using an attempt."""
        waiting = {e.id for e in self._buffer}
        queued = self.outcomes.queued
        batch = [item for item in queued if item[0] not in waiting]
        self.outcomes.queued = [item for item in queued if item[0] in waiting]
        if not batch:
            return
        written, kept = self._write_all(
            batch,
            lambda items: self.system.episodic.record_outcomes(self.trader_id, items, as_of=as_of),
            what="outcomes",
            key=_outcome_key,
            lost="outcomes_lost",
        )
        self.outcomes.queued.extend(kept)
        self.stats["outcomes_recorded"] += written


def _outcome_key(item: tuple[str, Outcome]) -> str:
    """The key of a queued outcome among the writer's retried writes."""
    return f"outcome {item[1].horizon} of {item[0]} at {item[1].resolved_at.isoformat()}"

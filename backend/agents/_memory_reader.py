"""The decision loop's memory reads (used by the DeepTraderManager): the bar's market
state (:func:`bar_state`) and recall query (:func:`situation_query`), the working-memory
snapshots and queries of the next retrieval bars built ahead (their embeddings primed in
one batch), and the context of a decision built from the memory tiers."""

from __future__ import annotations

import logging
import math
from datetime import datetime

from backend.agents.system import MemorySystem
from backend.config import AgentSettings
from backend.errors import ConfigError, EmbeddingError, StoreError, dependency_failed
from backend.memory import (
    EpisodeWrite,
    FearGreedIndex,
    FeatureFrame,
    FeatureRow,
    HeadlineIndex,
    WorkingMemory,
)
from backend.memory.detectors import SHOCK_TOPICS, STATE_COLUMNS
from backend.memory.models import MarketSnapshot, MemoryContext, RenderedContext

log = logging.getLogger("backend.agents")

__all__ = ["MemoryReader", "bar_state", "situation_query"]


def bar_state(row: FeatureRow) -> dict[str, float]:
    """The bar's market state: its finite :data:`STATE_COLUMNS` feature values."""
    values = row.values
    return {k: float(values[k]) for k in STATE_COLUMNS if k in values and math.isfinite(values[k])}


def situation_query(snapshot: MarketSnapshot) -> str:
    """The text of a bar's market state: the market state written into its decision
    episode, and the query the trader's messages are recalled by (episodes are recalled
    by the bar's features, not by this text): :meth:`MarketSnapshot.situation` with only
    the bar's dominant news topic.

    The full situation lists the first three topic tags, which change almost every hour
    with the headlines (3,837 distinct texts over the 7,297 BTC/USDT 1h bars of
    2021-10..2022-07, each one MiniLM embedding of ~15-25 ms when it is embedded);
    market-state tags repeat what the text already says. Keeping the dominant news topic
    only gives 2,230 distinct texts.
    """
    news = [t for t in snapshot.topics if t in SHOCK_TOPICS][:1]
    return snapshot.model_copy(update={"topics": news}).situation()


class MemoryReader:
    """The reads of one trader's decision loop on one symbol's ``features`` (module doc).
    Not thread-safe."""

    def __init__(
        self,
        system: MemorySystem,
        *,
        trader_id: str,
        features: FeatureFrame,
        agent: AgentSettings,
        headlines: HeadlineIndex | None,
        fear_greed: FearGreedIndex | None,
        prime_ahead: int,
    ) -> None:
        self.system = system
        self.trader_id = trader_id
        self.features = features
        self.agent = agent
        self.headlines = headlines
        self.fear_greed = fear_greed
        self.prime_ahead = prime_ahead
        self._primed_until = -1
        self._ahead: dict[int, tuple[MarketSnapshot, str]] = {}
        """Row -> (snapshot, recall query) built ahead by :meth:`prime`."""

    def primed(self, i: int) -> bool:
        """Whether the queries of row ``i`` were considered by the last :meth:`prime`."""
        return i < self._primed_until

    def prime(self, i: int, bars: int) -> None:
        """Build the snapshots and recall queries of the retrieval bars among rows
        ``i .. i + prime_ahead - 1`` (each from its own bar's data; row ``i`` is the
        ``bars``-th bar processed) and, when the trader has messages to recall at row
        ``i``, embed the queries in one batch (:meth:`backend.embeddings.Embedder.prime`)."""
        system = self.system
        end = min(len(self.features), i + self.prime_ahead)
        every = self.agent.context_every_bars
        texts = []
        self._ahead.clear()
        for j in range(i, end):
            if (bars + j - i) % every:
                continue  # no retrieval at that bar: its query is never asked
            snap = system.working.snapshot_of(
                self.trader_id,
                self.features,
                j,
                headlines=self.headlines,
                fear_greed=self.fear_greed,
            )
            query = situation_query(snap)
            self._ahead[j] = (snap, query)  # observed at its own bar, not before
            texts.append(query)
        conversation = system.memory.conversation
        as_of = self.features.row(i).as_of
        if conversation is not None and conversation.has_messages(self.trader_id, as_of=as_of):
            # the queries are embedded only to recall the trader's words (episodes are
            # recalled by market state, not by text)
            system.store.embedder.prime(texts)
        self._primed_until = end

    def observe(
        self, i: int, *, equity: float, first: bool, write: EpisodeWrite | None = None
    ) -> tuple[str, list[str]]:
        """Working memory observes the bar of row ``i`` (its snapshot built ahead by
        :meth:`prime`, or built now) and the account's ``equity`` at its close (quote
        currency; ``first``: the loop's first bar, a new account; ``write``: how a
        consolidation's episode is written, :meth:`WorkingMemory.observe`); returns the bar's
        recall query and the memory failures of the bar (``"working: <error>"``): a
        dead embedding endpoint or store while working memory consolidated is a memory
        failure of this bar, counted and said, not the end of the run with nothing
        written and the store half-filled (a reviewer's run). Raises
        :class:`ConfigError` (a run into the past of the store's working memory) and the
        store errors of a wrong call or setup (:func:`~backend.errors.dependency_failed`)."""
        if first:
            features = self.features
            _check_not_into_the_past(
                self.system.working, self.trader_id, features.symbol, features.timeframe,
                features.row(i).as_of,
            )  # fmt: skip
        try:
            return self._observe(i, equity=equity, first=first, write=write), []
        except (EmbeddingError, StoreError) as err:
            if not dependency_failed(err):
                raise
            log.warning("working memory failed at row %d: %s", i, err)
            return "", [f"working: {type(err).__name__}: {err}"]

    def _observe(self, i: int, *, equity: float, first: bool, write: EpisodeWrite | None) -> str:
        working = self.system.working
        ahead = self._ahead.pop(i, None)
        if ahead is not None:  # built by prime: the same pure function of row i
            snapshot, situation = ahead
            working.observe(snapshot, write=write)
        else:
            snapshot = working.observe_bar(
                self.trader_id,
                self.features,
                i,
                headlines=self.headlines,
                fear_greed=self.fear_greed,
                write=write,
            )
            situation = situation_query(snapshot)
        working.observe_equity(
            self.trader_id, snapshot.symbol, timeframe=snapshot.timeframe,
            as_of=snapshot.as_of, equity=equity, first=first,
        )  # fmt: skip
        return situation

    def build_context(
        self,
        symbol: str,
        as_of: datetime,
        query: str,
        state: dict[str, float],
        horizon: str | None,
    ) -> tuple[MemoryContext, RenderedContext]:
        """:meth:`HierarchicalMemory.build_context` with the tiers of
        ``agent.memory_tiers``: episodes by nearest market ``state`` with an outcome over
        the agent's ``horizon`` (``agent.episode_neighbours`` of them), the trader's words
        by ``query``."""
        return self.system.memory.build_context(
            self.trader_id,
            symbol,
            as_of=as_of,
            query=query,
            tiers=self.agent.memory_tiers,
            top_k=self.agent.episode_neighbours,
            state=state,
            horizon=horizon,
            timeframe=self.features.timeframe,
        )

    def reset(self) -> None:
        """Forget what was built ahead (the loop continues from a restored state)."""
        self._primed_until = -1
        self._ahead.clear()


def _check_not_into_the_past(
    working: WorkingMemory, trader_id: str, symbol: str, timeframe: str, as_of: datetime
) -> None:
    """A new loop's first bar must not come before what the store's working memory of
    ``(trader_id, symbol)`` holds: a bar at or before its consolidated point is ignored
    (a replay after a restart), and a bar before its newest snapshot meets the decision
    episodes and outcomes of another run; the run would neither see the market it
    replays nor be what the agent knew then (a backtest of May 1-10 on the store of a May
    1-21 run differed from a fresh one in 51 of its 240 decisions). The newest bar again
    passes: a paper run's first step re-run after a crash (a new backtest from exactly
    that bar is let through with it). Nor may it be of another timeframe than the window
    holds: one window per (trader, symbol), and detected events of one symbol keep one
    id whatever the timeframe (a 4h run after a 1h run lost every episode it wrote, and
    the 1h paper run behind it died). Raises :class:`ConfigError`."""
    held = working.observed_until(trader_id, symbol)
    if held is None:
        return
    if held.timeframe is not None and held.timeframe != timeframe:
        raise ConfigError(
            f"the memory store holds {held.timeframe} working memory of {symbol} for "
            f"{trader_id}: a {timeframe} run would mix two timeframes in one window; use "
            "another store (--store-path, or store.path)"
        )
    if as_of <= held.consolidated or as_of < held.newest:
        raise ConfigError(
            f"the memory store already holds {symbol} working memory of {trader_id} up to "
            f"{held.newest.isoformat()}: a new run from {as_of.isoformat()} would replay "
            "into its past; use another store (--store-path, or store.path) or start after "
            "that time"
        )

"""The DeepTraderManager: the decision loop of the agent over its hierarchical memory.

At each bar close (:meth:`DeepTraderManager.on_bar`, driven by the backtest engine or a
live scheduler), with ``as_of`` = the bar's close time for every read and write:

a. working memory observes the bar (``WorkingMemory.observe_bar``: snapshot, topics,
   consolidation of overflow into ``context`` episodes);
b. detected episodes (market events, news shocks; precomputed from the whole frame) whose
   ``occurred_at`` has passed are added, in one batch;
c. the three tiers are retrieved and rendered within the token budget
   (``HierarchicalMemory.retrieve`` + ``render_context``, as ``build_context`` does; the
   episodic query is :func:`situation_query`), every ``agent.context_every_bars`` bars (in
   between, the last context, from an earlier ``as_of``, is reused);
d. the policy decides (:mod:`backend.agents.policies`);
e. the persona's hard constraints as of the bar are enforced in code
   (:func:`backend.agents.constraints.check_decision`);
f. a decision that trades (its target exposure differs from the current one by at least
   ``min_trade_fraction``, or it closes an open position) is recorded as a ``decision``
   episode with the ids of the memories it used; holds and no-op decisions are not
   stored (they carry no action to learn from, and storing them would cost one embedding
   per bar);
g. outcomes: ``outcome_horizon_bars`` after a recorded decision or a detected event its
   outcome (market return, estimated PnL) is recorded, which updates its importance
   (reflection); a closed trade (:meth:`DeepTraderManager.on_trade_closed`) records its
   realised PnL on the decision that opened it. Writes are batched
   (:mod:`backend.agents._memory_writer`).

With memory off (``agent.memory = False`` or no memory system): no retrieval and no
memory writes (the ablation); the same hard constraints are still enforced from a
profile built in process from the seed note (nothing stored), and ``prompt_tokens`` = 0.
"""

from __future__ import annotations

import shutil
import tempfile
import uuid
from collections.abc import Callable
from pathlib import Path

from backend.agents._embed_cache import PrimedEmbedder
from backend.agents._manager import DeepTraderManager, situation_query
from backend.agents.policies import LLMPolicy, Policy, RulePolicy
from backend.compose import MemorySystem, build_memory_system
from backend.config import LLMSettings, Settings
from backend.data import OHLCVFrame, load_fear_greed, load_headlines
from backend.embeddings import Embedder, build_embedder
from backend.errors import ConfigError
from backend.llm import build_llm
from backend.llm.tokens import load_encoding
from backend.memory import (
    FearGreedIndex,
    FeatureFrame,
    HeadlineIndex,
    compute_features,
    detect_market_events,
    detect_news_shocks,
    events_to_episodes,
)
from backend.memory.models import Episode

__all__ = [
    "DEFAULT_CONSTRAINTS_NOTE",
    "DeepTraderManager",
    "build_trader_manager",
    "detect_episodes",
    "make_policy",
    "situation_query",
]

DEFAULT_CONSTRAINTS_NOTE = (
    "Never more than 2% risk per trade, never more than 3x leverage, no memecoins."
)
"""The demo trader's note, recorded as of the first bar when the persona is empty: it
becomes the hard constraints max_risk_per_trade 0.02, max_leverage 3.0, no_memecoins."""


# ------------------------------------------------------------------------ builder


def _detected(
    settings: Settings,
    features: FeatureFrame,
    headlines: HeadlineIndex | None,
    fear_greed: FearGreedIndex | None,
) -> list[Episode]:
    det = settings.memory.detectors
    events = detect_market_events(features, settings=det)
    if headlines is not None and len(headlines):
        events += detect_news_shocks(features, headlines, settings=det)
    return events_to_episodes(
        events,
        trader_id=settings.agent.trader_id,
        features=features,
        headlines=headlines,
        fear_greed=fear_greed,
        news_window_bars=det.news_window_bars,
    )


def _policy(settings: Settings, name: str) -> Policy:
    if name == "rule":
        return RulePolicy(settings.agent)
    if name == "llm":
        llm = build_llm(settings.llm)
        if llm is None:
            raise ConfigError(
                "agent.policy llm needs llm.base_url and llm.model "
                "(SENTINEL_LLM__BASE_URL, SENTINEL_LLM__MODEL)"
            )
        return LLMPolicy(llm, max_exposure=settings.agent.max_exposure)
    raise ConfigError(f"agent.policy: unknown policy {name!r} (expected rule or llm)")


def build_trader_manager(
    settings: Settings,
    *,
    ohlcv: OHLCVFrame,
    data_dir: Path,
    memory: bool,
    policy: str,
    store_path: Path | None,
    embedder: Embedder | None = None,
    seed_note: str | None = DEFAULT_CONSTRAINTS_NOTE,
) -> tuple[DeepTraderManager, Callable[[], None]]:
    """Compose a :class:`DeepTraderManager` for ``ohlcv``; returns it and a close function.

    Features are computed once for the whole frame; headlines
    (``data_dir/news/crypto_headlines.csv``) and Fear & Greed
    (``data_dir/trades/fear_greed_index.csv``) are loaded when present; market events and
    news shocks are detected. With ``memory``, the memory system is built on an embedded
    store at ``store_path``; when None, each run starts from an empty, throwaway memory:
    an in-process chroma (``store.mode="ephemeral"``, its own collection prefix, dropped
    by the close function; no fsync per write: ~55 ms per chroma write call on this disk,
    measured) with its working-memory and audit files in a temporary directory removed by
    the close function. ``embedder`` overrides the
    configured one. Persona notes are read by the offline rules (deterministic), the
    policy uses the configured LLM. ``seed_note`` (default
    :data:`DEFAULT_CONSTRAINTS_NOTE`) is recorded as of the first bar when the persona is
    empty. The close function writes what is buffered and closes the memory (idempotent).

    Raises :class:`ConfigError` for ``policy="llm"`` without ``llm.base_url``/``llm.model``
    or an unknown policy, :class:`DataError` for unreadable data files, and the memory
    system's errors.
    """
    chosen = _policy(settings, policy)
    features = compute_features(
        ohlcv, breakout_lookback_bars=settings.memory.detectors.breakout_lookback_bars
    )
    news_path = data_dir / "news" / "crypto_headlines.csv"
    fg_path = data_dir / "trades" / "fear_greed_index.csv"
    headlines = HeadlineIndex.build(load_headlines(news_path)) if news_path.is_file() else None
    fear_greed = FearGreedIndex.build(load_fear_greed(fg_path)) if fg_path.is_file() else None
    episodes = _detected(settings, features, headlines, fear_greed)
    agent = settings.agent.model_copy(update={"memory": memory, "policy": policy})
    system: MemorySystem | None = None
    primer: PrimedEmbedder | None = None
    temp: Path | None = None
    if memory:
        temp = None if store_path is not None else Path(tempfile.mkdtemp(prefix="sentinel-run-"))
        root = store_path if store_path is not None else temp
        assert root is not None
        store = settings.store.model_copy(
            update={
                "mode": "embedded" if store_path is not None else "ephemeral",
                "path": root / "khala",
                "audit_path": root / "audit.db",
                # the run owns a throwaway store: exact dense search in process
                "exact_search_max": 0 if store_path is not None else 50_000,
                # chroma syncs its index every 100 records: small writes ~2.6x cheaper;
                # writes reach chroma 64 records at a time (backend.storage._pending)
                **(
                    {"hnsw_sync_threshold": 100, "write_coalesce": 64} if store_path is None else {}
                ),
                "collection_prefix": (
                    settings.store.collection_prefix
                    if store_path is not None
                    else f"run{uuid.uuid4().hex[:12]}"
                ),
            }
        )
        mem = settings.memory.model_copy(update={"working_state_path": root / "working.sqlite3"})
        system_settings = settings.model_copy(
            update={"store": store, "memory": mem, "llm": LLMSettings()}
        )
        try:
            load_encoding()  # prompt token counts: the tokenizer loads here, not at bar 1
            primer = PrimedEmbedder(embedder or build_embedder(settings.embedding))
            system = build_memory_system(system_settings, embedder=primer)
        except BaseException:
            if temp is not None:
                shutil.rmtree(temp, ignore_errors=True)
            raise
    manager = DeepTraderManager(
        features=features,
        policy=chosen,
        agent=agent,
        system=system,
        episodes=episodes,
        headlines=headlines,
        fear_greed=fear_greed,
        seed_note=seed_note,
        min_trade_fraction=settings.backtest.min_trade_fraction,
        primer=primer,
    )
    closed = False

    def close() -> None:
        nonlocal closed
        if closed:
            return
        closed = True
        try:
            manager.finish()
        finally:
            if system is not None:
                if temp is not None:  # a throwaway in-memory store: free its collections
                    system.store.drop_all()
                system.close()
            if temp is not None:
                shutil.rmtree(temp, ignore_errors=True)

    return manager, close


detect_episodes = _detected
"""``detect_episodes(settings, features, headlines, fear_greed)``: the market events and
news shocks of ``features`` as episodes of ``settings.agent.trader_id`` (what
:func:`build_trader_manager` gives the manager; the paper loop reuses it)."""

make_policy = _policy
"""``make_policy(settings, "rule" | "llm")``: the policy :func:`build_trader_manager`
uses. Raises :class:`ConfigError` for an unknown policy or ``llm`` without an endpoint."""

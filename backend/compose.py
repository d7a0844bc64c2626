"""The composition root: everything built from :class:`Settings`.

Only entry points (the CLI, scripts, the scheduler, the service) call this; library code
receives the built parts. Nothing here reads the clock. :func:`build_memory_system` builds
the store, the tiers, the orchestrator and the toolkit; :func:`build_trader_manager` builds
a :class:`DeepTraderManager` over them for one OHLCV frame (features, detected events,
news from ``data.headlines_path``/``data.fear_greed_path``, the policy).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from backend.agents import DEFAULT_CONSTRAINTS_NOTE, DeepTraderManager, MemorySystem
from backend.agents.memory import PersonaManager
from backend.agents.policies import LLMPolicy, Policy, RulePolicy
from backend.config import Settings
from backend.data import Fill, OHLCVFrame, make_exchange
from backend.embeddings import Embedder, build_embedder
from backend.errors import ConfigError
from backend.llm import LLMClient, build_llm
from backend.memory import (
    EpisodicMemory,
    FearGreedIndex,
    FeatureFrame,
    HeadlineIndex,
    News,
    WorkingMemory,
    compute_features,
    detect_market_events,
    detect_news_shocks,
    events_to_episodes,
    load_news,
)
from backend.memory.conversation import ConversationMemory
from backend.memory.hierarchical import HierarchicalMemory
from backend.memory.models import Episode
from backend.storage import KhalaStore, open_store
from backend.text.tokens import load_encoding
from backend.tools.memory_toolkit import MemoryToolkit

__all__ = [
    "MemorySystem",
    "build_exchange",
    "build_memory_system",
    "build_trader_manager",
    "detected_episodes",
    "make_manager",
    "make_policy",
]


if TYPE_CHECKING:
    import ccxt


def build_exchange(
    settings: Settings,
    exchange_id: str | None = None,
    *,
    api_url: str | None = None,
    credentials: bool = True,
) -> ccxt.Exchange:
    """The ccxt exchange of ``settings.exchange`` (or ``exchange_id``), its API at
    ``api_url`` or ``exchange.api_base_url`` when set, its timeout ``exchange.timeout_ms``.
    With ``credentials``, the environment's ``SENTINEL_EXCHANGE__API_KEY`` / ``__SECRET``
    are set when given, and only on the configured exchange (``exchange.id``): a key is
    never sent to another one. Public data needs none (``credentials=False``: ccxt then
    makes no signed request). Raises :class:`~backend.errors.ExchangeError` for an
    unknown exchange id or a bad URL."""
    cfg = settings.exchange
    chosen = exchange_id or cfg.id
    ex = make_exchange(chosen, api_base_url=api_url or cfg.api_base_url, timeout_ms=cfg.timeout_ms)
    if not credentials or chosen != cfg.id:
        return ex
    if cfg.api_key is not None:
        ex.apiKey = cfg.api_key.get_secret_value()
    if cfg.secret is not None:
        ex.secret = cfg.secret.get_secret_value()
    return ex


def build_memory_system(
    settings: Settings,
    *,
    embedder: Embedder | None = None,
    store: KhalaStore | None = None,
    llm: LLMClient | None = None,
) -> MemorySystem:
    """Build store, tiers, orchestrator and toolkit as configured.

    ``embedder``/``store``/``llm`` override what the settings would build (tests, sharing
    one store between systems). The LLM is used for persona text when configured; the
    offline default is the deterministic rules. Raises the errors of the parts it builds
    (:class:`~backend.errors.EmbeddingModelError`, :class:`~backend.errors.StoreError`, ...).
    """
    if store is None:
        store = open_store(
            settings.store, embedder if embedder is not None else build_embedder(settings.embedding)
        )
    llm = llm if llm is not None else build_llm(settings.llm)
    persona = PersonaManager(store, llm=llm)
    episodic = EpisodicMemory(store, settings=settings.memory)
    # a throwaway (memory backend) store cannot be resumed: its working windows stay in memory
    throwaway = store.backend == "memory"
    working = WorkingMemory(
        store,
        settings=settings.memory,
        episodic=episodic,
        state_path=None if throwaway else settings.working_state_file,
    )
    conversation = ConversationMemory(
        store, settings=settings.memory.conversation, persona=persona, episodic=episodic
    )
    memory = HierarchicalMemory(
        persona=persona,
        working=working,
        episodic=episodic,
        settings=settings.memory,
        conversation=conversation,
    )
    toolkit = MemoryToolkit(
        memory, working=working, episodic=episodic, persona=persona, conversation=conversation
    )
    return MemorySystem(store, persona, working, episodic, memory, toolkit, llm)


def detected_episodes(
    settings: Settings,
    features: FeatureFrame,
    headlines: HeadlineIndex | None,
    fear_greed: FearGreedIndex | None,
) -> list[Episode]:
    """The episodes of the market events and news shocks detected on ``features`` (with
    ``headlines`` when given) under ``settings.memory.detectors``, for the trader
    ``settings.agent.trader_id``: what :func:`make_manager` gives the decision loop."""
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


def make_manager(
    settings: Settings,
    *,
    features: FeatureFrame,
    news: News,
    system: MemorySystem | None,
    policy: Policy,
    seed_note: str | None = DEFAULT_CONSTRAINTS_NOTE,
    fills: Sequence[Fill] = (),
    episodes: Sequence[Episode] | None = None,
) -> DeepTraderManager:
    """The :class:`DeepTraderManager` of ``settings.agent`` over ``features`` (the one
    place it is wired, for a backtest, each paper step and the benchmarks): the market
    events and news shocks of ``features`` are detected (:func:`detected_episodes`;
    ``episodes`` given: those instead, e.g. a benchmark's window of them), ``news`` is
    what the context shows, and ``system`` (None: memory off) is the memory it reads and
    writes. ``seed_note`` and ``fills`` as in :func:`build_trader_manager`."""
    if episodes is None:
        episodes = detected_episodes(settings, features, news.headlines, news.fear_greed)
    return DeepTraderManager(
        features=features,
        policy=policy,
        agent=settings.agent,
        system=system,
        episodes=episodes,
        headlines=news.headlines,
        fear_greed=news.fear_greed,
        seed_note=seed_note,
        min_trade_fraction=settings.backtest.min_trade_fraction,
        fills=fills,
    )


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
    fills: Sequence[Fill] = (),
) -> tuple[DeepTraderManager, Callable[[], None]]:
    """Compose a :class:`DeepTraderManager` for ``ohlcv``; returns it and a close function.

    Features are computed once for the whole frame; headlines and Fear & Greed (the
    ``data.headlines_path``/``data.fear_greed_path`` of ``data_dir``) are loaded when
    present; market events and news shocks are detected. With ``memory``, the memory
    system is built on a durable store at ``store_path`` (``store.backend=chroma``,
    embedded, its working windows in ``store_path``), or when it is None on a throwaway
    one (``store.backend=memory``: everything in process memory, nothing on disk).
    ``embedder`` overrides the configured one. Persona notes are read by the offline
    rules (deterministic), the policy uses the configured LLM. ``seed_note`` (default
    :data:`DEFAULT_CONSTRAINTS_NOTE`) is recorded as of the first bar when the persona is
    empty. ``fills``: the trader's (``agent.trader_id``) fills; with memory on the persona
    is refreshed from those known at each bar (:class:`DeepTraderManager`). The close
    function writes what is buffered and closes the memory (idempotent).

    Raises :class:`ConfigError` for ``policy="llm"`` without ``llm.base_url``/``llm.model``
    or an unknown policy, :class:`DataError` for unreadable data files, and the memory
    system's errors.
    """
    chosen = _policy(settings, policy)
    features = compute_features(
        ohlcv, breakout_lookback_bars=settings.memory.detectors.breakout_lookback_bars
    )
    news = load_news(settings.data, data_dir)
    agent = settings.agent.model_copy(update={"memory": memory, "policy": policy})
    system: MemorySystem | None = None
    if memory:
        system_settings = settings.offline(store_dir=store_path)
        load_encoding()  # prompt token counts: the tokenizer loads here, not at bar 1
        system = build_memory_system(
            system_settings, embedder=embedder or build_embedder(settings.embedding)
        )
    manager = make_manager(
        settings.model_copy(update={"agent": agent}),
        features=features,
        news=news,
        system=system,
        policy=chosen,
        seed_note=seed_note,
        fills=fills,
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
                system.close()

    return manager, close


make_policy = _policy
"""``make_policy(settings, "rule" | "llm")``: the policy :func:`build_trader_manager`
uses. Raises :class:`ConfigError` for an unknown policy or ``llm`` without an endpoint."""

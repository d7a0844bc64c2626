"""Hierarchical memory: persona, working and episodic tiers retrieved together per decision.

O-Mem (arXiv 2511.13593) retrieves persona memory, working memory and episodic memory in
parallel before each response and concatenates them; MemoryOS layers short-, mid- and
long-term stores the same way. Here, before each trading decision of a trader on a symbol
at ``as_of``:

1. the episodic query is the caller's, or :meth:`MarketSnapshot.situation` of the latest
   snapshot in working memory ("what happened the last time things looked like this");
   a caller that gives the bar's market ``state`` (the decision loop) gets instead the
   episodes whose state was nearest and whose outcome is known
   (:meth:`EpisodicMemory.recall_by_state`): what followed depends on the market's
   state, not on how a description was worded;
2. the three tiers are fetched concurrently (persona: the profile as known at ``as_of``;
   working: the recent market window and the agent's account, its drawdown from the
   high-water mark; episodic: scored recall): the persona and working
   tiers go to a thread pool while the calling thread runs the episodic recall, the
   slowest; a tier no worker has started by then is run by the caller (work stealing).
   In process, the tiers are GIL-bound Python and persona and working take ~15 us, so
   waiting for a woken thread was pure cost: over a month of 1h decisions (744, best of
   5 runs) handing all three to the pool ran 0.21 s slower than fetching them one after
   another, this scheme 0.10 s. Tiers that wait on the network (a chroma server, an
   LLM) overlap; chroma calls on one store do not (its backend's lock:
   :mod:`backend.storage._chroma_backend`);
3. the results are merged into one typed :class:`MemoryContext` with per-tier timings,
   and rendered within the token budget by :func:`backend.memory.context.render_context`.

Every tier is read with the same ``as_of``: nothing after it can be returned.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import datetime
from typing import Any, Protocol, TypeVar

from backend.config import MemorySettings
from backend.errors import SentinelError
from backend.memory.context import render_fallback
from backend.memory.models import (
    AccountState,
    EpisodeType,
    MarketSnapshot,
    MemoryContext,
    PersonaProfile,
    RecalledMessage,
    RenderedContext,
    ScoredEpisode,
    Tier,
)

__all__ = [
    "ALL_TIERS",
    "ConversationSource",
    "EpisodicSource",
    "HierarchicalMemory",
    "PersonaSource",
    "WorkingSource",
]

log = logging.getLogger("backend.memory")
ALL_TIERS: tuple[Tier, ...] = ("persona", "working", "episodic")
T = TypeVar("T")


class PersonaSource(Protocol):
    """What the persona tier must answer (``PersonaManager``)."""

    def get_profile(self, trader_id: str, as_of: datetime) -> PersonaProfile | None: ...

    def render_profile(self, profile: PersonaProfile) -> str: ...


class WorkingSource(Protocol):
    """What the working tier must answer (``WorkingMemory``)."""

    def current(
        self, trader_id: str, symbol: str, *, as_of: datetime, topic: str | None = None
    ) -> list[MarketSnapshot]: ...

    def account(
        self, trader_id: str, symbol: str, *, timeframe: str, as_of: datetime
    ) -> AccountState | None: ...


class EpisodicSource(Protocol):
    """What the episodic tier must answer (``EpisodicMemory``)."""

    def recall(
        self,
        trader_id: str,
        query_text: str,
        *,
        as_of: datetime,
        top_k: int,
        symbol: str | None = None,
        event_types: Sequence[EpisodeType] | None = None,
    ) -> list[ScoredEpisode]: ...

    def recall_by_state(
        self,
        trader_id: str,
        symbol: str,
        state: dict[str, float],
        *,
        as_of: datetime,
        top_k: int,
        horizon: str | None = None,
    ) -> list[ScoredEpisode]: ...


class ConversationSource(Protocol):
    """What the conversation (read with the working tier) must answer
    (:class:`~backend.memory.conversation.ConversationMemory`)."""

    def has_messages(self, trader_id: str, *, as_of: datetime) -> bool: ...

    def recall(
        self, trader_id: str, query: str, *, as_of: datetime, top_k: int = 10
    ) -> list[RecalledMessage]: ...


class HierarchicalMemory:
    """The three tiers behind one retrieval call. Build the tiers at the composition root.

    ``max_workers`` threads serve the tiers (ONNX inference and network waits release the
    GIL and overlap; chroma calls on one store take turns: module doc, step 2). Call
    :meth:`close` (or use as a context manager) to stop them.
    """

    def __init__(
        self,
        *,
        persona: PersonaSource,
        working: WorkingSource,
        episodic: EpisodicSource,
        settings: MemorySettings,
        conversation: ConversationSource | None = None,
        max_workers: int = 3,
    ) -> None:
        self.persona = persona
        self.working = working
        self.episodic = episodic
        self.conversation = conversation
        self.settings = settings
        self._pool = ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="memory")

    def __enter__(self) -> HierarchicalMemory:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._pool.shutdown(wait=True)

    def retrieve(
        self,
        trader_id: str,
        symbol: str | None,
        *,
        as_of: datetime,
        query: str | None = None,
        top_k: int | None = None,
        tiers: Sequence[Tier] = ALL_TIERS,
        parallel: bool = True,
        message_top_k: int | None = None,
        state: dict[str, float] | None = None,
        horizon: str | None = None,
        timeframe: str | None = None,
    ) -> MemoryContext:
        """Fetch the requested tiers for one decision; see the module doc for the steps.

        ``top_k`` episodes (default ``memory.episodic_top_k``). With ``parallel=False``
        the tiers run one after another (for the speed-up benchmark). ``symbol=None``
        (an agent's recall not tied to one market): episodes of every symbol, and no
        working tier (working memory is kept per symbol). A tier that fails
        with a :class:`SentinelError` is reported in ``MemoryContext.errors`` and the
        others are still returned; any other exception propagates. With ``working``
        among ``tiers`` (with or without a symbol) and a conversation configured, the
        ``message_top_k`` (default ``memory.conversation.context_messages``) messages that
        best answer the query are recalled into ``MemoryContext.messages``. ``state``
        (the bar's feature values, with a ``symbol``): episodes by nearest market state
        with an outcome over ``horizon`` (e.g. ``"4d"``; any when None) instead of by
        the query's text (step 1). ``timeframe`` (with a ``symbol`` and the working tier):
        the account of the agent's loop on that symbol and timeframe
        (``MemoryContext.account``).
        """
        started = time.perf_counter()
        wants_messages = "working" in tiers
        k = top_k or self.settings.episodic_top_k
        timings: dict[str, float] = {}
        errors: dict[str, str] = {}
        results: dict[Tier, Any] = {}
        if symbol is None:
            tiers = [tier for tier in tiers if tier != "working"]
            query = query or "market"
        market = symbol or ""
        if query is None:  # the latest market state is the query: fetch working memory first
            results["working"] = self._timed(
                "working",
                timings,
                errors,
                list,
                lambda: self.working.current(trader_id, market, as_of=as_of),
            )
            latest = results["working"][-1:] if results["working"] else []
            query = latest[0].situation() if latest else f"{symbol} market"
        episodic_query = query
        calls: dict[Tier, Callable[[], Any]] = {
            "persona": lambda: self.persona.get_profile(trader_id, as_of),
            "working": lambda: self.working.current(trader_id, market, as_of=as_of),
            "episodic": (
                lambda: self.episodic.recall(
                    trader_id, episodic_query, as_of=as_of, top_k=k, symbol=symbol
                )
            )
            if state is None or symbol is None
            else lambda: self.episodic.recall_by_state(
                trader_id, symbol, state, as_of=as_of, top_k=k, horizon=horizon
            ),
        }
        defaults: dict[Tier, Callable[[], Any]] = {
            "persona": lambda: None,
            "working": list,
            "episodic": list,
        }
        pending = [tier for tier in tiers if tier not in results]
        if parallel and len(pending) > 1:
            # the calling thread fetches the episodic tier itself (the slowest) while
            # the pool fetches the others (module doc, step 2)
            inline: Tier = "episodic" if "episodic" in pending else pending[-1]
            futures: dict[Tier, Future[Any]] = {
                tier: self._pool.submit(
                    self._timed, tier, timings, errors, defaults[tier], calls[tier]
                )
                for tier in pending
                if tier != inline
            }
            results[inline] = self._timed(inline, timings, errors, defaults[inline], calls[inline])
            for tier, fut in futures.items():
                # a tier no worker has started yet is run here (work stealing): the caller
                # never waits for a thread to wake up only to do microseconds of work
                stolen = fut.cancel()
                results[tier] = (
                    self._timed(tier, timings, errors, defaults[tier], calls[tier])
                    if stolen
                    else fut.result()
                )
        else:
            for tier in pending:
                results[tier] = self._timed(tier, timings, errors, defaults[tier], calls[tier])
        messages: list[RecalledMessage] = []
        source = self.conversation
        n_messages = message_top_k or self.settings.conversation.context_messages
        if source is not None and wants_messages:
            # the conversation is working memory (O-Mem), recalled by the decision's query;
            # a trader who never spoke costs one read by id (has_messages)
            messages = self._timed(
                "conversation", timings, errors, list,
                lambda: source.recall(
                    trader_id, episodic_query, as_of=as_of, top_k=n_messages,
                ) if source.has_messages(trader_id, as_of=as_of) else [],
            )  # fmt: skip
        account = None
        if "working" in tiers and symbol is not None and timeframe is not None:
            account = self._timed(
                "account", timings, errors, lambda: None,
                lambda: self.working.account(trader_id, symbol, timeframe=timeframe, as_of=as_of),
            )  # fmt: skip
        timings["total"] = (time.perf_counter() - started) * 1000
        return MemoryContext(
            trader_id=trader_id,
            symbol=symbol,
            as_of=as_of,
            query=query,
            persona=results.get("persona"),
            working=results.get("working", []) if "working" in tiers else [],
            account=account,
            episodes=results.get("episodic", []),
            messages=messages,
            timings_ms={key: round(value, 3) for key, value in timings.items()},
            errors=errors,
        )

    def build_context(
        self,
        trader_id: str,
        symbol: str,
        *,
        as_of: datetime,
        query: str | None = None,
        budget: int | None = None,
        top_k: int | None = None,
        tiers: Sequence[Tier] = ALL_TIERS,
        state: dict[str, float] | None = None,
        horizon: str | None = None,
        timeframe: str | None = None,
    ) -> tuple[MemoryContext, RenderedContext]:
        """Retrieve ``tiers`` (in parallel; ``state``, ``horizon`` and ``timeframe`` as in
        :meth:`retrieve`) and render within ``budget`` tokens (default
        ``memory.token_budget``). When the trader's hard constraints alone do not fit
        the budget (:class:`~backend.errors.BudgetError`), the context is rendered
        without the persona and ``errors["context"]`` says why: a decision loop goes on
        (the constraints are still enforced in code) and reports it as a memory error."""
        ctx = self.retrieve(
            trader_id,
            symbol,
            as_of=as_of,
            query=query,
            top_k=top_k,
            tiers=tiers,
            state=state,
            horizon=horizon,
            timeframe=timeframe,
        )
        # rendered at every decision: ~14 us for a real trader's profile (measured
        # 2026-12-06), not worth a cache (one per (trader, version) was removed)
        summary = self.persona.render_profile(ctx.persona) if ctx.persona is not None else None
        limit = budget or self.settings.token_budget
        return render_fallback(ctx, budget=limit, persona_summary=summary)

    @staticmethod
    def _timed(
        tier: str,
        timings: dict[str, float],
        errors: dict[str, str],
        default: Callable[[], T],
        call: Callable[[], T],
    ) -> T:
        started = time.perf_counter()
        try:
            return call()
        except SentinelError as exc:
            log.warning("memory tier %s failed: %s", tier, exc)
            errors[tier] = f"{type(exc).__name__}: {exc}"
            return default()
        finally:
            timings[tier] = (time.perf_counter() - started) * 1000

"""The memory's Python operations (:class:`MemoryOperations`): what
:class:`~backend.tools.memory_toolkit.MemoryToolkit` offers callers in process and exposes
as tools. Every call names the trader and ``as_of``."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from backend.errors import StoreError, ToolError
from backend.memory.conversation import ConversationMemory, RecordedMessages
from backend.memory.hierarchical import ALL_TIERS, HierarchicalMemory
from backend.memory.models import (
    ChatMessage,
    Episode,
    EpisodeType,
    MarketSnapshot,
    MemoryContext,
    Outcome,
    PersonaChange,
    PersonaProfile,
    RenderedContext,
    Tier,
)
from backend.storage.models import stable_id
from backend.tools._tool_io import recall_payload
from backend.tools._writers import (
    DECISION_IMPORTANCE,
    EpisodicWriter,
    PersonaWriter,
    WorkingWriter,
    check_memory_ids,
    decision_episode,
    write_episode_once,
)
from backend.types import END_OF_TIME, Action, to_utc

__all__ = ["MemoryOperations"]


class MemoryOperations:
    """Memory operations for one process; every call names the trader and ``as_of``."""

    def __init__(
        self,
        memory: HierarchicalMemory,
        *,
        working: WorkingWriter,
        episodic: EpisodicWriter,
        persona: PersonaWriter,
        conversation: ConversationMemory | None = None,
    ) -> None:
        self.memory = memory
        self._working = working
        self._episodic = episodic
        self._persona = persona
        self._conversation = conversation

    def record_market_context(self, snapshot: MarketSnapshot) -> None:
        """Refresh working memory with the snapshot of a closed bar (its ``as_of``)."""
        self._working.observe(snapshot)

    def record_event(
        self,
        trader_id: str,
        *,
        symbol: str,
        event_type: EpisodeType,
        description: str,
        importance: float,
        as_of: datetime,
        state: dict[str, float] | None = None,
        event_id: str | None = None,
    ) -> str:
        """Store an episode that happened at ``as_of``; returns its id, derived from the
        caller's ``event_id`` when given (a retry at a later clock is then the same
        event: :func:`~backend.tools._writers.write_episode_once`), else from the UTC
        instant (``+01:00`` and ``Z`` of one instant are one event)."""
        as_of = to_utc(as_of)
        episode = Episode(
            id=stable_id("event", trader_id, symbol, event_type, as_of.isoformat(), description)
            if event_id is None
            else stable_id("event-key", trader_id, event_id),
            trader_id=trader_id,
            symbol=symbol,
            event_type=event_type,
            occurred_at=as_of,
            description=description,
            importance=importance,
            state=state or {},
        )
        return write_episode_once(self._episodic, episode, as_of=as_of, key=event_id, what="event")

    def record_decision(
        self,
        trader_id: str,
        *,
        symbol: str,
        action: Action,
        size: float,
        rationale: str,
        memory_ids: Sequence[str],
        as_of: datetime,
        market_state: str = "",
        importance: float = DECISION_IMPORTANCE,
        decision_id: str | None = None,
    ) -> str:
        """Store a decision as a ``decision`` episode linked to the memories it used.
        One decision per trader, symbol and time (the episode id), or per trader, symbol
        and the caller's ``decision_id``: the same decision again (a retry; with an id,
        at a later clock too) is a no-op, another one is a :class:`ToolError` (a client
        with a fixed clock would otherwise overwrite the first). Every one of
        ``memory_ids`` must be a memory known at ``as_of`` (an id ``recall`` returned):
        else a :class:`ToolError` names those that are not, and nothing is written."""
        as_of = to_utc(as_of)  # one instant, one id, whatever its offset
        check_memory_ids(
            trader_id, memory_ids, as_of=as_of, episodic=self._episodic,
            conversation=self._conversation,
            persona_version=lambda: getattr(
                self.memory.persona.get_profile(trader_id, as_of), "version", None
            ),
        )  # fmt: skip
        episode = decision_episode(
            trader_id,
            symbol=symbol,
            action=action,
            size=size,
            rationale=rationale,
            memory_ids=memory_ids,
            as_of=as_of,
            market_state=market_state,
            importance=importance,
            key=decision_id,
        )
        return write_episode_once(
            self._episodic, episode, as_of=as_of, key=decision_id, what="decision"
        )

    def record_outcome(
        self,
        trader_id: str,
        episode_id: str,
        *,
        horizon: str,
        market_return: float,
        pnl: float | None,
        as_of: datetime,
    ) -> Outcome:
        """Attach an outcome (resolved at ``as_of``) to an episode; importance follows.
        Returns the outcome the episode holds over ``horizon``: one outcome per episode
        and horizon, so the same one again (a retry) returns the first, with its
        ``resolved_at``. Raises :class:`ToolError` when the episode has a different one
        over that horizon (nothing is written: the first one stands), and the memory's
        errors (an unknown episode, a horizon not yet passed)."""
        as_of = to_utc(as_of)
        outcome = Outcome(horizon=horizon, market_return=market_return, pnl=pnl, resolved_at=as_of)
        self._episodic.record_outcome(trader_id, episode_id, outcome, as_of=as_of)
        held = self._episodic.get(trader_id, [episode_id], as_of=as_of, horizon=horizon)
        stored = held[0].outcome if held else None
        if stored is None:  # logged as known from a later time (a past as_of on a store)
            raise ToolError(
                f"record_outcome: episode {episode_id!r} has a {horizon} outcome recorded "
                "as of a later time: the first one stands"
            )
        if (stored.market_return, stored.pnl) != (market_return, pnl):
            raise ToolError(
                f"record_outcome: episode {episode_id!r} already has a {horizon} outcome "
                f"(market_return {stored.market_return}, pnl {stored.pnl}, resolved "
                f"{stored.resolved_at.isoformat()}): the first one stands"
            )
        return stored

    def record_note(
        self, trader_id: str, text: str, *, as_of: datetime, note_id: str | None = None
    ) -> list[PersonaChange]:
        """The trader's own words: routed into the persona (ADD / UPDATE / DELETE / IGNORE)."""
        return list(self._persona.update_from_text(trader_id, text, as_of=as_of, note_id=note_id))

    def record_messages(
        self, trader_id: str, messages: Sequence[ChatMessage], *, as_of: datetime
    ) -> RecordedMessages:
        """Store a conversation's messages (each with its id, speaker, session, time and
        optional image caption) as known at ``as_of``: recallable with their ids, the
        trader's words read into the persona (message ids as evidence), the events they
        tell of written as episodes (:mod:`backend.memory.conversation`). Raises
        :class:`~backend.errors.ToolError` when no conversation memory is configured,
        :class:`~backend.errors.LookAheadError` for a message after ``as_of``, and the
        store's errors."""
        if self._conversation is None:
            raise ToolError("no conversation memory is configured")
        return self._conversation.record(trader_id, messages, as_of=as_of)

    def message_conflicts(
        self, trader_id: str, messages: Sequence[ChatMessage]
    ) -> list[tuple[int, str]]:
        """Before :meth:`record_messages`: ``(index, reason)`` of each message that would
        not record cleanly on what the store holds, whatever its time (an id stored in
        another session or with another time, speaker or text, a new message earlier than
        its session's newest;
        :meth:`~backend.memory.conversation.ConversationMemory.conflicts`). Raises
        :class:`~backend.errors.ToolError` when no conversation memory is configured."""
        if self._conversation is None:
            raise ToolError("no conversation memory is configured")
        return self._conversation.conflicts(trader_id, messages)

    def record_message(
        self, trader_id: str, message: ChatMessage, *, as_of: datetime | None = None
    ) -> RecordedMessages:
        """:meth:`record_messages` of one message (``as_of`` default: its time)."""
        return self.record_messages(trader_id, [message], as_of=as_of or message.time)

    def _stored_messages(self, trader_id: str, ids: list[str]) -> dict[str, ChatMessage]:
        """Stored messages among ``ids``, whatever their time (a writer's read)."""
        if self._conversation is None:
            return {}
        return self._conversation.messages(trader_id, ids, as_of=END_OF_TIME)

    def get_trader_profile(self, trader_id: str, *, as_of: datetime) -> PersonaProfile | None:
        return self.memory.persona.get_profile(trader_id, as_of)

    def recall(
        self,
        trader_id: str,
        query: str,
        *,
        symbol: str | None,
        as_of: datetime,
        tiers: Sequence[Tier] = ALL_TIERS,
        top_k: int = 5,
    ) -> dict[str, Any]:
        """Memories of the requested tiers known at ``as_of``, as JSON-ready data.

        Returns ``{"as_of", "hits", "persona", "context", "errors"}``.
        ``hits`` is every tier in one list, each memory once, each ``{"id", "tier", "text",
        "score"}`` (``score``: the episodic score in [0, 1] or a message's fused score,
        ``None`` for the persona and working tiers): the profile first
        (``persona:v<version>``; ``persona`` holds its attributes), then the ``top_k``
        newest snapshots of the market of ``symbol``, newest first (none when ``symbol``
        is ``None``), then, with ``working`` among ``tiers``, the ``top_k`` messages that
        best answer ``query`` (tier ``conversation``, id ``message:<id>``, with
        ``message_id``, ``speaker``, ``session``, ``time``; best first), then at most
        ``top_k`` episodes best first (of every symbol when ``symbol`` is ``None``); a
        message's or episode's text over 2,000 characters is cut there, with
        ``text_truncated`` and ``text_chars``.
        ``errors`` names a tier that failed (the others are still returned); a recall
        that failed and found nothing in any tier is a :class:`~backend.errors.StoreError`
        naming each failure, not an empty answer (an MCP client gets ``isError``: a
        store gone is not "no memories"). ``context``
        is what an answering model gets: ``{"text", "tokens", "message_ids"}``, the best
        ``memory.conversation.context_messages`` messages (whatever ``top_k``) within
        ``memory.token_budget`` tokens (tiktoken cl100k_base;
        :func:`backend.memory.conversation.render_messages`).
        """
        wanted = max(top_k, self.memory.settings.conversation.context_messages)
        ctx = self.memory.retrieve(
            trader_id, symbol, as_of=as_of, query=query, top_k=top_k, tiers=tiers,
            message_top_k=wanted,
        )  # fmt: skip
        _raise_if_all_failed(ctx, what="recall")
        persona = ctx.persona if "persona" in tiers else None
        text = self.memory.persona.render_profile(persona) if persona is not None else None
        return recall_payload(ctx, persona, text, self.memory.settings, top_k=top_k)

    def build_decision_context(
        self,
        trader_id: str,
        symbol: str,
        *,
        as_of: datetime,
        query: str | None = None,
        budget: int | None = None,
    ) -> RenderedContext:
        """The memory section of the decision prompt (parallel retrieval, token budget),
        with the sources that failed in ``errors``; a :class:`StoreError` when nothing
        was read and something failed (a store gone is not an empty memory: a reviewer's
        MCP client got a bare header and ``isError`` false with the chroma server down)."""
        ctx, rendered = self.memory.build_context(
            trader_id, symbol, as_of=as_of, query=query, budget=budget
        )
        _raise_if_all_failed(ctx, what="build_decision_context")
        return rendered


def _raise_if_all_failed(ctx: MemoryContext, *, what: str) -> None:
    """A :class:`StoreError` when a retrieval read nothing and a source failed: the
    caller (an MCP client, an agent) must see a failure, not "no memories"."""
    if ctx.errors and not (ctx.persona or ctx.working or ctx.episodes or ctx.messages):
        failed = "; ".join(f"{source}: {error}" for source, error in ctx.errors.items())
        raise StoreError(f"{what} found nothing and failed ({failed})")

"""Ingest a LoCoMo conversation through the product: ``MemoryToolkit.record_messages``.

Each conversation is one tenant (``trader_id`` = its ``sample_id``) of the memory system
:func:`backend.compose.build_memory_system` builds; every session is recorded as one
call, ``as_of`` = the session's date-time, in session order, as a live agent would
have recorded it. A turn is a :class:`~backend.memory.models.ChatMessage` whose ``id``
is its dialog id (``D3:7``), so the product's recall returns dialog ids directly. What
the product writes for them (messages, windows, sessions, persona facts, conversation
events) is :mod:`backend.memory.conversation`'s business, not the evaluation's.
"""

from __future__ import annotations

from dataclasses import dataclass

from backend.eval.locomo_models import LocomoConversation, LocomoTurn
from backend.memory.models import ChatMessage
from backend.tools.memory_toolkit import MemoryToolkit

__all__ = ["IngestStats", "ingest_conversation", "turn_message"]


@dataclass(frozen=True)
class IngestStats:
    """What one conversation's ingestion wrote."""

    turns: int
    sessions: int
    events: int
    persona_changes: int


def turn_message(turn: LocomoTurn) -> ChatMessage:
    """The chat message of a dialog turn (id = its dialog id, session = its number)."""
    return ChatMessage(
        id=turn.dia_id,
        speaker=turn.speaker,
        text=turn.text,
        time=turn.at,
        session=str(turn.session),
        image_caption=turn.image_caption,
    )


def ingest_conversation(toolkit: MemoryToolkit, conversation: LocomoConversation) -> IngestStats:
    """Record ``conversation`` session by session (module doc). Raises the store's errors."""
    by_session: dict[int, list[LocomoTurn]] = {}
    for turn in conversation.turns:
        by_session.setdefault(turn.session, []).append(turn)
    events = changes = 0
    for number in sorted(by_session):
        done = toolkit.record_messages(
            conversation.sample_id,
            [turn_message(t) for t in by_session[number]],
            as_of=conversation.sessions[number],
        )
        events += len(done.events)
        changes += done.persona_changes
    return IngestStats(
        turns=len(conversation.turns),
        sessions=len(by_session),
        events=events,
        persona_changes=changes,
    )

"""Ingest a LoCoMo conversation into the memory module, session by session.

Each conversation is one tenant (``trader_id`` = its ``sample_id``) of a
:class:`~backend.storage.KhalaStore`; every write carries ``as_of`` = the session's
date-time, in session order, as a live agent would have written it. Per session:

- **turn records** (``kind="turn"``): one per dialog turn, text ``Speaker: words [shares
  <photo caption>]`` (:meth:`LocomoTurn.render`), metadata ``dia_id``, ``speaker``,
  ``session``, ``position``. The flat methods search these;
- **episodes** (the episodic tier, :class:`~backend.memory.EpisodicMemory`): one
  ``context`` episode per turn holding the turn with up to :data:`EPISODE_RADIUS` turns
  before and after it in the same session (a window of the dialog: what was said around
  it), ``symbol`` = :data:`DIALOGUE_SYMBOL`, ``sources`` = the window's dialog ids
  (centre first), ``occurred_at`` = the session time;
- **a session record** (``kind="session"``, the topic level): the whole session's text
  for BM25, and as its vector the normalised mean of its turn vectors (MiniLM truncates
  long texts at 256 tokens, so embedding the text would see only its start); metadata
  ``session``, ``dia_ids`` (comma-separated), ``date``;
- **persona facts** (:class:`~backend.agents.memory.PersonaManager`): each speaker is a
  persona tenant (:func:`persona_tenant`) and each of their turns goes through
  :meth:`PersonaManager.update_from_text` with ``note_id`` = the dialog id, so every fact
  (goals, stated preferences) carries the turns it came from.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime

import numpy as np

from backend.agents.memory import PersonaManager
from backend.eval.locomo_models import LocomoConversation, LocomoTurn
from backend.memory import EpisodicMemory
from backend.memory.models import Episode
from backend.storage import KhalaStore, MemoryRecord

__all__ = [
    "DIALOGUE_SYMBOL",
    "EPISODE_RADIUS",
    "SESSION_KIND",
    "TURN_KIND",
    "IngestStats",
    "LocomoMemory",
    "episode_id",
    "ingest_conversation",
    "persona_tenant",
    "session_id",
    "turn_id",
]

TURN_KIND = "turn"
SESSION_KIND = "session"
DIALOGUE_SYMBOL = "dialogue"
EPISODE_RADIUS = 2
"""An episode holds its turn and up to 2 turns either side (measured best of 1 and 2)."""


def turn_id(dia_id: str) -> str:
    return f"turn:{dia_id}"


def episode_id(dia_id: str) -> str:
    return f"episode:{dia_id}"


def session_id(number: int) -> str:
    return f"session:{number}"


def persona_tenant(conversation_id: str, speaker: str) -> str:
    """The persona tenant of one speaker: ``<conversation>.<speaker slug>``."""
    slug = re.sub(r"[^a-z0-9]+", "-", speaker.lower()).strip("-") or "speaker"
    return f"{conversation_id}.{slug}"[:128]


@dataclass(frozen=True)
class LocomoMemory:
    """The memory parts one evaluation writes to and reads from (built by the caller)."""

    store: KhalaStore
    episodic: EpisodicMemory
    persona: PersonaManager


@dataclass(frozen=True)
class IngestStats:
    """What one conversation's ingestion wrote: counts, and persona facts per speaker."""

    turns: int
    episodes: int
    sessions: int
    persona_changes: dict[str, int]


def _turn_record(conversation_id: str, turn: LocomoTurn) -> MemoryRecord:
    return MemoryRecord(
        id=turn_id(turn.dia_id),
        trader_id=conversation_id,
        text=turn.render(),
        created_at=turn.at,
        kind=TURN_KIND,
        metadata={
            "dia_id": turn.dia_id,
            "speaker": turn.speaker,
            "session": turn.session,
            "position": turn.position,
        },
    )


def _episodes(conversation_id: str, turns: list[LocomoTurn]) -> list[Episode]:
    out = []
    for i, turn in enumerate(turns):
        window = turns[max(0, i - EPISODE_RADIUS) : i + EPISODE_RADIUS + 1]
        out.append(
            Episode(
                id=episode_id(turn.dia_id),
                trader_id=conversation_id,
                symbol=DIALOGUE_SYMBOL,
                event_type="context",
                occurred_at=turn.at,
                description=" ".join(t.render() for t in window),
                importance=0.5,
                sources=[turn.dia_id, *(t.dia_id for t in window if t is not turn)],
            )
        )
    return out


def _session_record(
    conversation_id: str, number: int, at: datetime, turns: list[LocomoTurn], vectors: np.ndarray
) -> MemoryRecord:
    mean = vectors.mean(axis=0)
    mean = mean / max(float(np.linalg.norm(mean)), 1e-12)
    return MemoryRecord(
        id=session_id(number),
        trader_id=conversation_id,
        text="\n".join(t.render() for t in turns),
        created_at=at,
        kind=SESSION_KIND,
        metadata={
            "session": number,
            "dia_ids": ",".join(t.dia_id for t in turns),
            "date": f"{at:%d %B %Y}",
        },
        embedding=[float(x) for x in mean],
    )


def ingest_conversation(memory: LocomoMemory, conversation: LocomoConversation) -> IngestStats:
    """Write ``conversation`` into ``memory`` session by session (module docstring).

    Idempotent (stable ids; the store skips unchanged records), but persona writes must
    move forward in time: ingest a conversation into a fresh persona tenant or re-ingest
    all of it. Raises the store's errors (:class:`~backend.errors.StoreError`).
    """
    cid = conversation.sample_id
    by_session: dict[int, list[LocomoTurn]] = {}
    for turn in conversation.turns:
        by_session.setdefault(turn.session, []).append(turn)
    changes: dict[str, int] = {}
    episodes = 0
    for number in sorted(by_session):
        turns = by_session[number]
        at = conversation.sessions[number]
        memory.store.upsert(cid, [_turn_record(cid, t) for t in turns], as_of=at)
        stored = memory.store.get(
            cid, [turn_id(t.dia_id) for t in turns], as_of=at, include_embeddings=True
        )
        vectors = np.asarray([r.embedding for r in stored], dtype=np.float32)
        memory.store.upsert(cid, [_session_record(cid, number, at, turns, vectors)], as_of=at)
        found = _episodes(cid, turns)
        memory.episodic.add(found, as_of=at)
        episodes += len(found)
        for turn in turns:
            tenant = persona_tenant(cid, turn.speaker)
            routed = memory.persona.update_from_text(
                tenant, turn.text, as_of=at, note_id=turn.dia_id
            )
            changes[turn.speaker] = changes.get(turn.speaker, 0) + sum(
                1 for c in routed if c.action != "IGNORE"
            )
    return IngestStats(
        turns=len(conversation.turns),
        episodes=episodes,
        sessions=len(by_session),
        persona_changes=changes,
    )

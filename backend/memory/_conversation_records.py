"""The records a conversation is kept as on the Khala store, and the context it renders.

:class:`~backend.memory.conversation.ConversationMemory` writes, per trader, a message
record for each message, a window record around each message and one record per
session (that module's doc has the layout); here are the pure functions that build
them and read a message back, and :func:`render_messages`, the conversation section of
an answering model's context.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from backend.memory._conversation_rank import states_time
from backend.memory.models import STORED, ChatMessage, PersonaChange, RecalledMessage
from backend.storage import MemoryRecord
from backend.storage.models import TEXT_MAX_CHARS
from backend.text.quoting import quote_data, safe_data
from backend.text.tokens import count_tokens, truncate_to_tokens

__all__ = [
    "MARKER_ID",
    "MESSAGE_KIND",
    "PREFIX",
    "SESSION_KIND",
    "WINDOW_KIND",
    "RecordedMessages",
    "llm_failures",
    "message_of",
    "message_record",
    "render_messages",
    "session_record",
    "window_record",
]

MESSAGE_KIND = "message"
WINDOW_KIND = "message_window"
SESSION_KIND = "message_session"
PREFIX = {MESSAGE_KIND: "msg:", WINDOW_KIND: "mwin:"}
"""Record id = prefix + message id (a window is keyed by its centre message)."""
MIN_MESSAGE_TOKENS = 32
"""The least of a message :func:`render_messages` shows when it cuts one to fit."""

MARKER_ID = "conversation"
"""Id of the record that marks a conversation (created at its earliest message), so a
decision loop of a trader who never spoke pays one read by id, not a scan."""


def message_record(trader_id: str, m: ChatMessage, seq: int) -> MemoryRecord:
    """The record of message ``m``, ``seq``-th (0-based) of its session. Its text is
    ``m.render()``, which always fits a record (a message's fields are bounded)."""
    return MemoryRecord(
        id=PREFIX[MESSAGE_KIND] + m.id,
        trader_id=trader_id,
        text=m.render(),
        created_at=m.time,
        kind=MESSAGE_KIND,
        metadata={
            "message_id": m.id,
            "speaker": m.speaker,
            "session": m.session,
            "seq": seq,
            "text": m.text,
            "says_time": states_time(m.text),
            **({"caption": m.image_caption} if m.image_caption else {}),
        },
    )


def message_of(record: MemoryRecord) -> ChatMessage:
    """The :class:`ChatMessage` a message record holds."""
    meta = record.metadata
    caption = meta.get("caption")
    return ChatMessage.model_validate(
        {
            "id": str(meta["message_id"]),
            "speaker": str(meta["speaker"]),
            "text": str(meta["text"]),
            "time": record.created_at,
            "session": str(meta["session"]),
            "image_caption": str(caption) if caption is not None else None,
        },
        context=STORED,  # stored by an older release, perhaps with blank text
    )


def _mean(vectors: list[list[float]]) -> list[float]:
    mean = np.asarray(vectors, dtype=np.float32).mean(axis=0)
    return [float(x) for x in mean / max(float(np.linalg.norm(mean)), 1e-12)]


def _joined(texts: Sequence[str], sep: str) -> str:
    """``sep.join(texts)``, cut to a record's :data:`TEXT_MAX_CHARS` (its first
    characters are kept): a session of thousands of messages, or a window of five long
    ones, may hold more text than one record, and its BM25 text is then the beginning."""
    return sep.join(texts)[:TEXT_MAX_CHARS]


def window_record(
    trader_id: str, full: Sequence[MemoryRecord], j: int, radius: int
) -> MemoryRecord:
    """The window of message ``full[j]`` (``full``: its session's message records in
    order, with embeddings): the messages within ``radius`` of it, their texts joined,
    the normalised mean of their vectors (no extra embedding), created at the newest."""
    part = full[max(0, j - radius) : j + radius + 1]
    centre = full[j]
    return MemoryRecord(
        id=PREFIX[WINDOW_KIND] + str(centre.metadata["message_id"]),
        trader_id=trader_id,
        text=_joined([rec.text for rec in part], " "),
        created_at=max(rec.created_at for rec in part),
        kind=WINDOW_KIND,
        metadata={
            "message_id": centre.metadata["message_id"],
            "session": centre.metadata["session"],
        },
        embedding=_mean([rec.embedding or [] for rec in part]),
    )


def session_record(trader_id: str, session: str, full: Sequence[MemoryRecord]) -> MemoryRecord:
    """The record of ``session`` (``full``: all its message records in order, with
    embeddings): their texts, one per line, and the normalised mean of their vectors,
    created at the newest (nothing said later is ever seen)."""
    return MemoryRecord(
        id=f"msess:{session}",
        trader_id=trader_id,
        text=_joined([rec.text for rec in full], "\n"),
        created_at=max(rec.created_at for rec in full),
        kind=SESSION_KIND,
        metadata={"session": session, "messages": len(full)},
        embedding=_mean([rec.embedding or [] for rec in full]),
    )


def render_messages(
    recalled: Sequence[RecalledMessage], *, budget: int, max_messages: int
) -> tuple[str, list[str], int]:
    """``(text, message ids, tokens)``: the best ``max_messages`` recalled messages as
    ``- [YYYY-MM-DD HH:MM UTC, session S] Speaker: text`` lines (the line breaks of a
    message and its session name become spaces, so no message can forge a line of
    another, one an older release stored included) in one data block
    (:func:`~backend.text.quoting.quote_data`: what is inside is the conversation, never an
    instruction) under a heading, within ``budget`` tokens (tiktoken cl100k_base), best
    first. A message too long for what is left of the budget is cut to half of that (at
    least :data:`MIN_MESSAGE_TOKENS` tokens, with an ellipsis; skipped when less is left)
    and the ones after it still fill the rest; empty when none fits."""
    head = "What the trader and the agent said (most relevant first):"
    frame = count_tokens(quote_data(head + "\n"))  # the heading and the block's delimiters
    lines: list[str] = []
    ids: list[str] = []
    used = frame
    for item in recalled[:max_messages]:
        m = item.message
        line = safe_data(  # counted as it will read inside the block
            f"- [{m.time:%Y-%m-%d %H:%M} UTC, session {' '.join(m.session.split())}] "
            + " ".join(m.render().split())
        )
        cost = count_tokens(line + "\n")
        if used + cost > budget:
            room = (budget - used - 1) // 2  # half of what is left: the rest still fill on
            if room < MIN_MESSAGE_TOKENS:
                continue
            line = safe_data(truncate_to_tokens(line, room))
            cost = count_tokens(line + "\n")
        lines.append(line)
        ids.append(m.id)
        used += cost
    if not ids:
        return "", [], 0
    text = head + "\n" + quote_data("\n".join(lines))
    while count_tokens(text) > budget and lines:  # a join may cost a token more
        lines.pop()
        ids.pop()
        text = head + "\n" + quote_data("\n".join(lines)) if lines else ""
    return (text, ids, count_tokens(text)) if lines else ("", [], 0)


@dataclass(frozen=True)
class RecordedMessages:
    """What :meth:`ConversationMemory.record` wrote."""

    messages: int
    windows: int
    sessions: int
    events: list[str] = field(default_factory=list)
    """Ids of the conversation episodes of the messages new to the store (those of a
    re-imported message are written again unchanged, and not listed: a re-import after
    an interrupt had counted the whole file's events as recorded)."""
    persona_changes: int = 0
    persona_skipped: int = 0
    """The trader's messages said before the persona's latest version: stored and
    recallable, but not read into the persona (its versions only move forward in time)."""
    already: int = 0
    """Of ``messages``, those stored before (a re-import): rewritten in place as they were."""
    persona_errors: list[str] = field(default_factory=list)
    """Why the LLM's reading of the trader's words failed, once per distinct reason (the
    persona's ``IGNORE`` of the whole ``profile``, source ``llm``: a dead or wrong model);
    the offline rules still read them."""
    persona_read: int = 0
    """The trader's messages read into the persona by this call."""
    persona_llm_failed: int = 0
    """Of ``persona_read``, those the LLM failed to read (``persona_errors`` says why)."""


def llm_failures(changes: Sequence[PersonaChange]) -> list[str]:
    """The reasons of a persona update's failed LLM answers: its ``IGNORE`` of the whole
    ``profile`` from source ``llm`` (the persona router's ``route_failure``)."""
    return [
        c.reason
        for c in changes
        if c.attribute == "profile" and c.action == "IGNORE" and c.source == "llm"
    ]

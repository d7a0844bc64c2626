"""The trader's runs of consecutive chat messages, in which the persona reads a lift of a
ban (:mod:`backend.agents.memory._persona_lifts`): people send a command in bursts, so
"don't" / "unban SOL" must not lift SOL. Used by
:meth:`~backend.memory.conversation.ConversationMemory.record`.
"""

from __future__ import annotations

from collections.abc import Callable, Container, Sequence
from datetime import datetime

from backend.memory._conversation_records import MESSAGE_KIND
from backend.memory.models import ChatMessage
from backend.storage import KhalaStore

__all__ = ["session_runs", "trader_runs"]


def session_runs(
    store: KhalaStore,
    trader_id: str,
    by_session: dict[str, list[ChatMessage]],
    *,
    known: Container[str],
    fence: datetime,
    is_trader: Callable[[str], bool],
    named: bool,
) -> dict[str, str]:
    """:func:`trader_runs` of each session of ``by_session`` (the new messages of a
    ``record`` call, in time order) that has a message of the trader not in ``known``
    (already stored: read before), after the session's stored messages (their metadata
    only: one read for all those sessions, as of ``fence``). Raises the store's
    errors."""
    sessions = [
        s for s, new in by_session.items()
        if any(is_trader(m.speaker) and m.id not in known for m in new)
    ]  # fmt: skip
    if not sessions:
        return {}
    rows = store.scan_metadata(
        trader_id, as_of=fence, filters={"kind": MESSAGE_KIND, "session": sessions}
    )
    rows.sort(key=lambda row: int(row[2]["seq"]))
    out: dict[str, str] = {}
    for session in sessions:
        held = [m for _, _, m in rows if m["session"] == session]
        said = [(str(m["message_id"]), str(m["speaker"]), str(m["text"])) for m in held]
        ids = {i for i, _, _ in said}
        said += [(m.id, m.speaker, m.text) for m in by_session[session] if m.id not in ids]
        out.update(trader_runs(said, is_trader, named=named))
    return out


def trader_runs(
    said: Sequence[tuple[str, str, str]], is_trader: Callable[[str], bool], *, named: bool
) -> dict[str, str]:
    """For each message ``(id, speaker, text)`` of a trader speaker in ``said`` (one
    session, in order) that follows another of theirs, the words of its run up to it:
    the consecutive messages of trader speakers before it (no other speaker's between)
    and itself, joined by line breaks. Only earlier words: a take-back sent after a
    lift ("jk") does not undo it, as in a live chat (the trader states the ban again).
    When the trader's speakers are not ``named`` (``trader_speakers`` empty) and two or
    more speakers have counted as the trader up to a message, it gets ``""``: who lifts
    a ban is not known (an agent named "bot" said "SOL is no longer banned")."""
    out: dict[str, str] = {}
    run: list[str] = []
    speakers: set[str] = set()
    for message_id, speaker, text in said:
        if not is_trader(speaker):
            run = []
            continue
        run.append(text)
        speakers.add(speaker.casefold())
        if not named and len(speakers) > 1:
            out[message_id] = ""
        elif len(run) > 1:
            out[message_id] = "\n".join(run)
    return out

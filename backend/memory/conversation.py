"""Conversation memory: what the trader says to the agent, stored and recalled.

O-Mem's (arXiv 2511.13593) first input is the user's messages: they are kept as the
working memory of the current conversation, read into the persona (facts with the
messages as evidence) and turned into episodic events (O-Mem's event records). Here,
per trader, on the same Khala store as the other tiers:

- **messages** (``kind="message"``, id ``msg:<message id>``): the text ``Speaker: words
  [shares <image caption>]``, ``created_at`` = the message's time, metadata ``message_id``,
  ``speaker``, ``session``, ``seq`` (order within its session), ``text``, ``says_time``
  (whether the text states a time, :func:`~backend.memory._conversation_rank.states_time`),
  ``caption``;
- **windows** (``kind="message_window"``, ``mwin:<id>``): a message with ``window_radius``
  messages either side in its session (what was said around it); its vector is the
  normalised mean of theirs (no extra embedding), its ``created_at`` the newest of them;
- **sessions** (``kind="message_session"``, ``msess:<session>``): the session's text for
  BM25 and the normalised mean of its messages' vectors (MiniLM truncates long texts at
  256 tokens), ``created_at`` its newest message (nothing said later is ever seen); a
  window or session longer than one record's text keeps its beginning
  (:mod:`backend.memory._conversation_records` builds the three records);
- **persona facts**: every message of the trader (not of ``agent_speakers``) goes through
  the persona's ``update_from_text`` with ``note_id`` = the message id (the evidence),
  and a lift of a ban read in the trader's run of consecutive messages up to it, never
  when two speakers could be the trader (``lift_note``:
  :func:`~backend.memory._conversation_runs.trader_runs`);
- **conversation events**: a message that tells of a liquidation, a life change or a plan
  (:func:`backend.memory._dialog.message_event`) becomes an episode (``event_type
  ="conversation"``, ``sources`` = its message id) of the asset it names, if any.

Recall (:meth:`ConversationMemory.recall`) ranks every message known at ``as_of`` by the
fusion :class:`~backend.config.ConversationSettings` describes (the design of the LoCoMo
evaluation's former ranker, now the product's only one, plus a lift of the messages of a
speaker the query names, for a question asking *when* a lift of the messages that state
a time, and a session-diverse pick of the top messages,
:mod:`backend.memory._conversation_rank`). A window or session record is stored as of its
newest message, so as of a time inside a session that went on, the records of its last
messages are not known yet: those windows' signals are then their message's own and the
session scores neutral (a reviewer's replay: small talk said later had pushed a rule
stated earlier out of the top 10; the records as they were then are not kept, so this
approximates them, never looking ahead).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import UTC, datetime

from backend.config import ConversationSettings
from backend.errors import LookAheadError, StoreError
from backend.memory._conversation_recall import MAX_TOP_K, rank_messages
from backend.memory._conversation_records import (
    MARKER_ID,
    MESSAGE_KIND,
    PREFIX,
    SESSION_KIND,
    WINDOW_KIND,
    RecordedMessages,
    llm_failures,
    message_of,
    message_record,
    render_messages,
    session_record,
    window_record,
)
from backend.memory._conversation_runs import session_runs
from backend.memory._conversation_writers import EpisodeWriter
from backend.memory._conversation_writers import PersonaWriter as PersonaWriter  # re-exported
from backend.memory._dialog import message_event
from backend.memory.models import (
    ChatMessage,
    Episode,
    RecalledMessage,
)
from backend.storage import KhalaStore, MemoryRecord
from backend.storage.models import stable_id
from backend.text.tickers import mentioned_tickers
from backend.types import END_OF_TIME, to_utc

__all__ = [
    "MAX_TOP_K",
    "MESSAGE_KIND",
    "SESSION_KIND",
    "WINDOW_KIND",
    "ConversationMemory",
    "RecordedMessages",
    "message_of",
    "render_messages",
]


class ConversationMemory:
    """A trader's conversation with the agent on a :class:`KhalaStore` (module doc).

    ``persona`` and ``episodic`` receive the trader's words and the events they tell of
    (either may be ``None``: messages are then only stored and recalled). Thread-safe as
    far as the store is; writes of one trader should come from one writer, in time order.
    """

    def __init__(
        self,
        store: KhalaStore,
        *,
        settings: ConversationSettings,
        persona: PersonaWriter | None = None,
        episodic: EpisodeWriter | None = None,
    ) -> None:
        self.store = store
        self.settings = settings
        self.persona = persona
        self.episodic = episodic

    def is_trader(self, speaker: str) -> bool:
        """Whether ``speaker``'s words are the trader's (``trader_speakers`` when set, else
        anyone not in ``agent_speakers``; case-insensitive): only theirs are read into
        the persona and conversation events."""
        said_by = speaker.lower()
        if self.settings.trader_speakers:
            return said_by in {s.lower() for s in self.settings.trader_speakers}
        return said_by not in {s.lower() for s in self.settings.agent_speakers}

    # ------------------------------------------------------------------ writes

    def record(
        self, trader_id: str, messages: Sequence[ChatMessage], *, as_of: datetime
    ) -> RecordedMessages:
        """Store ``messages`` of ``trader_id`` (module doc), as known at ``as_of``.

        Messages are ordered by time (a stable sort: messages of equal time keep the given
        order); a message stored as it is given is left alone (idempotent) and not read
        into the persona again. Nothing is written when one of them would rewrite or
        back-date what is stored (:meth:`conflicts`): checked before the persona reads
        them, and again under the store's writer lock right before they are written, so
        two processes recording one session (or one id) at once cannot both succeed on
        the same read (positions in the session given twice, one writer's text under the
        other's "recorded" id); a persona change this call made before a refusal at the
        second check stays, and the error says so. The persona reads the new messages
        before they are stored: a call interrupted in between stored none of them, and
        the next one reads them again (a repeated read adds nothing), so no message is
        stored unread. A message
        the persona cannot read because it has a later version is counted in
        ``persona_skipped``, unless that version came from this very call's messages
        (the next call after an interrupt). Raises
        :class:`LookAheadError` for a message after ``as_of``, :class:`StoreError` for an
        id given twice or a conflict (naming the first), and the store's errors.
        """
        fence = to_utc(as_of)
        seen: set[str] = set()
        for m in messages:
            if m.time > fence:
                raise LookAheadError(
                    f"message {m.id!r} at {m.time.isoformat()} is after as_of {fence.isoformat()}"
                )
            if m.id in seen:
                raise StoreError(f"message id {m.id!r} appears twice")
            seen.add(m.id)
        ordered = sorted(messages, key=lambda m: m.time)
        self._refuse_conflicts(trader_id, ordered)  # before the persona reads a word
        # messages stored before (a re-import) were read into the persona then: the
        # persona reads a message before it is stored, so an interrupt between the two
        # leaves it unstored, and the next import reads it again (a repeated read changes
        # nothing the first did not) instead of never
        known = self.messages(trader_id, [m.id for m in ordered], as_of=END_OF_TIME)
        changes = skipped = read = failed = 0
        read_through: datetime | None = None
        errors: dict[str, None] = {}
        by_session: dict[str, list[ChatMessage]] = {}
        for m in ordered:
            by_session.setdefault(m.session, []).append(m)
        if self.persona is not None:
            named = bool(self.settings.trader_speakers)
            runs = session_runs(
                self.store, trader_id, by_session, known=known, fence=fence,
                is_trader=self.is_trader, named=named,
            )  # fmt: skip
            for m in ordered:
                if self.is_trader(m.speaker) and m.text.strip() and m.id not in known:
                    try:
                        found = self.persona.update_from_text(
                            trader_id, m.text, as_of=m.time, note_id=m.id,
                            lift_note=runs.get(m.id),
                        )  # fmt: skip
                    except LookAheadError:  # the persona has a later version already
                        if read_through is None:
                            read_through = self._read_through(trader_id, ordered)
                        skipped += m.time > read_through  # else read before an interrupt
                        continue
                    changes += sum(1 for c in found if getattr(c, "action", "") != "IGNORE")
                    failures = llm_failures(found)
                    errors.update(dict.fromkeys(failures))
                    read += 1
                    failed += bool(failures)
        windows = 0
        # check and write as one step across processes: two writers of one session read
        # the same next position, or of one id each wrote its own text, both "recorded"
        with self.store.writer_lock():
            self._refuse_conflicts(trader_id, ordered, read=changes)
            for session, new in by_session.items():
                windows += self._record_session(trader_id, session, new, fence)
            if ordered:
                self._mark(trader_id, ordered[0].time, fence)
            events = self._events(trader_id, ordered)
            if events and self.episodic is not None:
                self.episodic.add(events, as_of=fence)
        return RecordedMessages(
            messages=len(ordered),
            windows=windows,
            sessions=len(by_session),
            events=(
                [e.id for e in events if not set(e.sources) <= set(known)]
                if self.episodic is not None
                else []
            ),
            persona_changes=changes,
            persona_skipped=skipped,
            already=sum(1 for m in ordered if m.id in known),
            persona_errors=list(errors),
            persona_read=read,
            persona_llm_failed=failed,
        )

    def _refuse_conflicts(
        self, trader_id: str, ordered: Sequence[ChatMessage], *, read: int = 0
    ) -> None:
        """Raise :class:`StoreError` naming the first of :meth:`conflicts`: no message is
        written then. ``read``: the persona changes this call made before (another
        writer recorded in between, after the persona had read these words, outside
        the lock so that a chat model never holds it): said in the error, as they stay."""
        for i, reason in self.conflicts(trader_id, ordered)[:1]:
            n = len(ordered) - 1
            others = f" (nor the {n} others of this call)" if n else ""
            kept = (
                f"; the persona had read its words already ({read} changes, kept)" if read else ""
            )
            raise StoreError(
                f"trader {trader_id}: message {ordered[i].id!r} not recorded{others}: "
                f"{reason}{kept}"
            )

    def _read_through(self, trader_id: str, ordered: Sequence[ChatMessage]) -> datetime:
        """The time of the newest of ``ordered`` that the persona's newest version names as
        evidence (the oldest time there is when none does). A call interrupted while its
        messages were read, in time order, read every one up to it."""
        assert self.persona is not None
        profile = self.persona.get_profile(trader_id, END_OF_TIME)
        named = {i for a in profile.attributes.values() for i in a.evidence} if profile else set()
        oldest = datetime.min.replace(tzinfo=UTC)
        return max((m.time for m in ordered if m.id in named), default=oldest)

    def conflicts(self, trader_id: str, messages: Sequence[ChatMessage]) -> list[tuple[int, str]]:
        """What in ``messages`` would not record cleanly on top of every message of
        ``trader_id`` stored, whatever its time (a check before a write, which is an
        upsert over all of them: a caller whose clock is earlier, a replay, must not
        rewrite or back-date what a later one stored): ``(index in messages,
        reason)`` for an id stored in another session (ids are unique per trader), and
        for a new message earlier than the newest stored message of its session (a
        session is built forward in time: its order, windows and session record), and
        for a stored id given another time, speaker, text or caption (that would rewrite
        what was said, or who said it).
        A stored message recorded again as it is is not a conflict (idempotent). Empty
        when all is well. Reads the named ids and the messages of the named sessions
        only (a message recorded by the MCP tool costs its session, not the history).
        Raises the store's errors."""
        stored = self.store.get(
            trader_id, [PREFIX[MESSAGE_KIND] + m.id for m in messages], as_of=END_OF_TIME
        )  # by id: the stored messages these ids name, in any session
        said = {(m := message_of(r)).id: m for r in stored}
        sessions = sorted({m.session for m in messages})
        rows = self.store.scan_metadata(
            trader_id, as_of=END_OF_TIME, filters={"kind": MESSAGE_KIND, "session": sessions}
        ) if sessions else []  # fmt: skip
        newest: dict[str, float] = {}
        for _, t, meta in rows:  # the messages of these sessions only
            key = str(meta["session"])
            newest[key] = max(newest.get(key, t), t)
        out: list[tuple[int, str]] = []
        for i, m in enumerate(messages):
            held = said.get(m.id)
            if held is not None and held.session != m.session:
                out.append((i, f"id {m.id!r} is already stored in session {held.session!r}"))
            elif held is not None and held != m:
                why = f"id {m.id!r} is already stored with another time, speaker or text"
                out.append((i, why))
            elif held is None and m.time.timestamp() < newest.get(m.session, -math.inf):
                out.append((i, f"session {m.session!r} already has a later message"))
        return out

    def _record_session(
        self, trader_id: str, session: str, new: list[ChatMessage], fence: datetime
    ) -> int:
        """The messages of one session not stored yet, the windows they change and the
        session record, in one upsert (all or none of them is written, so a message is
        never stored without its windows); returns how many windows were written.

        A message stored already is left alone with its windows and session record: they
        were written with it, or rebuilt by a later message of the session, which
        :meth:`conflicts` lets only come after it. Rebuilding them as of this call's
        ``fence`` would cut off what was said later: a re-import of a file that ends
        inside a session a later file continued had cut the session record to this
        file's messages (a reviewer's run, 2026-12-07)."""
        stored = self.store.scan(
            trader_id, as_of=fence, filters={"kind": MESSAGE_KIND, "session": session}
        )
        seq_of = {str(r.metadata["message_id"]): int(r.metadata["seq"]) for r in stored}
        fresh = [m for m in new if m.id not in seq_of]
        if not fresh:
            return 0
        first = max(seq_of.values(), default=-1) + 1
        vectors = self.store.embedder.embed([m.render() for m in fresh])
        records = [
            message_record(trader_id, m, first + i).model_copy(update={"embedding": v.tolist()})
            for i, (m, v) in enumerate(zip(fresh, vectors, strict=True))
        ]
        held = self.store.get(
            trader_id,
            [PREFIX[MESSAGE_KIND] + i for i in sorted(seq_of, key=seq_of.__getitem__)],
            as_of=fence,
            include_embeddings=True,
        )
        if len(held) != len(seq_of):
            raise StoreError(f"trader {trader_id}: session {session!r} lost messages while written")
        full = held + records
        r = self.settings.window_radius
        touched = range(max(0, first - r), len(full))  # within r of a new message
        out = [window_record(trader_id, full, j, r) for j in touched]
        out.append(session_record(trader_id, session, full))
        self.store.upsert(trader_id, [*records, *out], as_of=fence)
        return len(touched)

    def _mark(self, trader_id: str, first: datetime, fence: datetime) -> None:
        """Create (or move earlier) the conversation's marker record."""
        held = self.store.get(trader_id, [MARKER_ID], as_of=fence)
        if held and held[0].created_at <= first:
            return
        self.store.upsert(
            trader_id,
            [
                MemoryRecord(
                    id=MARKER_ID,
                    trader_id=trader_id,
                    text=f"conversation of {trader_id} with the agent",
                    created_at=first,
                    kind="message_marker",
                )
            ],
            as_of=fence,
        )

    def _events(self, trader_id: str, messages: list[ChatMessage]) -> list[Episode]:
        out = []
        for m in messages:
            if not self.is_trader(m.speaker):
                continue
            found = message_event(m.text)
            if found is None:
                continue
            kind, importance = found
            tickers = mentioned_tickers(m.text)
            out.append(
                Episode(
                    id="conv-" + stable_id(trader_id, m.id)[:24],
                    trader_id=trader_id,
                    symbol=f"{tickers[0]}/USDT" if tickers else "conversation",
                    event_type="conversation",
                    occurred_at=m.time,
                    description=f"The trader said ({kind}): {m.render()}",
                    importance=importance,
                    sources=[m.id],
                )
            )
        return out

    # ------------------------------------------------------------------- reads

    def has_messages(self, trader_id: str, *, as_of: datetime) -> bool:
        """Whether ``trader_id`` said anything up to ``as_of`` (one read by id: the
        conversation's marker record, created at its first message)."""
        return bool(self.store.get(trader_id, [MARKER_ID], as_of=as_of))

    def messages(
        self, trader_id: str, ids: Sequence[str], *, as_of: datetime
    ) -> dict[str, ChatMessage]:
        """The stored messages of ``trader_id`` with these ids known at ``as_of``, by id
        (absent ids are left out). Raises the store's errors."""
        held = self.store.get(trader_id, [PREFIX[MESSAGE_KIND] + i for i in ids], as_of=as_of)
        return {m.id: m for m in map(message_of, held)}

    def recall(
        self, trader_id: str, query: str, *, as_of: datetime, top_k: int = 10
    ) -> list[RecalledMessage]:
        """The ``top_k`` messages of ``trader_id`` known at ``as_of`` that best answer
        ``query``, best first (:func:`~backend.memory._conversation_recall.rank_messages`;
        ``top_k`` in 1..1000). Raises the store's errors."""
        return rank_messages(self.store, self.settings, trader_id, query, as_of=as_of, top_k=top_k)

"""What the toolkit writes through, and the decision episode it writes: the writer
Protocols of the memory tiers (working, episodic, persona) a
:class:`~backend.tools.memory_toolkit.MemoryToolkit` is built with,
:func:`decision_episode` (also the decision loop's, :mod:`backend.agents`) and the check
that a decision cites only memories known at its time (:func:`check_memory_ids`), and the
``record_message`` tool's retry rule (:func:`record_message_once`)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from itertools import compress
from typing import Any, Protocol

from backend.errors import ToolError
from backend.memory.conversation import ConversationMemory, PersonaWriter, RecordedMessages
from backend.memory.memory_ids import parse_memory_id
from backend.memory.models import ActionLink, ChatMessage, Episode, MarketSnapshot, Outcome
from backend.storage import KhalaStore
from backend.storage.models import stable_id
from backend.tools.schemas import RecordMessageArgs
from backend.types import END_OF_TIME, Action, to_utc

__all__ = [
    "DECISION_IMPORTANCE",
    "WRITE_TOOLS",
    "EpisodicWriter",
    "PersonaWriter",
    "WorkingWriter",
    "check_memory_ids",
    "decision_episode",
    "record_message_once",
    "refuse_replay_write",
    "unknown_memory_ids",
    "write_episode_once",
]


class WorkingWriter(Protocol):
    def observe(self, snapshot: MarketSnapshot) -> Any: ...


WRITE_TOOLS = frozenset(
    {"record_note", "record_message", "record_event", "record_decision", "record_outcome"}
)
"""The tools that write memory (a replay's are refused into a past the store has moved
beyond: :func:`refuse_replay_write`)."""


def refuse_replay_write(name: str, store: KhalaStore, trader_id: str, *, as_of: datetime) -> None:
    """Raise :class:`ToolError` if tool ``name`` writes (:data:`WRITE_TOOLS`) and
    ``trader_id``'s memory was written as of a time after the replayed ``as_of``
    (:meth:`KhalaStore.last_written`), saying no more than that (the module doc of
    :mod:`backend.tools.memory_toolkit`, ``call``)."""
    if name not in WRITE_TOOLS:
        return
    newest = store.last_written(trader_id)
    if newest is not None and newest > as_of:
        raise ToolError(
            f"{name}: this server replays {as_of.isoformat()} and the trader's memory was "
            "written as of a later time: a replay does not write into a past the store "
            "has moved beyond (serve a store of its own)"
        )


class EpisodicWriter(Protocol):
    @property
    def store(self) -> KhalaStore: ...

    def add(self, episodes: Sequence[Episode], *, as_of: datetime) -> Any: ...

    def get(
        self, trader_id: str, ids: Sequence[str], *, as_of: datetime, horizon: str | None = None
    ) -> list[Episode]: ...

    def record_outcome(
        self, trader_id: str, episode_id: str, outcome: Outcome, *, as_of: datetime
    ) -> Any: ...


DECISION_IMPORTANCE = 0.3
"""The importance (0..1) of a decision episode: one value, so the decision loop and a
tool client's ``record_decision`` write the same episode for the same decision."""


def decision_episode(
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
    state: dict[str, float] | None = None,
    outcome_horizon_s: int | None = None,
    key: str | None = None,
) -> Episode:
    """The ``decision`` episode of a decision taken at ``as_of`` (its id is stable per
    trader, symbol and time, or per trader, symbol and the caller's ``key`` when given;
    ``size`` is a fraction of equity; ``state``: the bar's feature values, so the
    episode can be recalled by market state; ``outcome_horizon_s``:
    :attr:`Episode.outcome_horizon_s`)."""
    decision_id = (
        stable_id("decision", trader_id, symbol, to_utc(as_of).isoformat())
        if key is None
        else stable_id("decision-key", trader_id, symbol, key)
    )
    description = f"Decision {action} {size:.0%} of equity on {symbol}: {rationale}"
    if market_state:
        description = f"{market_state} | {description}"
    return Episode(
        id=decision_id,
        trader_id=trader_id,
        symbol=symbol,
        event_type="decision",
        occurred_at=as_of,
        description=description,
        importance=importance,
        actions=[ActionLink(decision_id=decision_id, action=action, size=size, at=as_of)],
        memory_ids=list(memory_ids),
        state=dict(state or {}),
        outcome_horizon_s=outcome_horizon_s,
    )


def unknown_memory_ids(
    ids: Sequence[str],
    *,
    as_of: datetime,
    persona_version: int | None,
    episodes: set[str],
    messages: set[str],
) -> list[str]:
    """The ``ids`` a decision at ``as_of`` cannot have been made with, in order (ids as
    :func:`backend.memory.memory_ids.parse_memory_id` reads them): a persona version (or its
    constraints) after ``persona_version`` (the trader's version at ``as_of``; None: none
    yet), a working snapshot stamped after ``as_of``, a message not in ``messages``, an
    episode not in ``episodes`` (the ids of each kind known at ``as_of``) and a malformed
    persona or working id. A working snapshot is checked by its time only: working
    memory keeps a window, not every snapshot it ever held."""

    def known(memory_id: str) -> bool:
        ref = parse_memory_id(memory_id)
        if ref is None:
            return False
        if ref.tier == "persona":
            return persona_version is not None and ref.version <= persona_version
        if ref.tier == "working":
            return ref.at is not None and ref.at <= as_of
        return ref.key in (messages if ref.tier == "conversation" else episodes)

    return list(compress(ids, (not known(i) for i in ids)))


def check_memory_ids(
    trader_id: str,
    ids: Sequence[str],
    *,
    as_of: datetime,
    episodic: EpisodicWriter,
    conversation: ConversationMemory | None,
    persona_version: Callable[[], int | None],
) -> None:
    """Raise :class:`ToolError` naming (up to five of) the :func:`unknown_memory_ids` of
    a decision of ``trader_id`` at ``as_of``; reads only the kinds ``ids`` hold
    (``persona_version``: the trader's persona version at ``as_of``, called only for a
    persona id). Raises the store's errors."""
    refs = [ref for ref in map(parse_memory_id, ids) if ref is not None]
    said = [ref.key for ref in refs if ref.tier == "conversation"]
    heard = conversation.messages(trader_id, said, as_of=as_of) if (
        said and conversation is not None
    ) else {}  # fmt: skip
    version = persona_version() if any(ref.tier == "persona" for ref in refs) else None
    episodes = [ref.key for ref in refs if ref.tier == "episodic"]
    held = {e.id for e in episodic.get(trader_id, episodes, as_of=as_of)} if episodes else set()
    unknown = unknown_memory_ids(
        ids, as_of=as_of, persona_version=version, episodes=held, messages=set(heard)
    )
    if unknown:
        raise ToolError(
            f"record_decision: memory_ids: {len(unknown)} not known at {as_of.isoformat()} "
            f"(ids come from recall or build_decision_context): "
            f"{', '.join(map(repr, unknown[:5]))}"
        )


def write_episode_once(
    episodic: EpisodicWriter, episode: Episode, *, as_of: datetime, key: str | None, what: str
) -> str:
    """Write ``episode`` (an ``event`` or ``decision``, ``what``) unless it is stored
    already (its id, whatever its time); returns its id. A stored one that says the same
    (symbol, type, description, actions' action and size, memory ids; not importance,
    which the episode's outcomes move) is a retry: nothing is written. One that says
    something else is a :class:`ToolError` (what was recorded is never rewritten),
    naming the caller's ``key`` when the id came from it. A client's retry comes with
    the server's later clock, so only an id derived from a key the client gives
    (``event_id``, ``decision_id``), not from the time, makes a retry one."""

    def said(e: Episode) -> tuple[object, ...]:
        acts = [(a.action, a.size) for a in e.actions]
        return e.symbol, e.event_type, e.description, acts, e.memory_ids

    for held in episodic.get(episode.trader_id, [episode.id], as_of=END_OF_TIME):
        if said(held) == said(episode):
            return held.id
        raise ToolError(
            f"record_{what}: {what}_id {key!r} is already recorded as another {what}"
            if key is not None
            else f"record_{what}: a {what} on {episode.symbol} at {as_of.isoformat()} is "
            f"already recorded ({episode.id}): one {what} per symbol and time"
        )
    episodic.add([episode], as_of=as_of)
    return episode.id


def record_message_once(
    trader_id: str,
    args: RecordMessageArgs,
    *,
    as_of: datetime,
    stored: Callable[[str, list[str]], dict[str, ChatMessage]],
    conflicts: Callable[[str, Sequence[ChatMessage]], list[tuple[int, str]]],
    record: Callable[..., RecordedMessages],
) -> dict[str, Any]:
    """The ``record_message`` tool. The message's time is the caller's clock (``as_of``),
    so a retry with the same ``message_id`` (a client that timed out) comes with a later
    time: a stored message (``stored``: id -> message, whatever its time) with that id,
    speaker, session, text and caption is answered as recorded (``already_recorded``),
    never rewritten or refused; so is the same text sent again at the same clock time
    without an id (its derived id). Else a :class:`ToolError` names the first of
    ``conflicts`` (nothing said is rewritten), or ``record(trader_id, message,
    as_of=as_of)`` writes it. Returns the tool's JSON answer."""
    message = ChatMessage(
        id=args.message_id
        or "msg-"
        + stable_id(trader_id, as_of.isoformat(), args.session, args.speaker, args.text)[:16],
        speaker=args.speaker,
        text=args.text,
        time=as_of,
        session=args.session,
        image_caption=args.image_caption,
    )
    held = stored(trader_id, [message.id]).get(message.id)
    if held is not None and held.model_copy(update={"time": as_of}) == message:
        return {
            "message_id": held.id,
            "events": [],
            "persona_changes": 0,
            "persona_skipped": 0,
            "persona_errors": [],
            "already_recorded": True,
        }
    for _, reason in conflicts(trader_id, [message]):
        raise ToolError(f"record_message: {reason}")  # never rewrite what was said
    done = record(trader_id, message, as_of=as_of)
    return {
        "message_id": message.id,
        "events": done.events,
        "persona_changes": done.persona_changes,
        "persona_skipped": done.persona_skipped,
        "persona_errors": done.persona_errors,
        "already_recorded": False,
    }

"""``sentinel memory``: inspect one trader's Khala memory store, import a conversation,
recall from it."""

from __future__ import annotations

import codecs
import contextlib
import json
import re
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Literal, TypeVar

import typer
from pydantic import AwareDatetime, Field, ValidationError, field_validator
from rich.markup import escape
from rich.table import Table

from backend.cli._common import (
    DEPENDENCY_FAILED,
    console,
    parse_trader,
    parse_utc,
    settings_for_store,
)
from backend.errors import ConfigError, DataError, StoreError
from backend.memory.models import ChatMessage
from backend.storage import KIND_PATTERN
from backend.types import END_OF_TIME, FrozenModel, first_problem, to_utc

_Line = TypeVar("_Line", bound=FrozenModel)

__all__ = ["memory_app"]

memory_app = typer.Typer(help="Inspect the Khala memory store.", no_args_is_help=True)


@memory_app.command("search")
def memory_search(
    trader: Annotated[str, typer.Option(help="Trader id whose memories to search.")],
    query: Annotated[str, typer.Option(help="Query text.")],
    as_of: Annotated[str | None, typer.Option(help="UTC time fence; default: now.")] = None,
    method: Annotated[str, typer.Option(help="dense, bm25 or hybrid.")] = "hybrid",
    top_k: Annotated[int, typer.Option(min=1, max=1000)] = 10,
    kind: Annotated[str | None, typer.Option(help="Only this kind (e.g. news).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON lines.")] = False,
    store_path: Annotated[
        Path | None,
        typer.Option(help="Store directory: a run's --store-path or a chroma directory."),
    ] = None,
) -> None:
    """Search one trader's memories (never another trader's) as of a time."""
    from backend.embeddings import build_embedder
    from backend.memory.episodic import EPISODIC_KIND, record_as_of
    from backend.storage import open_store

    parse_trader(trader)
    if method not in ("dense", "bm25", "hybrid"):
        raise ConfigError(f"--method: expected dense, bm25 or hybrid, got {method!r}")
    if not query.strip():  # ranked on nothing: every hit would be noise
        raise ConfigError("--query: empty; give the words to search for")
    if kind is not None and not re.fullmatch(KIND_PATTERN, kind):  # a record's kind (MemoryRecord)
        raise ConfigError(f"--kind: {kind!r} is no record kind (e.g. episodic, message, news)")
    cfg = settings_for_store(store_path, create=False)
    fence = parse_utc(as_of, name="as-of") if as_of else datetime.now(UTC)
    store = open_store(cfg.store, build_embedder(cfg.embedding))
    searched: Literal["dense", "bm25", "hybrid"] = method  # type: ignore[assignment]
    try:
        hits = store.search(
            trader,
            query,
            as_of=fence,
            top_k=top_k,
            method=searched,
            filters={"kind": kind} if kind else None,
        )
    finally:
        store.close()  # the store's client and its files, released as other commands do
    ts = fence.timestamp()  # an episode as it stood then, not with its later outcomes
    hits = [
        h.model_copy(update={"record": record_as_of(h.record, ts)})
        if h.record.kind == EPISODIC_KIND
        else h
        for h in hits
    ]
    if as_json:
        for hit in hits:
            print(hit.model_dump_json())
        return
    table = Table("rank", "sim", "created_at", "kind", "text")
    for hit in hits:
        table.add_row(
            str(hit.rank),
            f"{hit.similarity:.3f}",
            hit.record.created_at.isoformat(),
            escape(hit.record.kind),
            escape(hit.record.text[:100]),  # stored text is data, never rich markup
        )
    console.print(table)


class _Query(FrozenModel):
    """One line of a ``sentinel memory recall --queries`` file."""

    id: str = Field(min_length=1, max_length=200)
    query: str = Field(min_length=1, max_length=2000)
    as_of: AwareDatetime

    _tz = field_validator("as_of")(to_utc)  # at read: a time past 9999 in UTC names its line

    @field_validator("id", "query")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        """A blank query was ranked on nothing; a blank id names no answer."""
        if not value.strip():
            raise ValueError("must not be blank")
        return value


_ISO_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
"""The date an ISO-8601 time begins with (pydantic would read ``"1740819600"`` as epoch
seconds)."""
_ISO_BASIC = re.compile(r"\d{8}T\d{4}")
"""ISO-8601's basic format (``20250301T090000Z``), read by ``datetime.fromisoformat``."""


def _unique_keys(pairs: list[tuple[str, object]]) -> dict[str, object]:
    out: dict[str, object] = {}
    for key, value in pairs:
        if key in out:
            raise ValueError(f"key {key!r} appears twice")
        out[key] = value
    return out


def _read_jsonl(
    path: Path, model: type[_Line], *, times: tuple[str, ...]
) -> list[tuple[int, _Line]]:
    """Every non-blank line of ``path`` as ``(line number, model)``, line 1 first.

    A UTF-8 byte-order mark is skipped; keys ``model`` does not know are ignored (e.g. the
    other fields of a LoCoMo export); the ``times`` fields must be ISO-8601 strings (a
    number, or a string of digits, is not taken as epoch seconds); lines end at ``\n``
    (a ``\r`` before it is dropped). Raises :class:`DataError` naming the file,
    line and field of the first bad line."""
    try:
        raw = path.read_bytes().removeprefix(codecs.BOM_UTF8)
    except OSError as exc:
        raise DataError(f"{path}: cannot read ({exc})") from None
    lines: list[str] = []
    # JSON lines end at "\n" only: a text may hold U+2028 and other line separators
    for number, chunk in enumerate(raw.split(b"\n"), start=1):
        try:
            lines.append(chunk.decode("utf-8").removesuffix("\r"))
        except UnicodeDecodeError as exc:
            raise DataError(
                f"{path}: line {number}: not UTF-8 (byte {exc.start + 1} of the line)"
            ) from None
    known = set(model.model_fields)
    out: list[tuple[int, _Line]] = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line, object_pairs_hook=_unique_keys)
        except ValueError as exc:  # JSONDecodeError is a ValueError
            raise DataError(f"{path}: line {number}: not a JSON object ({exc})") from None
        if not isinstance(obj, dict):
            raise DataError(f"{path}: line {number}: not a JSON object")
        for name in times:
            value = obj.get(name)
            if isinstance(value, str) and _ISO_BASIC.match(value):
                # the basic format as its extended form (pydantic reads that); a bad one
                # is refused below
                with contextlib.suppress(ValueError):
                    obj[name] = value = datetime.fromisoformat(value).isoformat()
            if value is not None and not (isinstance(value, str) and _ISO_DATE.match(value)):
                raise DataError(f"{path}: line {number}: {name}: expected an ISO-8601 string")
        try:
            out.append((number, model.model_validate({k: obj[k] for k in obj if k in known})))
        except ValidationError as exc:
            where, problem = first_problem(exc)
            raise DataError(f"{path}: line {number}: {where}: {problem}") from None
    return out


_IMPORT_CHUNK = 200
"""Messages of a chat file written (then read into the persona) at a time."""


@memory_app.command("import-chat")
def memory_import_chat(
    trader: Annotated[str, typer.Option(help="Trader id whose conversation this is.")],
    file: Annotated[
        Path,
        typer.Option(
            help='JSON lines in time order: {"id", "speaker", "text", "time" (ISO-8601 UTC), '
            '"session"} and optionally "image_caption".'
        ),
    ],
    store_path: Annotated[
        Path | None,
        typer.Option(help="Store directory: a run's --store-path or a chroma directory."),
    ] = None,
    speaker: Annotated[
        list[str] | None,
        typer.Option(
            help="The trader's speaker name (repeatable): only their words are read into "
            "the persona and events (default: memory.conversation.trader_speakers, else "
            "every speaker but the agent's)."
        ),
    ] = None,
) -> None:
    """Record a conversation as the trader's messages (each as of its own time).

    The whole file is checked first (fields, time order, no time after now,
    unique ids, then against the store: an id stored in another session, a
    message earlier than the newest stored one of its session): a bad line ends
    in one error naming the file and line, and nothing of the file is written.
    Exits 3 after recording when the configured chat model failed to read more than
    1 - llm.min_answered_share of the trader's messages (the offline rules read
    them instead; said on stderr).
    Keys other than the message's are ignored. Limits: text up to 100,000
    characters, a caption up to 10,000, ids, speakers and sessions up to 200."""
    from backend.backtest.metrics import below_share
    from backend.compose import build_memory_system

    parse_trader(trader)
    lines = _read_jsonl(file, ChatMessage, times=("time",))
    seen: set[str] = set()
    before: ChatMessage | None = None
    now = datetime.now(UTC)  # the CLI reads the clock; the memory is given times
    for number, m in lines:
        if m.id in seen:
            raise DataError(f"{file}: line {number}: id: {m.id!r} appears twice")
        if before is not None and m.time < before.time:
            raise DataError(f"{file}: line {number}: time: before the previous message")
        if m.time > now:  # it would refuse every message of its session said until then
            raise DataError(f"{file}: line {number}: time: {m.time.isoformat()} is in the future")
        seen.add(m.id)
        before = m
    messages = [m for _, m in lines]
    if not messages:  # before the store is opened: no store directory made for nothing
        print(f"nothing to record: {file} holds no message")
        return
    cfg = settings_for_store(store_path)
    if speaker:
        talk = cfg.memory.conversation.model_copy(update={"trader_speakers": list(speaker)})
        cfg = cfg.model_copy(
            update={"memory": cfg.memory.model_copy(update={"conversation": talk})}
        )
    talk = cfg.memory.conversation
    said_by = {m.speaker.lower() for m in messages}
    if talk.trader_speakers:
        absent = sorted({s for s in talk.trader_speakers if s.lower() not in said_by})
        if absent:
            typer.echo(
                f"warning: no message of {', '.join(absent)} in {file}: nothing of theirs "
                "is read into the persona",
                err=True,
            )
    else:
        agents = {s.lower() for s in talk.agent_speakers}
        people = sorted(said_by - agents)
        if len(people) > 1:
            typer.echo(
                f"warning: {len(people)} speakers besides the agent ({', '.join(people[:5])})"
                " are all read as the trader; name the trader's with --speaker",
                err=True,
            )
    with build_memory_system(cfg) as system:
        # against everything the store holds, whatever its time
        for i, reason in system.toolkit.message_conflicts(trader, messages):
            raise DataError(f"{file}: line {lines[i][0]}: {reason}")
        # writes of _IMPORT_CHUNK messages, each as of its last one (every message keeps
        # its own time). Not one per run of a session: sessions that alternate rebuilt a
        # session record per message (600 messages of two alternating sessions: 42.6 s;
        # now 5.0 s). Not one for the file: a write reads its messages into the persona
        # before it stores them, and a re-import after an interrupt reads the unstored
        # ones again (with an LLM, seconds each); a chunk bounds what that can cost.
        written = events = skipped = already = read = failed = 0
        errors: dict[str, None] = {}
        for i in range(0, len(messages), _IMPORT_CHUNK):
            chunk = messages[i : i + _IMPORT_CHUNK]
            done = system.toolkit.record_messages(trader, chunk, as_of=chunk[-1].time)
            written += done.messages
            events += len(done.events)
            skipped += done.persona_skipped
            already += done.already
            read += done.persona_read
            failed += done.persona_llm_failed
            errors.update(dict.fromkeys(done.persona_errors))
    if already == written:
        print(f"nothing new: the {written} messages of {trader} were already stored")
    else:
        stored = f", {already} of them already stored" if already else ""
        said = f"{written} message{'s' if written != 1 else ''}"
        told = f"{events} new conversation event{'s' if events != 1 else ''}"
        print(f"recorded {said} of {trader}{stored} ({told})")
    if failed:  # a dead or wrong model: said in the run's output, not only in a log line
        typer.echo(
            f"warning: the LLM failed to read {failed} of the {read} trader messages read "
            f"into the persona (first: {next(iter(errors), 'no reason given')}); the offline "
            "rules read them instead",
            err=True,
        )
    if skipped:  # stored and recallable, but what they state is not in the persona
        typer.echo(
            f"warning: {skipped} of the trader's messages were said before the persona's "
            "latest version and were not read into it (its versions only move forward): "
            "limits they state are not enforced; import chats before refreshing the persona",
            err=True,
        )
    if below_share(read - failed, read, min_share=cfg.llm.min_answered_share):
        raise typer.Exit(DEPENDENCY_FAILED)  # stored, and said above: the model is failing


@memory_app.command("recall")
def memory_recall(
    trader: Annotated[str, typer.Option(help="Trader id whose memory to ask.")],
    queries: Annotated[
        Path, typer.Option(help='JSON lines: {"id", "query", "as_of" (ISO-8601 UTC)}.')
    ],
    top_k: Annotated[
        int, typer.Option(min=1, help="Messages per query (a recall returns up to 1,000).")
    ] = 10,
    store_path: Annotated[
        Path | None,
        typer.Option(help="Store directory: a run's --store-path or a chroma directory."),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON lines.")] = False,
) -> None:
    """Ask the trader's memory each query as of its time; one JSON line per query.

    Each line is {"id", "message_ids" (best first, at most --top-k, and at
    most 1,000), "tokens"}, tokens being the tiktoken (cl100k_base) count of
    the context an answering model is given. The ranking is
    MemoryToolkit.recall's."""
    from backend.compose import build_memory_system
    from backend.memory.conversation import MAX_TOP_K

    parse_trader(trader)
    asked = _read_jsonl(queries, _Query, times=("as_of",))
    first_line: dict[str, int] = {}
    for number, q in asked:  # answered all the same, one line each, in the file's order
        if (first := first_line.setdefault(q.id, number)) != number:
            print(f"sentinel: warning: {queries}: line {number}: id {q.id!r} is also on "
                  f"line {first}", file=sys.stderr)  # fmt: skip
    cfg = settings_for_store(store_path, create=False)
    with build_memory_system(cfg) as system:
        talk = system.memory.conversation
        if talk is not None and not talk.has_messages(trader, as_of=END_OF_TIME):
            # still one (empty) line per query; said, so a mistyped id is not a quiet miss
            print(f"sentinel: warning: no message of trader {trader} in {cfg.store.path}",
                  file=sys.stderr)  # fmt: skip
        for number, q in asked:
            try:
                found = system.toolkit.recall(
                    trader, q.query, symbol=None, as_of=q.as_of, tiers=("working",),
                    top_k=min(top_k, MAX_TOP_K),
                )  # fmt: skip
            except StoreError as exc:
                raise StoreError(f"{queries}: line {number}: {exc}") from None
            if found["errors"]:
                tier, error = next(iter(found["errors"].items()))
                raise StoreError(f"{queries}: line {number}: the {tier} tier failed: {error}")
            said = [h for h in found["hits"] if h["tier"] == "conversation"]
            ids = list(dict.fromkeys(str(h["message_id"]) for h in said))[:top_k]
            row = {"id": q.id, "message_ids": ids, "tokens": found["context"]["tokens"]}
            if as_json:
                print(json.dumps(row))
            else:
                console.print(
                    f"{q.id}: {', '.join(ids) or '-'} ({row['tokens']} tokens)", markup=False
                )

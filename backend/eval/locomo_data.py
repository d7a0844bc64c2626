"""Load and validate a LoCoMo JSON file (``locomo10.json`` format, or a subset of its list).

The file is a list of samples ``{"sample_id", "conversation", "qa", ...}``.
``conversation`` holds ``speaker_a``, ``speaker_b``, ``session_<n>`` (a list of turns
``{"speaker", "dia_id", "text", "blip_caption"?, ...}``) and ``session_<n>_date_time``
(``"1:56 pm on 8 May, 2023"``, read as UTC: LoCoMo gives no time zone). Sessions listed
with a date but without turns are ignored. Each ``qa`` item has ``question``,
``category`` (1-5), ``evidence`` (dialog ids) and ``answer`` (``adversarial_answer`` for
category 5).

Evidence repairs (LoCoMo's data has a few malformed strings; each repair is reported):

- ``"D8:6; D9:17"`` (several ids in one string, split at ``;``, ``,`` or spaces) -> ``split``;
- ``"D:11:26"`` (a stray colon) or ``"D3:07"`` (a leading zero) -> ``fixed`` to ``D11:26``;
- ``"D"`` (no id) or an id that is not a turn of the conversation -> ``dropped``.

A question left with no valid evidence is kept (it is counted, not scored). The
annotations LoCoMo also ships (``observation``, ``session_summary``, ``event_summary``:
generated from the dialog by GPT, with evidence ids) are not read: the memory builds its
own from the turns.

Structural faults (not JSON, a missing key, a bad date, a duplicate dialog id) raise
:class:`~backend.errors.DataError` naming the file and the JSON path of the field.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from backend.errors import DataError
from backend.eval.locomo_models import (
    EvidenceRepair,
    LocomoConversation,
    LocomoDataset,
    LocomoQuestion,
    LocomoTurn,
)
from backend.types import first_problem

__all__ = [
    "DATE_FORMAT",
    "load_locomo",
    "parse_conversation",
    "parse_session_time",
    "repair_evidence",
]

DATE_FORMAT = "%I:%M %p on %d %B, %Y"
"""``session_<n>_date_time`` format: ``1:56 pm on 8 May, 2023``."""
_SESSION = re.compile(r"^session_(\d+)$")
_ID_PART = re.compile(r"^D:?(\d+):(\d+)$")
_ID = re.compile(r"^D\d+:\d+$")


def parse_session_time(value: object, *, path: Path | str, field: str) -> datetime:
    """``"1:56 pm on 8 May, 2023"`` as an aware UTC datetime; :class:`DataError` otherwise."""
    if not isinstance(value, str):
        raise DataError(
            f"expected a date-time string, got {type(value).__name__}", path=path, field=field
        )
    try:
        return datetime.strptime(" ".join(value.split()), DATE_FORMAT).replace(tzinfo=UTC)
    except ValueError:
        raise DataError(
            f"not a date-time like '1:56 pm on 8 May, 2023': {value[:60]!r}", path=path, field=field
        ) from None


def repair_evidence(
    raw: list[str], known: set[str], *, conversation_id: str, question_index: int
) -> tuple[list[str], list[EvidenceRepair]]:
    """The valid dialog ids in ``raw`` (in order, without repeats) and the repairs made
    (see the module docstring). ``known`` is the set of the conversation's dialog ids."""
    ids: list[str] = []
    repairs: list[EvidenceRepair] = []

    def note(item: str, result: list[str], action: str, reason: str) -> None:
        repairs.append(
            EvidenceRepair.model_validate(
                {
                    "conversation_id": conversation_id,
                    "question_index": question_index,
                    "raw": item,
                    "result": result,
                    "action": action,
                    "reason": reason,
                }
            )
        )

    for item in raw:
        parts = [p for p in re.split(r"[;,\s]+", item.strip()) if p]
        found: list[str] = []
        unknown: list[str] = []
        for part in parts:
            match = _ID_PART.match(part)
            if match is None:
                continue
            dia_id = f"D{int(match.group(1))}:{int(match.group(2))}"
            (found if dia_id in known else unknown).append(dia_id)
        if len(parts) == 1 and found == [item]:
            ids.append(item)
            continue

        if not found:
            why = (
                f"not a turn of the conversation: {', '.join(unknown)}"
                if unknown
                else "no dialog id in it"
            )
            note(item, [], "dropped", why)
            continue
        if len(parts) > 1:
            note(item, found, "split", f"{len(parts)} ids in one string")
        else:
            note(item, found, "fixed", "normalised to D<session>:<turn>")
        if unknown:
            note(item, [], "dropped", f"not a turn of the conversation: {', '.join(unknown)}")
        ids.extend(found)
    return list(dict.fromkeys(ids)), repairs


_M = TypeVar("_M", bound=BaseModel)


def _model(cls: type[_M], *, path: Path | str, where: str, **fields: Any) -> _M:
    """``cls(**fields)``; a value the model refuses is a :class:`DataError` naming the
    field's JSON path (an empty question, a blank speaker), not an internal error."""
    try:
        return cls(**fields)
    except ValidationError as exc:
        key, problem = first_problem(exc)
        raise DataError(problem, path=path, field=f"{where}.{key}") from None


def _req(obj: Any, key: str, kind: type | tuple[type, ...], *, path: Path | str, where: str) -> Any:
    if not isinstance(obj, dict) or key not in obj:
        raise DataError("missing", path=path, field=f"{where}.{key}")
    value = obj[key]
    if not isinstance(value, kind):
        raise DataError(
            f"expected {getattr(kind, '__name__', kind)}, got {type(value).__name__}",
            path=path,
            field=f"{where}.{key}",
        )
    return value


def parse_conversation(
    sample: Any, *, path: Path | str, index: int
) -> tuple[LocomoConversation, list[EvidenceRepair]]:
    """One sample of the file (its position ``index``) as a :class:`LocomoConversation`."""
    where = f"[{index}]"
    sample_id = str(_req(sample, "sample_id", (str, int), path=path, where=where))
    conv = _req(sample, "conversation", dict, path=path, where=where)
    cw = f"{where}.conversation"
    speakers = [_req(conv, key, str, path=path, where=cw) for key in ("speaker_a", "speaker_b")]
    numbers = sorted(int(m.group(1)) for key in conv if (m := _SESSION.match(key)))
    sessions: dict[int, datetime] = {}
    turns: list[LocomoTurn] = []
    for number in numbers:
        items = _req(conv, f"session_{number}", list, path=path, where=cw)
        if not items:
            continue
        key = f"session_{number}_date_time"
        at = parse_session_time(
            _req(conv, key, str, path=path, where=cw), path=path, field=f"{cw}.{key}"
        )
        sessions[number] = at
        for position, turn in enumerate(items):
            tw = f"{cw}.session_{number}[{position}]"
            dia_id = _req(turn, "dia_id", str, path=path, where=tw)
            if not _ID.match(dia_id):
                raise DataError(
                    f"dialog id {dia_id[:30]!r} is not D<session>:<turn>",
                    path=path,
                    field=f"{tw}.dia_id",
                )
            caption = turn.get("blip_caption")
            turns.append(
                _model(
                    LocomoTurn,
                    path=path,
                    where=tw,
                    dia_id=dia_id,
                    session=number,
                    position=position,
                    speaker=_req(turn, "speaker", str, path=path, where=tw),
                    text=_req(turn, "text", str, path=path, where=tw),
                    image_caption=caption if isinstance(caption, str) and caption.strip() else None,
                    at=at,
                )
            )
    known = {t.dia_id for t in turns}
    if len(known) != len(turns):
        raise DataError("duplicate dialog ids", path=path, field=f"{cw}")
    questions: list[LocomoQuestion] = []
    repairs: list[EvidenceRepair] = []
    for qi, qa in enumerate(_req(sample, "qa", list, path=path, where=where)):
        qw = f"{where}.qa[{qi}]"
        raw = _req(qa, "evidence", list, path=path, where=qw)
        if not all(isinstance(e, str) for e in raw):
            raise DataError("evidence must be a list of strings", path=path, field=f"{qw}.evidence")
        category = _req(qa, "category", int, path=path, where=qw)
        if isinstance(category, bool) or not 1 <= category <= 5:
            raise DataError(f"category {category} is not 1-5", path=path, field=f"{qw}.category")
        evidence, fixed = repair_evidence(raw, known, conversation_id=sample_id, question_index=qi)
        repairs.extend(fixed)
        answer = qa.get("answer", qa.get("adversarial_answer"))
        questions.append(
            _model(
                LocomoQuestion,
                path=path,
                where=qw,
                conversation_id=sample_id,
                index=qi,
                question=_req(qa, "question", str, path=path, where=qw),
                category=category,
                answer=None if answer is None else str(answer),
                evidence=evidence,
                evidence_raw=list(raw),
            )
        )
    conversation = _model(
        LocomoConversation,
        path=path,
        where=where,
        sample_id=sample_id,
        speaker_a=speakers[0],
        speaker_b=speakers[1],
        sessions=sessions,
        turns=turns,
        questions=questions,
    )
    return conversation, repairs


def load_locomo(path: Path | str, *, limit: int | None = None) -> LocomoDataset:
    """Read a LoCoMo JSON file (the first ``limit`` conversations if given).

    Raises :class:`DataError` (file and JSON path) for an unreadable file, invalid JSON,
    a missing or mistyped key, an unparseable session date or a duplicate sample id.
    """
    source = Path(path)
    try:
        raw = json.loads(source.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError("file not found", path=source) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"cannot read ({type(exc).__name__})", path=source) from None
    except json.JSONDecodeError as exc:
        raise DataError(
            f"invalid JSON at line {exc.lineno} column {exc.colno}", path=source
        ) from None
    if not isinstance(raw, list):
        raise DataError(
            f"top level must be a list of conversations, got {type(raw).__name__}", path=source
        )
    samples = raw if limit is None else raw[:limit]
    conversations: list[LocomoConversation] = []
    repairs: list[EvidenceRepair] = []
    for index, sample in enumerate(samples):
        conversation, fixed = parse_conversation(sample, path=source, index=index)
        if any(c.sample_id == conversation.sample_id for c in conversations):
            raise DataError(
                f"duplicate sample_id {conversation.sample_id!r}",
                path=source,
                field=f"[{index}].sample_id",
            )
        conversations.append(conversation)
        repairs.extend(fixed)
    if not any(c.questions for c in conversations):
        raise DataError("no questions to score in the conversations read", path=source)
    return LocomoDataset(path=str(source), conversations=conversations, repairs=repairs)

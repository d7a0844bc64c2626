"""How persona memory is laid out in the Khala layer (records <-> models).

Three record kinds, all owned by the trader:

- ``persona`` - one per profile version: id ``persona-v000012``, ``created_at`` = that
  version's ``as_of``, ``text`` = the readable summary (embedded, so the persona is
  recallable), metadata ``version`` (int) and ``payload`` (JSON: ``{"schema": 1,
  "profile": PersonaProfile, "ledger": {"generation", "fills"}}``);
- ``persona_change`` - one per routed change: id ``persona-change-v000012-<call>-003``,
  metadata ``version``, ``attribute``, ``action`` and ``payload`` (the PersonaChange JSON);
- ``persona_fills`` - the fills ledger that makes incremental updates equal a rebuild:
  each call that brings new fills writes them (only the new ones) as chunks of at most
  :data:`LEDGER_CHUNK` fills, id ``persona-fills-<seq>-<part>``, metadata ``seq``,
  ``part``, ``generation`` and ``payload`` (columnar JSON of the
  :data:`~backend.agents.memory._persona_features.REQUIRED_COLUMNS`). A full rebuild
  starts a new ``generation``; the ledger at ``as_of`` is every chunk of the newest
  generation created at or before it. Deltas instead of a full copy per version keep the
  storage linear in the number of fills. Importance 0 keeps ledger chunks out of
  ``min_importance`` retrievals.
"""

from __future__ import annotations

import json
import math
from datetime import datetime
from typing import Any

import pandas as pd
from pydantic import ValidationError

from backend.agents.memory._persona_features import REQUIRED_COLUMNS, normalize_fills_frame
from backend.errors import StoreError
from backend.memory.models import PersonaChange, PersonaProfile
from backend.storage.models import MemoryRecord

__all__ = [
    "CHANGE_KIND",
    "LEDGER_CHUNK",
    "LEDGER_KIND",
    "PERSONA_KIND",
    "VERSION_PREFIX",
    "change_from_record",
    "change_records",
    "empty_ledger",
    "ledger_from_record",
    "ledger_is_current",
    "ledger_records",
    "profile_from_record",
    "profile_record",
]

PERSONA_KIND = "persona"
VERSION_PREFIX = "persona-v"
"""Id prefix of the persona version records (``persona-v000001``, ...)."""
CHANGE_KIND = "persona_change"
LEDGER_KIND = "persona_fills"
LEDGER_CHUNK = 2000
_SCHEMA = 1


def profile_record(
    profile: PersonaProfile, *, summary: str, generation: int, fills: int
) -> MemoryRecord:
    """The ``persona`` record of one profile version."""
    payload = {
        "schema": _SCHEMA,
        "profile": profile.model_dump(mode="json"),
        "ledger": {"generation": generation, "fills": fills},
    }
    return MemoryRecord(
        id=f"{VERSION_PREFIX}{profile.version:06d}",
        trader_id=profile.trader_id,
        text=summary,
        created_at=profile.as_of,
        kind=PERSONA_KIND,
        importance=0.9,
        metadata={"version": profile.version, "payload": json.dumps(payload, sort_keys=True)},
    )


def _payload(record: MemoryRecord) -> dict[str, Any]:
    raw = record.metadata.get("payload")
    try:
        data = json.loads(raw) if isinstance(raw, str) else None
    except json.JSONDecodeError:
        data = None
    if not isinstance(data, dict):
        raise StoreError(f"trader {record.trader_id}: record {record.id!r} has no valid payload")
    return data


def profile_from_record(record: MemoryRecord) -> PersonaProfile:
    """Decode a ``persona`` record; :class:`StoreError` if its payload is damaged."""
    data = _payload(record)
    try:
        return PersonaProfile.model_validate(data["profile"])
    except (KeyError, ValidationError) as exc:
        raise StoreError(
            f"trader {record.trader_id}: record {record.id!r}: invalid profile "
            f"({type(exc).__name__})"
        ) from None


def change_records(changes: list[PersonaChange], *, call: str) -> list[MemoryRecord]:
    """``persona_change`` records of one call (``call``: a short id unique per call)."""
    out = []
    for i, change in enumerate(changes):
        text = (
            f"Persona {change.action} {change.attribute} ({change.source}, v{change.version}): "
            f"{_short(change.old_value)} -> {_short(change.new_value)}. {change.reason}"
        )
        out.append(
            MemoryRecord(
                id=f"persona-change-v{change.version:06d}-{call}-{i:03d}",
                trader_id=change.trader_id,
                text=text[:2000],
                created_at=change.as_of,
                kind=CHANGE_KIND,
                importance=0.3,
                metadata={
                    "version": change.version,
                    "attribute": change.attribute,
                    "action": change.action,
                    "payload": change.model_dump_json(),
                },
            )
        )
    return out


def _short(value: Any) -> str:
    text = json.dumps(value, default=str)
    return text if len(text) <= 120 else text[:117] + "..."


def change_from_record(record: MemoryRecord) -> PersonaChange:
    """Decode a ``persona_change`` record; :class:`StoreError` if damaged."""
    raw = record.metadata.get("payload")
    try:
        return PersonaChange.model_validate_json(raw if isinstance(raw, str) else "")
    except ValidationError:
        raise StoreError(
            f"trader {record.trader_id}: record {record.id!r}: invalid persona change"
        ) from None


_EMPTY_LEDGER = normalize_fills_frame(pd.DataFrame({c: [] for c in REQUIRED_COLUMNS}))


def empty_ledger() -> pd.DataFrame:
    """A ledger frame without fills (the normalised columns): a copy of a constant
    (normalising an empty frame cost ~6 ms per persona text update, measured)."""
    return _EMPTY_LEDGER.copy()


def ledger_records(
    trader_id: str,
    frame: pd.DataFrame,
    *,
    seq: int,
    generation: int,
    as_of: datetime,
) -> list[MemoryRecord]:
    """``persona_fills`` chunks of ``frame`` (normalised fills); one empty chunk for an
    empty frame (a rebuild from no fills still starts its generation)."""
    out = []
    starts = range(0, max(len(frame), 1), LEDGER_CHUNK)
    for part, start in enumerate(starts):
        chunk = frame.iloc[start : start + LEDGER_CHUNK]
        columns = {
            c: [None if isinstance(v, float) and math.isnan(v) else v for v in chunk[c].tolist()]
            for c in (*REQUIRED_COLUMNS, "base_fee")  # a ledger of before it: 0
        }
        span = (
            f"{len(chunk)} fills {chunk['datetime'].iloc[0]:%Y-%m-%d %H:%M} .. "
            f"{chunk['datetime'].iloc[-1]:%Y-%m-%d %H:%M} UTC"
            if len(chunk)
            else "no fills"
        )
        out.append(
            MemoryRecord(
                id=f"persona-fills-{seq:06d}-{part:03d}",
                trader_id=trader_id,
                text=f"Persona fills ledger of {trader_id}, generation {generation}: {span}",
                created_at=as_of,
                kind=LEDGER_KIND,
                importance=0.0,
                metadata={
                    "seq": seq,
                    "part": part,
                    "generation": generation,
                    "payload": json.dumps({"schema": _SCHEMA, "columns": columns}),
                },
            )
        )
    return out


def ledger_is_current(record: MemoryRecord) -> bool:
    """Whether a ledger chunk holds ``base_fee`` (written since fees taken from the coin
    bought are kept): an older one reads them as 0, so a rebuild from the same fills
    must write a new generation instead of keeping it."""
    return '"base_fee"' in str(record.metadata.get("payload", ""))


def ledger_from_record(record: MemoryRecord) -> pd.DataFrame:
    """The normalised fills of one ledger chunk; :class:`StoreError` if damaged."""
    data = _payload(record)
    columns = data.get("columns")
    if not isinstance(columns, dict) or any(c not in columns for c in REQUIRED_COLUMNS):
        raise StoreError(f"trader {record.trader_id}: record {record.id!r}: invalid fills ledger")
    return normalize_fills_frame(pd.DataFrame(columns), source=record.id)

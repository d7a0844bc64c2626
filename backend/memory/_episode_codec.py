"""The stored form of an episode (:mod:`backend.memory.episodic`, module doc): one
:class:`MemoryRecord` per episode holding its base and its log; encoding and decoding
it, replaying the log as of a time, the log entries the writes append, and the
reflection rule (:func:`outcome_delta`)."""

from __future__ import annotations

import bisect
import json
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from backend.data import timeframe_seconds
from backend.errors import DataError, StoreError, TenantScopeError
from backend.memory.models import ActionLink, Episode, EpisodeType, Outcome
from backend.storage import MemoryRecord
from backend.types import to_utc

__all__ = [
    "DAY_S",
    "EPISODIC_KIND",
    "MOVE_SCALE",
    "added_record",
    "age_decay_entry",
    "decode",
    "encode",
    "log_outcome",
    "outcome_delta",
    "record_as_of",
    "record_filters",
    "replay",
]

EPISODIC_KIND = "episodic"
MOVE_SCALE = 0.10
"""A 10% market move over the outcome horizon counts as a full-size move."""
DAY_S = 86_400.0


def outcome_delta(episode: Episode, outcome: Outcome) -> float:
    """The importance change of one outcome (see the :mod:`backend.memory.episodic`
    module docstring for the rule)."""
    move = min(1.0, abs(outcome.market_return) / MOVE_SCALE)
    delta = 0.2 * move
    acted = any(a.action != "hold" for a in episode.actions)
    if acted and outcome.pnl is not None:
        if outcome.pnl < 0:
            delta += 0.25
        elif outcome.pnl > 0:
            delta += 0.10
    elif not acted and move < 0.2:
        delta -= 0.05
    return delta


def _clip(value: float) -> float:
    return min(1.0, max(0.0, value))


def replay(
    base: Episode,
    log: list[dict[str, Any]],
    as_of_ts: float | None,
    *,
    horizon: str | None = None,
) -> Episode:
    """``base`` with the log entries recorded at or before ``as_of_ts`` (all if None), in
    log order. Entries are skipped, not a stop: concurrent writers with their own clocks
    (the decision loop, the scheduler's decay) may append a slightly older entry after a
    newer one. ``outcome`` is the latest one, or with ``horizon`` the latest over that
    horizon (None if there is none; the importance still takes every outcome's
    reflection)."""
    importance = base.importance
    actions = list(base.actions)
    outcome = base.outcome
    if horizon is not None and outcome is not None and outcome.horizon != horizon:
        outcome = None
    for entry in log:
        if as_of_ts is not None and float(entry["ts"]) > as_of_ts:
            continue
        op = entry["op"]
        if op == "action":
            actions.append(ActionLink.model_validate(entry["action"]))
        elif op == "outcome":
            if horizon is None or entry["outcome"].get("horizon") == horizon:
                outcome = Outcome.model_validate(entry["outcome"])
            importance = _clip(importance + float(entry["delta"]))
        elif op == "decay":
            importance = _clip(importance * float(entry["factor"]))
    return base.model_copy(
        update={"importance": round(importance, 9), "actions": actions, "outcome": outcome}
    )


def decode(record: MemoryRecord) -> tuple[Episode, list[dict[str, Any]]]:
    """The base episode and the log of an episodic ``record``. Raises
    :class:`StoreError` (not an episodic record), :class:`TenantScopeError`."""
    try:
        base = Episode.model_validate_json(str(record.metadata["episode"]))
        log: list[dict[str, Any]] = json.loads(str(record.metadata.get("log", "[]")))
    except (KeyError, ValueError) as exc:
        raise StoreError(f"record {record.id!r}: not a valid episodic record ({exc})") from None
    if base.trader_id != record.trader_id:
        raise TenantScopeError(f"episode {record.id!r} belongs to {base.trader_id!r}")
    return base, log


def encode(base: Episode, log: list[dict[str, Any]]) -> MemoryRecord:
    """The record of ``base`` and its ``log`` (top-level importance: the latest value)."""
    latest = replay(base, log, None)
    return MemoryRecord(
        id=base.id,
        trader_id=base.trader_id,
        text=base.description,
        created_at=base.occurred_at,
        kind=EPISODIC_KIND,
        importance=latest.importance,
        metadata={
            "event_type": base.event_type,
            "symbol": base.symbol,
            "occurred_at_ts": base.occurred_at.timestamp(),
            "episode": base.model_dump_json(),
            "log": json.dumps(log, separators=(",", ":")),
        },
    )


def record_as_of(record: MemoryRecord, as_of_ts: float) -> MemoryRecord:
    """An episodic ``record`` as it stood at ``as_of_ts`` (UNIX seconds): its log cut to
    the entries recorded by then and its importance of then. The store fences a record by
    its creation time only, and keeps an episode's record as last written: a raw read
    (:meth:`KhalaStore.search`, ``sentinel memory search``) would show outcomes and
    importance changes recorded later. Raises what :func:`decode` raises."""
    base, log = decode(record)
    kept = [e for e in log if float(e["ts"]) <= as_of_ts]
    return record.model_copy(
        update={
            "importance": replay(base, kept, None).importance,
            "metadata": {**record.metadata, "log": json.dumps(kept, separators=(",", ":"))},
        }
    )


def record_filters(
    symbol: str | None, event_types: Sequence[EpisodeType] | None
) -> dict[str, str | list[str]]:
    """Store filters of the episodic records (of one symbol / some types)."""
    filters: dict[str, str | list[str]] = {"kind": EPISODIC_KIND}
    if symbol is not None:
        filters["symbol"] = symbol
    if event_types is not None:
        filters["event_type"] = list(event_types)
    return filters


# ------------------------------------------------------------------ log entries


def added_record(episode: Episode, log: list[dict[str, Any]], as_of: datetime) -> MemoryRecord:
    """The record of ``episode`` added at ``as_of`` over ``log`` (the stored one's, or
    empty): the actions and outcome it carries are logged as recorded at ``as_of``, once
    (ones already logged are not logged again), without an importance change."""
    base = episode.model_copy(update={"actions": [], "outcome": None})
    stamp = {"at": to_utc(as_of).isoformat(), "ts": to_utc(as_of).timestamp()}
    logged = [e.get("action", e.get("outcome")) for e in log]
    for action in episode.actions:
        dumped = action.model_dump(mode="json")
        if dumped not in logged:
            log.append({**stamp, "op": "action", "action": dumped})
    if episode.outcome is not None:
        dumped = episode.outcome.model_dump(mode="json")
        if dumped not in logged:
            log.append({**stamp, "op": "outcome", "outcome": dumped, "delta": 0.0})
    return encode(base, log)


def horizon_end(occurred_at: datetime, horizon: str) -> datetime | None:
    """When an outcome over ``horizon`` of an episode at ``occurred_at`` is known: the
    episode's time plus the horizon, a ccxt timeframe (``1h``, ``24h``, ``1d``...; what
    the decision loop and the scheduler label theirs with). ``None`` for a label that is
    not one (``trade``: a trade's whole life; free text of an MCP caller): nothing to
    check. A decision loop filters outcomes by label, so a ``1d`` outcome recorded an hour
    after its episode would pass an hour's return off as a day's."""
    if horizon == "trade":
        return None
    try:
        seconds = timeframe_seconds(horizon)
    except DataError:
        return None
    try:
        return occurred_at + timedelta(seconds=seconds)
    except OverflowError:  # "999999y": it ends after the calendar does, never known
        return datetime.max.replace(tzinfo=UTC)


def log_outcome(
    episode_id: str, base: Episode, log: list[dict[str, Any]], outcome: Outcome
) -> None:
    """Insert ``outcome`` into ``log`` as known from its ``resolved_at`` (in time order,
    after entries of the same time), with its importance change as of then; nothing if
    an outcome of its horizon is logged already, at any time: one outcome per episode
    and horizon (a re-run step, a tool's retry at a later clock, or the outcomes job run
    as of an earlier time after a later run had counted it twice). Raises
    :class:`StoreError` if it resolves before the episode, or before its horizon has
    passed (:func:`horizon_end`)."""
    if outcome.resolved_at < base.occurred_at:
        raise StoreError(f"episode {episode_id!r}: outcome resolves before the episode")
    end = horizon_end(base.occurred_at, outcome.horizon)
    if end is not None and outcome.resolved_at < end:
        raise StoreError(
            f"episode {episode_id!r}: a {outcome.horizon} outcome resolved at "
            f"{outcome.resolved_at.isoformat()} is known only from {end.isoformat()} (the "
            "episode's time plus the horizon)"
        )
    known = to_utc(outcome.resolved_at)
    recorded = outcome.model_dump(mode="json")
    if any(e["op"] == "outcome" and e["outcome"]["horizon"] == outcome.horizon for e in log):
        return  # this horizon's outcome is known already: the first one stands
    current = replay(base, log, known.timestamp())
    entry = {
        "at": known.isoformat(),
        "ts": known.timestamp(),
        "op": "outcome",
        "outcome": recorded,
        "delta": outcome_delta(current, outcome),
    }
    bisect.insort_right(log, entry, key=lambda e: float(e["ts"]))


def age_decay_entry(
    base: Episode, log: list[dict[str, Any]], moment: datetime, half_life_days: float
) -> dict[str, Any] | None:
    """The age-decay entry of an episode at ``moment`` (UTC; see
    :meth:`EpisodicMemory.decay_by_age`), or None: less than a whole day since its last
    age decay (or since it occurred), or an entry written later than ``moment``
    (decaying now would reorder its log)."""
    now_ts = moment.timestamp()
    through = max(
        [base.occurred_at.timestamp()]
        + [float(e["through"]) for e in log if e.get("op") == "decay" and "through" in e]
    )
    if any(float(e["ts"]) > now_ts for e in log):
        return None
    days = int((now_ts - through) // DAY_S)
    if days < 1:
        return None
    return {
        "at": moment.isoformat(),
        "ts": now_ts,
        "op": "decay",
        "factor": 0.5 ** (days / half_life_days),
        "through": through + days * DAY_S,
    }

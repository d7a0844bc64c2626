"""O-Mem's persona router: ADD / UPDATE / IGNORE per candidate, and the new profile.

Two kinds of candidates reach it:

- **fill attributes** (:func:`route_fill_attributes`), computed from all the trader's fills
  known at ``as_of``. No existing attribute -> ``ADD``; another value -> ``UPDATE``; the
  same value -> no change record (nothing new; its confidence/evidence are refreshed when
  the version changes anyway). A candidate without evidence (``value=None``) is never
  added; against an existing value it is ``IGNORE`` ("weaker"), except in ``replace``
  mode (a full rebuild from exactly the given fills) where it is an ``UPDATE`` to
  ``None``. A candidate with less confidence *and* older evidence than the existing
  attribute is ``IGNORE`` ("weaker") outside ``replace`` mode;
- **decisions** about the trader's words (:func:`route_decisions`; from the rules or an
  LLM, the same :class:`~backend.llm.prompts.PersonaDecision` type). Constraints
  accumulate in the ``constraints`` attribute, one per kind: a new kind is ``ADD``, a new
  value of a known kind replaces it (``UPDATE``; ``forbidden_assets`` lists are united,
  so a forbidden asset is never silently allowed again), the same value is ``IGNORE``.
  A *looser* value (a larger cap, an allowed-asset list with a new asset) replaces the
  stored one only when its quote says the limit changes (``raise``, ``increase``,
  ``allow``, ``from now on``, ...: :func:`states_a_change`); otherwise it is ``IGNORE``,
  so a misread or offhand sentence never loosens a hard constraint.
  ``goals`` is a list (newest last, at most :data:`MAX_GOALS`): a new goal is ``ADD``.
  Stated ``preferred_assets``/``risk_tolerance``/``holding_period``/``style`` are kept as
  ``stated_<name>`` beside the fill-derived attribute of that name (what the trader says
  vs what the fills show). A decision the decider marked ``IGNORE`` is recorded as such;
  one that fails validation (missing payload, a constraint value out of range) is
  ``IGNORE`` with the reason.

The version increases by exactly 1 when a call has at least one ``ADD``/``UPDATE``;
otherwise the profile is returned unchanged. Every change of a call carries the
profile version in effect after the call. A failed or empty answer
(:func:`route_failure`) yields one ``IGNORE`` change and never touches the profile.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from backend.agents.memory._persona_change import sentence_of, states_a_change
from backend.agents.memory._persona_text import normalize_stated
from backend.llm.prompts import PersonaDecision
from backend.memory.models import (
    ChangeAction,
    HardConstraint,
    PersonaAttribute,
    PersonaChange,
    PersonaProfile,
)
from backend.types import to_utc

__all__ = [
    "MAX_GOALS",
    "TEXT_CONFIDENCE",
    "RouteResult",
    "check_constraint",
    "empty_profile",
    "refused_as_invalid",
    "route_decisions",
    "route_failure",
    "route_fill_attributes",
]

TextSource = Literal["rules", "llm"]
MAX_GOALS = 20
TEXT_CONFIDENCE: dict[str, float] = {"rules": 0.9, "llm": 0.8}
"""Confidence of an attribute read from the trader's own words, by extractor."""
_FRACTION_KINDS = ("max_risk_per_trade", "max_position_fraction", "max_daily_loss")
_FLAG_KINDS = ("no_memecoins", "long_only", "no_leverage")
_EVIDENCE_MAX = 50


@dataclass(frozen=True)
class RouteResult:
    """The profile after routing (the same object when nothing changed) and the changes."""

    profile: PersonaProfile
    changes: list[PersonaChange] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return any(c.action != "IGNORE" for c in self.changes)


@dataclass
class _Pending:
    attribute: str
    action: ChangeAction
    old: Any
    new: Any
    reason: str


def empty_profile(trader_id: str, as_of: datetime) -> PersonaProfile:
    """Version 0: nothing known yet."""
    return PersonaProfile(trader_id=trader_id, version=0, as_of=to_utc(as_of))


def same_value(a: Any, b: Any) -> bool:
    """Deep equality of JSON values (``1`` == ``1.0``, mapping order ignored)."""
    return json.dumps(a, sort_keys=True, default=str) == json.dumps(b, sort_keys=True, default=str)


def _finish(
    profile: PersonaProfile,
    attrs: dict[str, PersonaAttribute],
    pending: list[_Pending],
    *,
    as_of: datetime,
    source: Literal["fills", "rules", "llm"],
) -> RouteResult:
    changed = any(p.action != "IGNORE" for p in pending)
    version = profile.version + 1 if changed else profile.version
    new = (
        PersonaProfile(trader_id=profile.trader_id, version=version, as_of=as_of, attributes=attrs)
        if changed
        else profile
    )
    changes = [
        PersonaChange(
            trader_id=profile.trader_id,
            attribute=p.attribute,
            action=p.action,
            old_value=p.old,
            new_value=p.new,
            reason=p.reason,
            source=source,
            as_of=as_of,
            version=version,
        )
        for p in pending
    ]
    return RouteResult(new, changes)


def route_fill_attributes(
    profile: PersonaProfile,
    candidates: Mapping[str, PersonaAttribute],
    *,
    as_of: datetime,
    replace: bool = False,
) -> RouteResult:
    """Route attributes computed from fills against ``profile`` (see the module doc)."""
    fence = to_utc(as_of)
    attrs = dict(profile.attributes)
    pending: list[_Pending] = []
    for name, cand in candidates.items():
        old = profile.attributes.get(name)
        if cand.name != name or cand.source != "fills":
            pending.append(_Pending(name, "IGNORE", None, None, "invalid: not a fill attribute"))
            continue
        if old is not None:
            cand = cand.model_copy(update={"first_seen": min(old.first_seen, cand.first_seen)})
        if cand.value is None:
            if old is None or old.value is None:
                continue
            if not replace:
                reason = "weaker: no evidence in the fills"
                pending.append(_Pending(name, "IGNORE", old.value, None, reason))
                continue
            pending.append(_Pending(name, "UPDATE", old.value, None, "no evidence left"))
        elif old is None or old.value is None:
            pending.append(_Pending(name, "ADD", None, cand.value, _why(cand)))
        elif same_value(old.value, cand.value):
            pass
        elif not replace and (
            cand.confidence < old.confidence and cand.last_updated < old.last_updated
        ):
            reason = f"weaker: confidence {cand.confidence} < {old.confidence}, older evidence"
            pending.append(_Pending(name, "IGNORE", old.value, cand.value, reason))
            continue
        else:
            pending.append(_Pending(name, "UPDATE", old.value, cand.value, _why(cand)))
        attrs[name] = cand
    return _finish(profile, attrs, pending, as_of=fence, source="fills")


def _why(attr: PersonaAttribute) -> str:
    return f"{attr.evidence_count} fills, confidence {attr.confidence}"


_TICKER = re.compile(r"[A-Z0-9@][A-Z0-9@._\-]{0,19}")
"""An upper-cased ticker (``BTC``, ``1000PEPE``, ``KPEPE``, Hyperliquid spot ids ``@107``):
no brackets or other markup can reach the prompt's hard-constraints line."""


def check_constraint(constraint: HardConstraint) -> HardConstraint | str:
    """The constraint in canonical form, or why it is invalid: fractions in (0, 1];
    ``max_leverage`` in (0, 200]; ``max_position_notional`` and ``max_loss_per_trade`` > 0;
    asset kinds a non-empty list of tickers (upper-cased, 1-20 chars of A-Z 0-9 @ . _ -);
    flag kinds ``True``."""
    kind, value = constraint.kind, constraint.value
    if kind in _FLAG_KINDS:
        return constraint if value is True else f"{kind} must be true, got {value!r}"
    if kind in ("forbidden_assets", "allowed_assets"):
        if not isinstance(value, list) or not value:
            return f"{kind} needs a non-empty list of tickers, got {value!r}"
        tickers = list(dict.fromkeys(str(v).strip().upper() for v in value))
        if not all(_TICKER.fullmatch(t) for t in tickers):
            return f"{kind}: invalid ticker in {value!r}"
        return constraint.model_copy(update={"value": tickers})
    if isinstance(value, bool) or not isinstance(value, int | float):
        return f"{kind} needs a number, got {value!r}"
    number = float(value)
    limits = {
        "max_leverage": (0.0, 200.0),
        "max_position_notional": (0.0, 1e15),
        "max_loss_per_trade": (0.0, 1e15),
    }
    low, high = limits.get(kind, (0.0, 1.0))
    if not low < number <= high:
        return f"{kind} = {number} is outside ({low}, {high}]"
    return constraint.model_copy(update={"value": number})


def _text_attr(
    name: str,
    value: Any,
    old: PersonaAttribute | None,
    *,
    source: TextSource,
    as_of: datetime,
    evidence_id: str,
) -> PersonaAttribute:
    evidence = list(old.evidence) if old is not None else []
    count = old.evidence_count if old is not None else 0
    if not evidence or evidence[-1] != evidence_id:
        evidence.append(evidence_id)
        count += 1
    return PersonaAttribute(
        name=name,
        value=value,
        confidence=TEXT_CONFIDENCE[source],
        evidence=evidence[-_EVIDENCE_MAX:],
        evidence_count=count,
        source=source,
        first_seen=old.first_seen if old is not None else as_of,
        last_updated=as_of,
    )


def route_decisions(
    profile: PersonaProfile,
    decisions: Sequence[PersonaDecision],
    *,
    as_of: datetime,
    source: TextSource,
    evidence_id: str,
    text: str | None = None,
) -> RouteResult:
    """Route decisions about the trader's words (``evidence_id``: the note they came
    from; ``text``: its words, when known) against ``profile`` (see the module doc). A
    looser limit is read in the note's whole sentence that holds its quote (a model
    quotes a fragment: "raise my leverage to 10x" of "Should I raise my leverage to
    10x?"), and refused when the note does not hold the quote."""
    fence = to_utc(as_of)
    attrs = dict(profile.attributes)
    pending: list[_Pending] = []

    def put(name: str, value: Any) -> None:
        attrs[name] = _text_attr(
            name, value, attrs.get(name), source=source, as_of=fence, evidence_id=evidence_id
        )

    for d in decisions:
        if d.action == "IGNORE":
            pending.append(_Pending(d.attribute, "IGNORE", None, None, d.reason or "ignored"))
        elif d.attribute == "constraints":
            _route_constraint(d, attrs, pending, put, text)
        elif d.attribute == "goals":
            goal = " ".join((d.goal or d.value or "").split())
            old_goals = list(attrs["goals"].value) if "goals" in attrs else []
            if not goal:
                pending.append(_Pending("goals", "IGNORE", None, None, "invalid: empty goal"))
            elif goal.casefold() in {g.casefold() for g in old_goals}:
                pending.append(_Pending("goals", "IGNORE", goal, goal, "unchanged: known goal"))
            else:
                put("goals", [*old_goals, goal][-MAX_GOALS:])
                pending.append(_Pending("goals", "ADD", None, goal, d.reason))
        else:
            name = f"stated_{d.attribute}"
            value = normalize_stated(d.attribute, d.value) if d.value else None
            old = attrs.get(name)
            if not value:
                pending.append(_Pending(name, "IGNORE", None, d.value, "invalid: no value"))
            elif old is not None and same_value(old.value, value):
                pending.append(_Pending(name, "IGNORE", old.value, value, "unchanged"))
            else:
                put(name, value)
                action: ChangeAction = "ADD" if old is None else "UPDATE"
                pending.append(_Pending(name, action, old.value if old else None, value, d.reason))
    return _finish(profile, attrs, pending, as_of=fence, source=source)


def _route_constraint(
    d: PersonaDecision,
    attrs: dict[str, PersonaAttribute],
    pending: list[_Pending],
    put: Any,
    text: str | None,
) -> None:
    if d.constraint is None:
        pending.append(_Pending("constraints", "IGNORE", None, None, "invalid: no constraint"))
        return
    checked = check_constraint(d.constraint)
    if isinstance(checked, str):
        new_raw = d.constraint.model_dump(mode="json")
        pending.append(_Pending("constraints", "IGNORE", None, new_raw, f"invalid: {checked}"))
        return
    current: list[dict[str, Any]] = (
        list(attrs["constraints"].value) if "constraints" in attrs else []
    )
    index = next((i for i, c in enumerate(current) if c.get("kind") == checked.kind), None)
    old = current[index] if index is not None else None
    if old is not None and checked.kind == "forbidden_assets":
        united = list(dict.fromkeys([*old["value"], *checked.value]))  # type: ignore[misc]
        checked = checked.model_copy(update={"value": united})
    new = checked.model_dump(mode="json")
    if old is not None and same_value(old["value"], new["value"]):
        pending.append(_Pending("constraints", "IGNORE", old, new, f"unchanged: {checked.kind}"))
        return
    looser = old is not None and _looser(checked.kind, old["value"], new["value"])
    said = checked.quote if text is None else sentence_of(checked.quote, text)
    numeric = not isinstance(new["value"], list)
    if looser and old is not None and not (said and states_a_change(said, numeric=numeric)):
        reason = (
            f"looser than the stored {checked.kind} {old['value']}: a hard constraint is "
            "relaxed only when the trader says it changes (e.g. 'raise my max leverage to 10x')"
        )
        pending.append(_Pending("constraints", "IGNORE", old, new, reason))
        return
    if index is None:
        current.append(new)
    else:
        current[index] = new
    put("constraints", current)
    action: ChangeAction = "ADD" if old is None else "UPDATE"
    pending.append(_Pending("constraints", action, old, new, d.reason))


def _looser(kind: str, old: Any, new: Any) -> bool:
    """Whether ``new`` allows more than ``old``: a larger cap, or an allowed-asset list
    with an asset the old one did not allow (booleans and forbidden lists never loosen:
    those are only ever set or united)."""
    if kind == "allowed_assets" and isinstance(old, list) and isinstance(new, list):
        return not {str(a).upper() for a in new} <= {str(a).upper() for a in old}
    numbers = (int, float)
    if isinstance(old, bool | list) or isinstance(new, bool | list):
        return False
    return isinstance(old, numbers) and isinstance(new, numbers) and new > old


def route_failure(
    profile: PersonaProfile, *, as_of: datetime, source: TextSource, error: str
) -> RouteResult:
    """A failed or empty answer: one ``IGNORE`` change (attribute ``profile``) with the
    error as reason; the profile is returned unchanged."""
    pending = [_Pending("profile", "IGNORE", None, None, f"{source} answer rejected: {error}")]
    return _finish(profile, dict(profile.attributes), pending, as_of=to_utc(as_of), source=source)


def refused_as_invalid(change: PersonaChange) -> bool:
    """Whether the router refused a decision as invalid (its ``IGNORE`` reasons of that
    kind start with "invalid"; a decision it applied keeps the model's own reason)."""
    return change.action == "IGNORE" and change.reason.startswith("invalid")

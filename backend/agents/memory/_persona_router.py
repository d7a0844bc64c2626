"""O-Mem's persona router: ADD / UPDATE / IGNORE (and DELETE of a lifted ban) per candidate,
and the new profile.

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
  so a forbidden asset is never silently allowed again: only a lift, below), the same
  value is ``IGNORE``.
  A *looser* value (a larger cap, an allowed-asset list with a new asset) replaces the
  stored one only when its quote says the limit changes (``raise``, ``increase``,
  ``allow``, ``from now on``, ...: :func:`states_a_change`); otherwise it is ``IGNORE``,
  so a misread or offhand sentence never loosens a hard constraint. A ``DELETE`` lifts a
  forbidden asset or a flag rule (:data:`._persona_lifts.LIFTABLE_KINDS`) only when the
  note (or a chat's run of the trader's messages up to it) is nothing but lifts that the
  rules of :mod:`._persona_lifts` read ("SOL is allowed again.", "You can short again.");
  the change's ``new_value`` is what is left of the rule (``None``: gone). A numeric cap
  is never deleted (it is raised by saying so), nor any other attribute.
  ``goals`` is a list (newest last, at most :data:`MAX_GOALS`): a new goal is ``ADD``.
  Stated ``preferred_assets``/``risk_tolerance``/``holding_period``/``style`` are kept as
  ``stated_<name>`` beside the fill-derived attribute of that name (what the trader says
  vs what the fills show). A model's goal or stated value must be read, not negated,
  in the note's own words (:func:`~._persona_said.stated_in`), else ``IGNORE``
  ("invalid: not in the trader's words"); one the profile already holds is "unchanged".
  A decision the decider marked ``IGNORE`` is recorded as such;
  one that fails validation (missing payload, a constraint value out of range) is
  ``IGNORE`` with the reason.

The version increases by exactly 1 when a call has at least one ``ADD``/``UPDATE``/``DELETE``;
otherwise the profile is returned unchanged. Every change of a call carries the
profile version in effect after the call. A failed answer
(:func:`route_failure`) yields one ``IGNORE`` change and never touches the profile.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from backend.agents.memory._persona_constraint_router import (
    UNSAID,
    Pending,
    check_constraint,
    route_constraint,
    route_lift,
    same_value,
)
from backend.agents.memory._persona_text import normalize_stated, stated_in
from backend.llm.prompts import PersonaDecision
from backend.memory.models import (
    ChangeAction,
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
_EVIDENCE_MAX = 50


@dataclass(frozen=True)
class RouteResult:
    """The profile after routing (the same object when nothing changed) and the changes."""

    profile: PersonaProfile
    changes: list[PersonaChange] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return any(c.action != "IGNORE" for c in self.changes)


def empty_profile(trader_id: str, as_of: datetime) -> PersonaProfile:
    """Version 0: nothing known yet."""
    return PersonaProfile(trader_id=trader_id, version=0, as_of=to_utc(as_of))


def _finish(
    profile: PersonaProfile,
    attrs: dict[str, PersonaAttribute],
    pending: list[Pending],
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
    pending: list[Pending] = []
    for name, cand in candidates.items():
        old = profile.attributes.get(name)
        if cand.name != name or cand.source != "fills":
            pending.append(Pending(name, "IGNORE", None, None, "invalid: not a fill attribute"))
            continue
        if old is not None:
            cand = cand.model_copy(update={"first_seen": min(old.first_seen, cand.first_seen)})
        if cand.value is None:
            if old is None or old.value is None:
                continue
            if not replace:
                reason = "weaker: no evidence in the fills"
                pending.append(Pending(name, "IGNORE", old.value, None, reason))
                continue
            pending.append(Pending(name, "UPDATE", old.value, None, "no evidence left"))
        elif old is None or old.value is None:
            pending.append(Pending(name, "ADD", None, cand.value, _why(cand)))
        elif same_value(old.value, cand.value):
            pass
        elif not replace and (
            cand.confidence < old.confidence and cand.last_updated < old.last_updated
        ):
            reason = f"weaker: confidence {cand.confidence} < {old.confidence}, older evidence"
            pending.append(Pending(name, "IGNORE", old.value, cand.value, reason))
            continue
        else:
            pending.append(Pending(name, "UPDATE", old.value, cand.value, _why(cand)))
        attrs[name] = cand
    return _finish(profile, attrs, pending, as_of=fence, source="fills")


def _why(attr: PersonaAttribute) -> str:
    return f"{attr.evidence_count} fills, confidence {attr.confidence}"


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
    lift_note: str | None = None,
) -> RouteResult:
    """Route decisions about the trader's words (``evidence_id``: the note they came
    from; ``text``: its words, when known) against ``profile`` (see the module doc). A
    looser limit is read in the note's whole sentence that holds its quote (a model
    quotes a fragment: "raise my leverage to 10x" of "Should I raise my leverage to
    10x?"), and refused when the note does not hold the quote. A lift is read in
    ``lift_note`` (a chat's run of the trader's messages up to this one), default
    ``text``."""
    fence = to_utc(as_of)
    attrs = dict(profile.attributes)
    pending: list[Pending] = []

    def put(name: str, value: Any) -> None:
        attrs[name] = _text_attr(
            name, value, attrs.get(name), source=source, as_of=fence, evidence_id=evidence_id
        )

    def unsaid(attribute: str, value: str | list[str]) -> bool:  # a model's, not in the note
        return source == "llm" and text is not None and not stated_in(attribute, value, text)

    for d in decisions:
        if d.action == "IGNORE":
            pending.append(Pending(d.attribute, "IGNORE", None, None, d.reason or "ignored"))
        elif d.action == "DELETE" and d.attribute == "constraints":
            route_lift(d, attrs, pending, put, text if lift_note is None else lift_note)
        elif d.action == "DELETE":
            reason = "invalid: only a hard constraint the trader lifts is deleted"
            pending.append(Pending(d.attribute, "IGNORE", None, d.value or d.goal, reason))
        elif d.attribute == "constraints":
            said_in = text if source == "llm" else None
            route_constraint(d, attrs, pending, put, text, said_in=said_in)
        elif d.attribute == "goals":
            goal = " ".join((d.goal or d.value or "").split())
            old_goals = list(attrs["goals"].value) if "goals" in attrs else []
            if not goal:
                pending.append(Pending("goals", "IGNORE", None, None, "invalid: empty goal"))
            elif goal.casefold() in {g.casefold() for g in old_goals}:
                pending.append(Pending("goals", "IGNORE", goal, goal, "unchanged: known goal"))
            elif unsaid("goals", goal):  # after "known": a model echoes the profile it is shown
                pending.append(Pending("goals", "IGNORE", None, goal, UNSAID))
            else:
                put("goals", [*old_goals, goal][-MAX_GOALS:])
                pending.append(Pending("goals", "ADD", None, goal, d.reason))
        else:
            name = f"stated_{d.attribute}"
            value = normalize_stated(d.attribute, d.value) if d.value else None
            old = attrs.get(name)
            if not value:
                pending.append(Pending(name, "IGNORE", None, d.value, "invalid: no value"))
            elif old is not None and same_value(old.value, value):
                pending.append(Pending(name, "IGNORE", old.value, value, "unchanged"))
            elif unsaid(d.attribute, value):
                pending.append(Pending(name, "IGNORE", None, value, UNSAID))
            else:
                put(name, value)
                action: ChangeAction = "ADD" if old is None else "UPDATE"
                pending.append(Pending(name, action, old.value if old else None, value, d.reason))
    return _finish(profile, attrs, pending, as_of=fence, source=source)


def route_failure(
    profile: PersonaProfile, *, as_of: datetime, source: TextSource, error: str
) -> RouteResult:
    """A failed answer (one of only invalid decisions, or an empty one that missed what
    the rules read: :func:`~._persona_reading.route_text`): one ``IGNORE`` change
    (attribute ``profile``) with the error as reason; the profile is returned unchanged."""
    pending = [Pending("profile", "IGNORE", None, None, f"{source} answer rejected: {error}")]
    return _finish(profile, dict(profile.attributes), pending, as_of=to_utc(as_of), source=source)


def refused_as_invalid(change: PersonaChange) -> bool:
    """Whether the router refused a decision as invalid (its ``IGNORE`` reasons of that
    kind start with "invalid"; a decision it applied keeps the model's own reason)."""
    return change.action == "IGNORE" and change.reason.startswith("invalid")

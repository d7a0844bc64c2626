"""How a note the trader wrote is routed into the persona: the model's reading first (if
one was asked), then the offline rules' (:func:`route_text`, called by
:meth:`~backend.agents.memory.PersonaManager.update_from_text` under the store's writer
lock)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from backend.agents.memory._persona_change import reads_a_change
from backend.agents.memory._persona_router import (
    RouteResult,
    refused_as_invalid,
    route_decisions,
    route_failure,
)
from backend.agents.memory._persona_text import text_decisions
from backend.llm.prompts import PersonaDecision
from backend.memory.models import PersonaChange, PersonaProfile

__all__ = ["route_text"]


def route_text(
    profile: PersonaProfile,
    text: str,
    asked: Sequence[PersonaDecision],
    *,
    failure: str | None,
    as_of: datetime,
    evidence_id: str,
    lift_note: str | None = None,
    answered_empty: bool = False,
) -> RouteResult | None:
    """Route ``text`` against ``profile``: the model's decisions ``asked`` (empty: no
    model, it failed with ``failure``, or it answered an empty list: ``answered_empty``),
    then the offline rules' (the policy of
    :meth:`~backend.agents.memory.PersonaManager.update_from_text`); one new version
    at most, every change stamped with it. None when nothing about the trader was found
    and the model, if asked, neither failed nor decided anything.

    An empty answer is the model's reading that nothing changes: no failure when the
    rules change nothing either (a chat's "hi"), the model's failure (``"empty answer"``,
    recorded as a failed answer is) when the rules' reading changes the profile, so a
    model that answers ``[]`` to every note is as loud as one that does not answer.

    A lift (``DELETE``) removes a hard risk limit. The model's is applied only when the
    rules read the same lift in the note (its tickers among theirs: the router); the
    rules' own lift of a kind is dropped when the model read a ban of that kind in the
    same note (a valid ``ADD``/``UPDATE`` of it), so the stricter reading stands.
    Otherwise the rules' lift stands, as their reading of a raised cap does: a model that
    answers something else (measured: Gemma 3 270M, asked "You can short again.",
    answered a made-up ``stated_style``) does not keep a ban the trader lifted. A lift
    is read in ``lift_note`` when given (a chat's run of the trader's messages up to
    this one: "don't" / "unban SOL" lifts nothing), else in ``text``."""
    fence, note = as_of, evidence_id
    result = RouteResult(profile=profile)
    proposed: list[tuple[PersonaDecision, PersonaChange]] = []
    if asked:
        result = route_decisions(
            profile, asked, as_of=fence, source="llm", evidence_id=note, text=text,
            lift_note=lift_note,
        )  # fmt: skip
        proposed = [  # the router writes one change per decision, in order
            (d, c) for d, c in zip(asked, result.changes, strict=True)
            if d.action != "IGNORE"
        ]  # fmt: skip
        invalid = [c.reason for _, c in proposed if refused_as_invalid(c)]
        if invalid and len(invalid) == len(proposed):
            failure = f"no usable decision ({invalid[0]})"
    rules = text_decisions(text, profile=result.profile)
    banned = {  # the kinds of rule the model read a ban of in this note (valid, applied or not)
        d.constraint.kind for d, c in proposed
        if d.constraint is not None and d.action in ("ADD", "UPDATE") and not refused_as_invalid(c)
    }  # fmt: skip
    rules = [
        d for d in rules
        if d.action != "DELETE" or d.constraint is None or d.constraint.kind not in banned
    ]  # fmt: skip
    read = [d.constraint for d, c in proposed if not refused_as_invalid(c)]
    if read:  # the model read the note: the rules, its limits but a change it read
        changed = {c.kind for c in read if c is not None and reads_a_change(c, text)}
        rules = [d for d in rules if d.constraint is not None and d.constraint.kind not in changed]
    if not rules and not asked and failure is None:
        return None
    if rules:  # on the model's attributes, as the same new version
        base = result.profile.model_copy(update={"version": profile.version})
        ruled = route_decisions(
            base, rules, as_of=fence, source="rules", evidence_id=note, text=text,
            lift_note=lift_note,
        )  # fmt: skip
        final = ruled.profile if ruled.changed else result.profile
        late = [c.model_copy(update={"version": final.version}) for c in ruled.changes]
        result = RouteResult(profile=final, changes=result.changes + late)
        if answered_empty and ruled.changed and failure is None:
            failure = "empty answer, but the note changes the profile (the rules read it)"
    if failure is not None:
        failed = route_failure(profile, as_of=fence, source="llm", error=failure)
        result = RouteResult(profile=result.profile, changes=failed.changes + result.changes)
    version = result.profile.version  # every change: the version after the call
    return RouteResult(
        profile=result.profile,
        changes=[c.model_copy(update={"version": version}) for c in result.changes],
    )

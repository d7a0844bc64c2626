"""The persona router: ADD / UPDATE / IGNORE, versions, and failures that change nothing."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from backend.agents.memory._persona_router import (
    check_constraint,
    empty_profile,
    route_decisions,
    route_failure,
    route_fill_attributes,
)
from backend.llm.prompts import PersonaDecision
from backend.memory.models import HardConstraint, PersonaAttribute, PersonaProfile

T1 = datetime(2025, 2, 1, tzinfo=UTC)
T2 = T1 + timedelta(days=1)


def attr(name: str, value: Any, *, conf: float = 0.5, at: datetime = T1) -> PersonaAttribute:
    return PersonaAttribute(
        name=name,
        value=value,
        confidence=conf if value is not None else 0.0,
        evidence=["f1"] if value is not None else [],
        evidence_count=1 if value is not None else 0,
        source="fills",
        first_seen=at,
        last_updated=at,
    )


def constraint(kind: str, value: Any, action: str = "ADD", quote: str = "q") -> PersonaDecision:
    return PersonaDecision(
        attribute="constraints",
        action=action,
        constraint=HardConstraint(kind=kind, value=value, quote=quote),
        reason="r",
    )


def profile_with(**values: Any) -> PersonaProfile:
    result = route_fill_attributes(
        empty_profile("t", T1), {k: attr(k, v) for k, v in values.items()}, as_of=T1
    )
    return result.profile


def test_fill_attributes_add_update_and_unchanged() -> None:
    base = empty_profile("t", T1)
    first = route_fill_attributes(base, {"long_share": attr("long_share", 0.4)}, as_of=T1)
    assert first.changed and first.profile.version == 1
    assert [(c.attribute, c.action, c.version) for c in first.changes] == [("long_share", "ADD", 1)]
    same = route_fill_attributes(
        first.profile, {"long_share": attr("long_share", 0.4, conf=0.9, at=T2)}, as_of=T2
    )
    assert not same.changed and same.changes == [] and same.profile is first.profile
    moved = route_fill_attributes(
        first.profile, {"long_share": attr("long_share", 0.6, at=T2)}, as_of=T2
    )
    assert [(c.action, c.old_value, c.new_value) for c in moved.changes] == [("UPDATE", 0.4, 0.6)]
    assert moved.profile.version == 2 and moved.profile.as_of == T2
    assert moved.profile.attributes["long_share"].first_seen == T1  # first known, kept


def test_unchanged_attributes_are_refreshed_when_the_version_moves() -> None:
    start = profile_with(long_share=0.4, win_rate=0.5)
    result = route_fill_attributes(
        start,
        {"long_share": attr("long_share", 0.4, conf=0.9, at=T2), "win_rate": attr("win_rate", 0.6)},
        as_of=T2,
    )
    assert [c.attribute for c in result.changes] == ["win_rate"]
    assert result.profile.attributes["long_share"].confidence == 0.9


def test_no_evidence_is_weaker_except_in_a_rebuild() -> None:
    start = profile_with(win_rate=0.5)
    none = {"win_rate": attr("win_rate", None, at=T2), "leverage": attr("leverage", None)}
    merged = route_fill_attributes(start, none, as_of=T2)
    assert [(c.attribute, c.action) for c in merged.changes] == [("win_rate", "IGNORE")]
    assert "weaker" in merged.changes[0].reason
    assert merged.profile is start and "leverage" not in merged.profile.attributes
    rebuilt = route_fill_attributes(start, none, as_of=T2, replace=True)
    assert [(c.attribute, c.action) for c in rebuilt.changes] == [("win_rate", "UPDATE")]
    assert rebuilt.profile.attributes["win_rate"].value is None


def test_stale_weaker_candidate_is_ignored() -> None:
    start = route_fill_attributes(
        empty_profile("t", T2), {"win_rate": attr("win_rate", 0.5, conf=0.9, at=T2)}, as_of=T2
    ).profile
    stale = route_fill_attributes(
        start, {"win_rate": attr("win_rate", 0.7, conf=0.2, at=T1)}, as_of=T2
    )
    assert [c.action for c in stale.changes] == ["IGNORE"] and stale.profile is start


def test_constraints_accumulate_and_same_kind_replaces() -> None:
    p0 = empty_profile("t", T1)
    r1 = route_decisions(
        p0, [constraint("max_leverage", 3.0)], as_of=T1, source="rules", evidence_id="n1"
    )
    r2 = route_decisions(
        r1.profile,
        [constraint("max_risk_per_trade", 0.02), constraint("max_leverage", 3)],
        as_of=T2,
        source="rules",
        evidence_id="n2",
    )
    assert [(c.action, c.reason) for c in r2.changes] == [
        ("ADD", "r"),
        ("IGNORE", "unchanged: max_leverage"),
    ]
    assert r2.profile.version == 2
    # a looser limit said in passing is not taken: a hard constraint only relaxes when
    # the trader says it changes; a stricter one always is
    offhand = route_decisions(
        r2.profile, [constraint("max_leverage", 5.0, quote="I don't mind 5x")], as_of=T2,
        source="llm", evidence_id="n3",
    )  # fmt: skip
    (ignored,) = offhand.changes
    assert ignored.action == "IGNORE" and "looser than the stored max_leverage" in ignored.reason
    assert offhand.profile == r2.profile
    stricter = route_decisions(
        r2.profile, [constraint("max_leverage", 2.0)], as_of=T2, source="rules", evidence_id="n3"
    )
    assert stricter.changes[0].action == "UPDATE"
    r3 = route_decisions(
        r2.profile, [constraint("max_leverage", 5.0, quote="raise my max leverage to 5x")],
        as_of=T2, source="llm", evidence_id="n3",
    )  # fmt: skip
    change = r3.changes[0]
    assert (change.action, change.old_value["value"], change.new_value["value"]) == (
        "UPDATE",
        3.0,
        5.0,
    )
    kinds = {c.kind: c.value for c in r3.profile.constraints()}
    assert kinds == {"max_leverage": 5.0, "max_risk_per_trade": 0.02}
    held = r3.profile.attributes["constraints"]
    assert held.source == "llm" and held.evidence == ["n1", "n2", "n3"]
    assert held.evidence_count == 3 and held.first_seen == T1


def test_forbidden_assets_are_united() -> None:
    r1 = route_decisions(
        empty_profile("t", T1),
        [constraint("forbidden_assets", ["sol"])],
        as_of=T1,
        source="rules",
        evidence_id="n1",
    )
    r2 = route_decisions(
        r1.profile,
        [constraint("forbidden_assets", ["DOGE"])],
        as_of=T2,
        source="rules",
        evidence_id="n2",
    )
    assert r2.changes[0].action == "UPDATE"
    assert r2.profile.constraints()[0].value == ["SOL", "DOGE"]


def test_invalid_and_ignored_decisions_change_nothing() -> None:
    start = profile_with(long_share=0.4)
    decisions = [
        constraint("max_risk_per_trade", 2.0),  # 200% is not a fraction
        constraint("max_leverage", -1.0),
        constraint("long_only", False),
        constraint("allowed_assets", []),
        PersonaDecision(attribute="constraints", action="ADD", reason="no payload"),
        PersonaDecision(attribute="goals", action="ADD", goal="  ", reason="blank"),
        PersonaDecision(attribute="style", action="UPDATE", value=None, reason="no value"),
        PersonaDecision(attribute="risk_tolerance", action="IGNORE", value="x", reason="vague"),
    ]
    result = route_decisions(start, decisions, as_of=T2, source="llm", evidence_id="n")
    assert result.profile is start and not result.changed
    assert [c.action for c in result.changes] == ["IGNORE"] * len(decisions)
    assert all(c.version == start.version for c in result.changes)
    assert result.changes[0].reason.startswith("invalid: max_risk_per_trade")
    assert result.changes[-1].reason == "vague"


def test_check_constraint_canonical_forms() -> None:
    ok = check_constraint(
        HardConstraint(kind="allowed_assets", value=[" btc", "BTC", "eth"], quote="")
    )
    assert isinstance(ok, HardConstraint) and ok.value == ["BTC", "ETH"]
    lev = check_constraint(HardConstraint(kind="max_leverage", value=3, quote=""))
    assert isinstance(lev, HardConstraint) and lev.value == 3.0
    assert isinstance(
        check_constraint(HardConstraint(kind="max_daily_loss", value=True, quote="")), str
    )


def test_goals_and_stated_attributes() -> None:
    goal = PersonaDecision(attribute="goals", action="ADD", goal="Double the account", reason="g")
    style = PersonaDecision(attribute="style", action="ADD", value="swing trader", reason="s")
    r1 = route_decisions(
        empty_profile("t", T1), [goal, style], as_of=T1, source="rules", evidence_id="n1"
    )
    assert r1.profile.attributes["goals"].value == ["Double the account"]
    assert r1.profile.attributes["stated_style"].value == "swing"
    again = PersonaDecision(attribute="goals", action="ADD", goal="double the account", reason="")
    r2 = route_decisions(r1.profile, [again, style], as_of=T2, source="rules", evidence_id="n2")
    assert [c.action for c in r2.changes] == ["IGNORE", "IGNORE"] and r2.profile is r1.profile


def test_a_failed_answer_never_overwrites_a_good_profile() -> None:
    good = route_decisions(
        profile_with(long_share=0.4),
        [constraint("max_leverage", 3.0)],
        as_of=T1,
        source="rules",
        evidence_id="n1",
    ).profile
    failed = route_failure(good, as_of=T2, source="llm", error="HTTP 500 from m")
    assert failed.profile is good and not failed.changed
    (change,) = failed.changes
    assert (change.attribute, change.action, change.version) == ("profile", "IGNORE", 2)
    assert "HTTP 500" in change.reason


def test_an_allowed_list_said_to_hold_now_replaces_the_stored_one() -> None:
    """A reviewer's "I only trade BTC." then "I only trade ETH now": the switch was
    refused as looser, so BTC kept trading and every ETH proposal was refused."""
    p0 = empty_profile("t", T1)
    btc = route_decisions(
        p0, [constraint("allowed_assets", ["BTC"], quote="I only trade BTC.")], as_of=T1,
        source="rules", evidence_id="n1",
    )  # fmt: skip
    now = route_decisions(
        btc.profile, [constraint("allowed_assets", ["ETH"], quote="I only trade ETH now")],
        as_of=T2, source="rules", evidence_id="n2",
    )  # fmt: skip
    assert now.changes[0].action == "UPDATE"
    assert {c.kind: c.value for c in now.profile.constraints()} == {"allowed_assets": ["ETH"]}
    maybe = route_decisions(
        btc.profile, [constraint("allowed_assets", ["ETH"], quote="Maybe I only trade ETH now")],
        as_of=T2, source="rules", evidence_id="n2",
    )  # fmt: skip
    assert maybe.changes[0].action == "IGNORE"  # when in doubt, the stored list stays

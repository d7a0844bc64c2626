"""update_from_text with an LLM: a real openai client against a loopback chat-completions
server. A good answer is routed; a malformed or invalid answer or an HTTP error is
recorded as an IGNORE change and the offline rules read the note instead; an empty list
is the model's answer that nothing changes: a failure only when the rules' reading of
the note changes the profile."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import openai
import pytest

from backend.agents.memory import PersonaManager
from backend.data import Fill
from backend.llm import LLMClient
from backend.memory.models import PersonaProfile
from tests.agents.conftest import ALTS_SPOT
from tests.conftest import StoreFactory
from tests.llm.chat_server import ChatServer, Reply, start_chat_server

NOTE = "Never more than 2% per trade, and no memecoins. The account should double."
GOOD = {
    "decisions": [
        {
            "attribute": "constraints",
            "action": "ADD",
            "goal": None,
            "constraint": {
                "kind": "max_risk_per_trade",
                "value": 0.02,
                "quote": "Never more than 2% per trade",
            },
            "value": None,
            "reason": "explicit risk limit",
        },
        {
            "attribute": "goals",
            "action": "ADD",
            "goal": "double the account",
            "constraint": None,
            "value": None,
            "reason": "stated goal",
        },
    ]
}


@pytest.fixture()
def server() -> Iterator[ChatServer]:
    srv = start_chat_server()
    yield srv
    srv.shutdown()
    srv.server_close()


@pytest.fixture()
def setup(
    make_store: StoreFactory, server: ChatServer, by_trader: dict[str, list[Fill]]
) -> tuple[PersonaManager, PersonaProfile]:
    client = openai.OpenAI(base_url=server.base_url, api_key="test", max_retries=0, timeout=10)
    manager = PersonaManager(make_store(), llm=LLMClient(client, model="m"))
    fills = by_trader[ALTS_SPOT][:120]
    return manager, manager.build_from_fills(ALTS_SPOT, fills, as_of=fills[-1].datetime)


def later(profile: PersonaProfile) -> Any:
    return profile.as_of + timedelta(hours=1)


def test_good_answer_adds_the_constraint(
    setup: tuple[PersonaManager, PersonaProfile], server: ChatServer
) -> None:
    manager, before = setup
    server.script = [Reply.json(GOOD)]
    changes = manager.update_from_text(ALTS_SPOT, NOTE, as_of=later(before), note_id="n-1")
    assert [(c.attribute, c.action, c.source, c.version) for c in changes] == [
        ("constraints", "ADD", "llm", 2),
        ("goals", "ADD", "llm", 2),
        # the rules read the stated limits too: the one the model read is unchanged, the
        # one it missed ("no memecoins") is not lost; one new version in all
        ("constraints", "IGNORE", "rules", 2),
        ("constraints", "ADD", "rules", 2),
    ]
    after = manager.get_profile(ALTS_SPOT, later(before))
    assert after is not None and after.version == 2
    assert [(c.kind, c.value) for c in after.constraints()] == [
        ("max_risk_per_trade", 0.02), ("no_memecoins", True)
    ]  # fmt: skip
    assert after.attributes["preferred_assets"] == before.attributes["preferred_assets"]
    # the prompt carried the current profile and the note as quoted data
    (request,) = server.requests
    assert request["path"] == "/v1/chat/completions"
    user = request["body"]["messages"][1]["content"]
    assert "profile v1" in user and f"<data>\n{NOTE}\n</data>" in user


def _constraint(kind: str, value: Any, quote: str) -> dict[str, Any]:
    return {
        "attribute": "constraints", "action": "ADD", "goal": None, "value": None,
        "constraint": {"kind": kind, "value": value, "quote": quote}, "reason": "said",
    }  # fmt: skip


def test_a_constraint_the_trader_never_stated_is_refused(
    setup: tuple[PersonaManager, PersonaProfile], server: ChatServer
) -> None:
    """A reviewer's model answered, for NOTE, bans of ETH and SOL quoting "no
    memecoins", a 1.5x leverage cap and long-only quoting "risk": all three were stored
    and enforced. Each is refused as not in the trader's words; the model's true
    reading stands and the rules still read the ban on memecoins."""
    manager, before = setup
    invented = [
        _constraint("forbidden_assets", ["ETH", "SOL"], "no memecoins"),
        _constraint("max_leverage", 1.5, "Never more than 2% per trade"),
        _constraint("long_only", True, "risk"),
        _constraint("max_risk_per_trade", 0.05, "Never more than 2% per trade"),
        _constraint("max_risk_per_trade", 0.02, "Never more than 2% per trade"),
    ]
    server.script = [Reply.json({"decisions": invented})]
    changes = manager.update_from_text(ALTS_SPOT, NOTE, as_of=later(before), note_id="n-1")
    refused = [c for c in changes if c.source == "llm" and c.action == "IGNORE"]
    assert len(refused) == 4
    assert all(c.reason == "invalid: not in the trader's words" for c in refused)
    after = manager.get_profile(ALTS_SPOT, later(before))
    assert after is not None
    assert [(c.kind, c.value) for c in after.constraints()] == [
        ("max_risk_per_trade", 0.02), ("no_memecoins", True)
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("reply", "reason"),
    [
        (Reply(content='{"decisions": [{"attribute": "constraints", "act'), "answer rejected"),
        (Reply(content='{"decisions": [{"attribute": "mood", "action": "ADD"}]}'), "does not fit"),
        (Reply(status=500), "HTTP 500"),
        # the note states two limits: an empty answer missed them
        (Reply(content='{"decisions": []}'), "empty answer, but the note changes the profile"),
    ],
)
def test_bad_answer_is_recorded_and_the_rules_read_the_note(
    setup: tuple[PersonaManager, PersonaProfile],
    server: ChatServer,
    reply: Reply,
    reason: str,
) -> None:
    manager, before = setup
    server.script = [reply]
    changes = manager.update_from_text(ALTS_SPOT, NOTE, as_of=later(before))
    assert [(c.attribute, c.action, c.source) for c in changes[:1]] == [
        ("profile", "IGNORE", "llm")
    ]
    assert reason in changes[0].reason
    # the stated limits are not lost to the failed model: the offline rules read them
    assert {(c.action, c.source) for c in changes[1:]} == {("ADD", "rules")}
    after = manager.get_profile(ALTS_SPOT, later(before))
    assert after is not None and after.version == before.version + 1
    assert {c.kind for c in after.constraints()} == {"max_risk_per_trade", "no_memecoins"}
    timeline = manager.timeline(ALTS_SPOT, as_of=later(before))
    assert timeline[-len(changes) :] == changes


def test_an_empty_list_is_no_failure_when_nothing_changes(
    setup: tuple[PersonaManager, PersonaProfile], server: ChatServer
) -> None:
    """The prompt asks the model to leave out what it ignores: ``[]`` about a note that
    changes nothing is its right answer, not a failure (a chat's every "hi" had counted
    as one); about a note whose limits the rules read, it is (the parametrized case
    above), and about one that repeats a known limit, it is not."""
    manager, before = setup
    server.script = [Reply(content='{"decisions": []}')]
    assert manager.update_from_text(ALTS_SPOT, "Nice weather today.", as_of=later(before)) == []
    assert manager.get_profile(ALTS_SPOT, later(before)) == before
    system = server.requests[0]["body"]["messages"][0]["content"]
    assert "leave out what you IGNORE" in system
    # a limit the trader states again: the rules read it, the router ignores it as known
    server.script = [Reply(status=500)]
    manager.update_from_text(ALTS_SPOT, "Never more than 2% per trade.", as_of=later(before))
    known = manager.get_profile(ALTS_SPOT, later(before))
    assert known is not None and known.version == before.version + 1
    server.script = [Reply(content='{"decisions": []}')]
    again = manager.update_from_text(ALTS_SPOT, "Never more than 2% per trade.", as_of=later(known))
    assert [(c.action, c.source) for c in again] == [("IGNORE", "rules")]
    assert manager.get_profile(ALTS_SPOT, later(known)) == known


def test_a_model_that_reads_something_else_loses_no_stated_limit(
    setup: tuple[PersonaManager, PersonaProfile], server: ChatServer
) -> None:
    """A valid answer about something else (a goal only) kept the rules from reading the
    note: "never more than 2%" and "no memecoins" were lost, with no warning."""
    manager, before = setup
    server.script = [Reply.json({"decisions": GOOD["decisions"][1:]})]  # the goal only
    changes = manager.update_from_text(ALTS_SPOT, NOTE, as_of=later(before))
    assert [(c.attribute, c.source) for c in changes if c.action != "IGNORE"] == [
        ("goals", "llm"), ("constraints", "rules"), ("constraints", "rules")
    ]  # fmt: skip
    after = manager.get_profile(ALTS_SPOT, later(before))
    assert after is not None and after.version == before.version + 1
    assert {c.kind for c in after.constraints()} == {"max_risk_per_trade", "no_memecoins"}
    assert after.attributes["goals"].value == ["double the account"]


def _stated(attribute: str, value: str) -> dict[str, Any]:
    return {
        "attribute": attribute, "action": "ADD", "constraint": None, "reason": "stated",
        "goal": value if attribute == "goals" else None,
        "value": None if attribute == "goals" else value,
    }  # fmt: skip


def test_a_goal_or_stated_value_the_trader_never_said_is_not_stored(
    setup: tuple[PersonaManager, PersonaProfile], server: ChatServer
) -> None:
    """A model's goal and stated values must be read in the note's words: Gemma 3 270M,
    asked "You can short again.", answered a ``stated_style`` of its own. What the note
    says is stored; what it does not say is IGNORE, "invalid: not in the trader's words"."""
    manager, before = setup
    note = "I'm a low risk swing trader, I hold two weeks and mostly trade sol."
    said = [_stated("risk_tolerance", "conservative"), _stated("style", "swing"),
            _stated("holding_period", "2 weeks"), _stated("preferred_assets", "SOL")]  # fmt: skip
    unsaid = [
        _stated("goals", "never lose more than $200 on a trade"),
        _stated("risk_tolerance", "aggressive"), _stated("holding_period", "3 weeks"),
        _stated("preferred_assets", "BTC, SOL"),
    ]  # fmt: skip
    server.script = [Reply.json({"decisions": said + unsaid})]  # 8: the schema's most
    changes = manager.update_from_text(ALTS_SPOT, note, as_of=later(before), note_id="n-9")
    by_model = [c for c in changes if c.source == "llm"]
    assert [(c.attribute, c.action) for c in by_model] == [
        ("stated_risk_tolerance", "ADD"), ("stated_style", "ADD"),
        ("stated_holding_period", "ADD"), ("stated_preferred_assets", "ADD"),
        ("goals", "IGNORE"), ("stated_risk_tolerance", "IGNORE"),
        ("stated_holding_period", "IGNORE"), ("stated_preferred_assets", "IGNORE"),
    ]  # fmt: skip
    assert {c.reason for c in by_model[4:]} == {"invalid: not in the trader's words"}
    after = manager.get_profile(ALTS_SPOT, later(before))
    assert after is not None and "goals" not in after.attributes
    assert after.attributes["stated_risk_tolerance"].value == "conservative"
    assert after.attributes["stated_style"].value == "swing"
    assert after.attributes["stated_holding_period"].value == "2 weeks"
    assert after.attributes["stated_preferred_assets"].value == ["SOL"]


def _leverage(value: float, quote: str, action: str) -> dict[str, Any]:
    return {"decisions": [{
        "attribute": "constraints", "action": action, "goal": None, "value": None,
        "constraint": {"kind": "max_leverage", "value": value, "quote": quote},
        "reason": "stated leverage limit",
    }]}  # fmt: skip


def test_a_raise_the_model_read_stands_and_a_second_read_adds_nothing(
    setup: tuple[PersonaManager, PersonaProfile], server: ChatServer
) -> None:
    """The rules read only the kinds the model did not: their smallest number of "I'm
    raising my max leverage to 5x; previously my cap was 2x" (2x) had undone the
    model's raise, and every re-read of the note wrote a new version."""
    manager, before = setup
    first = later(before)
    server.script = [Reply.json(_leverage(2.0, "Never more than 2x leverage", "ADD"))]
    manager.update_from_text(ALTS_SPOT, "Never more than 2x leverage.", as_of=first)
    note = "I'm raising my max leverage to 5x; previously my cap was 2x."
    raised = _leverage(5.0, "I'm raising my max leverage to 5x", "UPDATE")
    at = first + timedelta(hours=1)
    server.script = [Reply.json(raised)]
    manager.update_from_text(ALTS_SPOT, note, as_of=at, note_id="raise")
    after = manager.get_profile(ALTS_SPOT, at)
    assert after is not None
    assert dict((c.kind, c.value) for c in after.constraints())["max_leverage"] == 5.0
    server.script = [Reply.json(raised)]
    again = manager.update_from_text(ALTS_SPOT, note, as_of=at, note_id="raise")
    assert [c.action for c in again] == ["IGNORE"]
    latest = manager.get_profile(ALTS_SPOT, at)
    assert latest is not None and latest.version == after.version


def test_a_stricter_stated_limit_than_the_model_read_is_kept(
    setup: tuple[PersonaManager, PersonaProfile], server: ChatServer
) -> None:
    """The model reading a limit looser than the note states (or one the router refuses
    as looser than stored) must not keep the rules from the stated one."""
    manager, before = setup
    at = later(before)
    server.script = [Reply.json(_leverage(5.0, "Never more than 3x leverage", "ADD"))]
    manager.update_from_text(ALTS_SPOT, "Never more than 3x leverage.", as_of=at)
    profile = manager.get_profile(ALTS_SPOT, at)
    assert profile is not None
    assert dict((c.kind, c.value) for c in profile.constraints())["max_leverage"] == 3.0
    later_at = at + timedelta(hours=1)
    server.script = [Reply.json(_leverage(10.0, "Never more than 2x leverage", "UPDATE"))]
    manager.update_from_text(ALTS_SPOT, "Never more than 2x leverage.", as_of=later_at)
    profile = manager.get_profile(ALTS_SPOT, later_at)
    assert profile is not None  # the model's 10x refused as looser, the stated 2x kept
    assert dict((c.kind, c.value) for c in profile.constraints())["max_leverage"] == 2.0
    assert {c.version for c in manager.timeline(ALTS_SPOT, as_of=later_at)[-2:]} == {
        profile.version
    }  # every change of a call carries the version it wrote


@pytest.mark.parametrize(
    ("note", "quote", "value", "kept"),
    [
        # a change verb in an unrelated sense, the quote stating another value
        ("I don't allow myself more than 2x leverage.",
         "I don't allow myself more than 2x leverage", 3.0, 2.0),
        # a made-up quote: not in the note
        ("Never more than 2x leverage.", "raise my max leverage to 20x", 20.0, 2.0),
    ],
)  # fmt: skip
def test_a_change_the_note_does_not_state_leaves_the_rules_their_say(
    setup: tuple[PersonaManager, PersonaProfile],
    server: ChatServer,
    note: str,
    quote: str,
    value: float,
    kept: float,
) -> None:
    manager, before = setup
    server.script = [Reply.json(_leverage(value, quote, "ADD"))]
    manager.update_from_text(ALTS_SPOT, note, as_of=later(before))
    profile = manager.get_profile(ALTS_SPOT, later(before))
    assert profile is not None
    assert dict((c.kind, c.value) for c in profile.constraints())["max_leverage"] == kept


def test_a_forbidden_list_is_united_whatever_verb_the_model_quoted(
    setup: tuple[PersonaManager, PersonaProfile], server: ChatServer
) -> None:
    manager, before = setup
    note = "From now on never touch DOGE. Never touch SOL either."
    server.script = [Reply.json({"decisions": [{
        "attribute": "constraints", "action": "ADD", "goal": None, "value": None,
        "constraint": {"kind": "forbidden_assets", "value": ["DOGE"],
                       "quote": "From now on never touch DOGE"},
        "reason": "forbidden asset",
    }]})]  # fmt: skip
    manager.update_from_text(ALTS_SPOT, note, as_of=later(before))
    profile = manager.get_profile(ALTS_SPOT, later(before))
    assert profile is not None
    forbidden = dict((c.kind, c.value) for c in profile.constraints())["forbidden_assets"]
    assert sorted(forbidden) == ["DOGE", "SOL"]


def test_an_answer_of_only_ignores_is_no_failure_of_the_model(
    setup: tuple[PersonaManager, PersonaProfile], server: ChatServer
) -> None:
    """A model saying the note is not about the trader, with a reason that happens to
    begin with "invalid", answered: it is no failure (the rules read the note)."""
    manager, before = setup
    server.script = [Reply.json({"decisions": [{
        "attribute": "goals", "action": "IGNORE", "goal": None, "constraint": None,
        "value": None, "reason": "invalid: not about the trader",
    }]})]  # fmt: skip
    changes = manager.update_from_text(ALTS_SPOT, NOTE, as_of=later(before))
    assert not any(c.attribute == "profile" for c in changes)
    assert {c.kind for c in manager.get_profile(ALTS_SPOT, later(before)).constraints()} == {
        "max_risk_per_trade", "no_memecoins"
    }  # type: ignore[union-attr]  # fmt: skip


def test_invalid_decision_is_ignored_not_applied(
    setup: tuple[PersonaManager, PersonaProfile], server: ChatServer
) -> None:
    manager, before = setup
    bad = json.loads(json.dumps(GOOD))
    bad["decisions"] = bad["decisions"][:1]
    bad["decisions"][0]["constraint"]["value"] = 2.0  # 200% per trade: not a fraction
    server.script = [Reply.json(bad)]
    changes = manager.update_from_text(ALTS_SPOT, NOTE, as_of=later(before))
    # no usable decision: a failure of the model (import-chat counts it), then its decision
    assert [(c.attribute, c.action, c.source) for c in changes[:2]] == [
        ("profile", "IGNORE", "llm"), ("constraints", "IGNORE", "llm")
    ]  # fmt: skip
    assert changes[0].reason.startswith("llm answer rejected: no usable decision (invalid:")
    assert changes[1].reason.startswith("invalid: max_risk_per_trade")
    after = manager.get_profile(ALTS_SPOT, later(before))  # the rules read it instead
    assert after is not None and {c.kind for c in after.constraints()} == {
        "max_risk_per_trade", "no_memecoins"
    }  # fmt: skip
    assert dict((c.kind, c.value) for c in after.constraints())["max_risk_per_trade"] == 0.02

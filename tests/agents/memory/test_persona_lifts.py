"""A ban the trader lifts in so many words: read by the rules, routed as DELETE, versioned
in the store, and enforced no longer at the next bar."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from backend.agents.constraints import check_decision
from backend.agents.memory import PersonaManager
from backend.agents.memory._persona_lifts import note_lifts
from backend.agents.memory._persona_reading import route_text
from backend.agents.memory._persona_router import empty_profile, route_decisions
from backend.agents.memory._persona_text import text_decisions
from backend.backtest.models import Decision, PositionState
from backend.config import ConversationSettings
from backend.llm.prompts import PersonaDecision
from backend.memory.conversation import ConversationMemory
from backend.memory.models import ChatMessage, HardConstraint, PersonaProfile
from tests.conftest import StoreFactory

T0 = datetime(2025, 3, 1, tzinfo=UTC)
BANS = "Never trade SOL or DOGE. No memecoins. I'm long only and never use leverage."

LIFTS: list[tuple[str, dict[str, Any]]] = [
    ("unban SOL", {"forbidden_assets": ["SOL"]}),
    ("Okay, unban $SOL please", {"forbidden_assets": ["SOL"]}),
    ("Lift the ban on SOL and DOGE.", {"forbidden_assets": ["SOL", "DOGE"]}),
    ("Lift the bans on SOL and DOGE", {"forbidden_assets": ["SOL", "DOGE"]}),
    ("lift the SOL ban", {"forbidden_assets": ["SOL"]}),
    ("Please remove SOL from the banned list", {"forbidden_assets": ["SOL"]}),
    ("Take SOL off my blacklist", {"forbidden_assets": ["SOL"]}),
    ("SOL is allowed again", {"forbidden_assets": ["SOL"]}),
    ("Solana is no longer off limits", {"forbidden_assets": ["SOL"]}),
    ("SOL isn't banned anymore!", {"forbidden_assets": ["SOL"]}),
    ("You can trade SOL again", {"forbidden_assets": ["SOL"]}),
    ("allow DOGE again", {"forbidden_assets": ["DOGE"]}),
    ("memecoins are allowed again", {"no_memecoins": True}),
    ("lift the memecoin ban", {"no_memecoins": True}),
    ("you can use leverage again", {"no_leverage": True}),
    ("Leverage is allowed again from now on", {"no_leverage": True}),
    ("lift the no-leverage rule", {"no_leverage": True}),
    ("you can short again", {"long_only": True}),
    ("Shorting is allowed again", {"long_only": True}),
    ("I'm no longer long only", {"long_only": True}),
    ("I'm not long only anymore", {"long_only": True}),
    ("lift the long-only rule", {"long_only": True}),
]
NOT_LIFTS = [  # a reviewer's sentences against a looser first version (2026-12-07)
    "Can I trade SOL again?",
    "Any chance I can trade SOL again",
    "So I can trade SOL again",
    "SOL is allowed again, right",
    "Should I lift the SOL ban",
    "I won't unban SOL",
    "Don't lift the ban on SOL",
    "No lifting the ban on SOL, ever",
    "I refuse to lift the ban on SOL",
    "Stop asking me to unban SOL",
    "Unban SOL, no way",
    "Neither DOGE nor SOL is allowed again",
    "Until I lift the ban on SOL, do not touch it",
    "if it holds 150, SOL is allowed again",
    "SOL is allowed again once it holds 150",
    "You can trade SOL again next year",
    "I'll lift the ban on SOL next month",
    "I regret lifting the ban on DOGE",
    "Dropping the memecoin ban was a mistake",
    "Coinbase is lifting the ban on DOGE",
    "According to Binance, SOL is tradable again",
    "my friend says SOL is fine again",
    "Solana is fine again, the outage is over",
    "Shitcoins are fine again, everything is pumping",
    "Lift the ban on SOL and DOGE stays banned",
    "Unban SOL, DOGE remains forbidden",
    "Cancel my short limit order",
    "Cancel my memecoin limit orders",
    "No more long-only funds for me, I prefer hedge funds",
    "you can short again, but never short DOGE",
    "maybe memecoins are allowed again",
    "I traded SOL again yesterday",
    "you can trade it again",
    "never trade SOL",
    "I have no SOL",
    # and a second reviewer's: a '?', a list that takes in words, another line or sentence
    "Unban SOL?",
    "Unban SOL, no",
    "Unban SOL, NOT",
    "Maybe, SOL is allowed again",
    "UNBAN SOL, NEVER",
    "Unban SOL and DOGE, NOW",
    "Whatever you do, don't; unban SOL? no.",
    "Don't\nunban SOL",
    "If BTC breaks 100k; unban SOL",
    "Do not do the following:\n- unban SOL\n- allow DOGE again",
    "Binance announcement:\nSOL is allowed again",
    "Unban SOL. Just kidding.",
    "Unban SOL. SOL stays banned.",
    "Never trade SOL. Actually, SOL is allowed again.",
    "~~unban SOL~~",
    "\u274c unban SOL",
    "> unban SOL\n> no",
    "'Unban SOL.' - my friend",
    # and a third's: not about trading, or a list that never ends
    "Shorts are allowed again",
    "Memes are allowed again",
    ", ".join(["BTC", "ETH", "SOL", "DOGE", "XRP", "ADA", "AVAX", "LINK"] * 5) + " on my watch",
]


@pytest.mark.parametrize(("note", "expected"), LIFTS)
def test_the_rules_read_a_lift(note: str, expected: dict[str, Any]) -> None:
    assert {c.kind: c.value for c in note_lifts(note)} == expected
    assert {c.kind: c.value for c in note_lifts(f"- {note}.\n- {note}!")} == expected


@pytest.mark.parametrize("note", NOT_LIFTS)
def test_a_question_a_condition_or_someone_elses_words_lift_nothing(note: str) -> None:
    assert note_lifts(note) == []
    assert all(d.action != "DELETE" for d in text_decisions(note))


def _say(profile: PersonaProfile, text: str) -> PersonaProfile:
    decisions = text_decisions(text, profile=profile)
    result = route_decisions(
        profile, decisions, as_of=T0, source="rules", evidence_id="n", text=text
    )
    return result.profile


def _rules(profile: PersonaProfile) -> dict[str, Any]:
    return {c.kind: c.value for c in profile.constraints()}


def test_a_lift_removes_only_what_it_names_and_states_no_ban() -> None:
    profile = _say(empty_profile("t", T0), BANS)
    assert _rules(profile) == {
        "forbidden_assets": ["SOL", "DOGE"],
        "no_memecoins": True,
        "no_leverage": True,
        "long_only": True,
    }
    profile = _say(profile, "Lift the ban on SOL. Never trade PEPE.")  # not a lift: a ban
    assert _rules(profile)["forbidden_assets"] == ["SOL", "DOGE", "PEPE"]
    profile = _say(profile, "Lift the ban on SOL.")
    assert _rules(profile)["forbidden_assets"] == ["DOGE", "PEPE"]
    profile = _say(profile, "lift the no-shorts rule")  # its "no shorts" states no rule
    assert "long_only" not in _rules(profile)
    profile = _say(profile, "DOGE is allowed again.\nMemecoins are allowed again.")
    assert _rules(profile) == {"forbidden_assets": ["PEPE"], "no_leverage": True}


def test_a_word_in_capitals_read_as_a_ticker_lifts_nothing() -> None:
    banned = _say(empty_profile("t", T0), BANS)
    assert note_lifts("Unban SOL, JK")[0].value == ["SOL", "JK"]  # every word a ticker
    assert _rules(_say(banned, "Unban SOL, JK")) == _rules(banned)  # JK: no coin, no ban
    assert _rules(_say(banned, "Unban SOL, XRP"))["forbidden_assets"] == ["DOGE"]


def test_a_models_delete_needs_the_traders_words() -> None:
    profile = _say(empty_profile("t", T0), BANS)

    def model(text: str, *decisions: PersonaDecision) -> list[tuple[str, str]]:
        result = route_decisions(
            profile, list(decisions), as_of=T0, source="llm", evidence_id="n", text=text
        )
        return [(c.action, c.reason) for c in result.changes]

    def delete(kind: str, value: Any, quote: str) -> PersonaDecision:
        constraint = HardConstraint(kind=kind, value=value, quote=quote)
        return PersonaDecision(
            attribute="constraints", action="DELETE", constraint=constraint, reason="lift"
        )

    said = "SOL is allowed again."
    assert model(said, delete("forbidden_assets", ["SOL"], "SOL is allowed again")) == [
        ("DELETE", "lift")
    ]
    ((action, reason),) = model(  # a note that is not only the lift
        "I've thought about it. SOL is allowed again.",
        delete("forbidden_assets", ["SOL"], "SOL is allowed again"),
    )
    assert action == "IGNORE" and reason.startswith("not lifted")
    # a ticker the sentence does not lift, a sentence that lifts nothing, a quote not in it
    ((action, reason),) = model(
        said, delete("forbidden_assets", ["SOL", "DOGE"], "SOL is allowed again")
    )
    assert action == "IGNORE" and reason.startswith("not lifted")
    ((action, reason),) = model(
        "Is SOL allowed again?", delete("forbidden_assets", ["SOL"], "SOL is allowed again")
    )
    assert action == "IGNORE" and reason.startswith("not lifted")
    ((action, reason),) = model("hello", delete("long_only", True, "you can short again"))
    assert action == "IGNORE" and reason.startswith("not lifted")
    # a numeric cap is raised, never deleted; nothing but a constraint is deleted
    ((action, reason),) = model("no leverage cap", delete("max_leverage", 3.0, "no leverage cap"))
    assert action == "IGNORE" and reason.startswith("invalid")
    goal = PersonaDecision(attribute="goals", action="DELETE", goal="double", reason="r")
    ((action, reason),) = model("forget my goal", goal)
    assert action == "IGNORE" and reason.startswith("invalid")
    # a rule the profile does not hold: nothing to lift
    ((action, reason),) = model("unban BTC", delete("forbidden_assets", ["BTC"], "unban BTC"))
    assert action == "IGNORE" and reason.startswith("unchanged")  # fmt: skip


def test_a_lift_is_versioned_in_the_store_and_enforced_no_longer(make_store: StoreFactory) -> None:
    store = make_store()
    manager = PersonaManager(store)
    t1, t2 = T0 + timedelta(days=1), T0 + timedelta(days=2)
    manager.update_from_text("t", BANS, as_of=T0, note_id="bans")
    changes = manager.update_from_text(
        "t", "SOL is allowed again. You can short again.", as_of=t1, note_id="lift"
    )
    banned = {"kind": "forbidden_assets", "quote": "Never trade SOL or DOGE"}
    assert [(c.action, c.old_value, c.new_value) for c in changes] == [
        ("DELETE", {**banned, "value": ["SOL", "DOGE"]}, {**banned, "value": ["DOGE"]}),
        (
            "DELETE",
            {"kind": "long_only", "value": True, "quote": "I'm long only and never use leverage"},
            None,
        ),
    ]  # fmt: skip
    assert {c.version for c in changes} == {2}
    fresh = PersonaManager(store)
    before, after = fresh.get_profile("t", T0), fresh.get_profile("t", t2)
    assert before is not None and after is not None
    assert _rules(before)["forbidden_assets"] == ["SOL", "DOGE"] and "long_only" in _rules(before)
    assert _rules(after) == {
        "forbidden_assets": ["DOGE"],
        "no_memecoins": True,
        "no_leverage": True,
    }
    assert [c.action for c in fresh.timeline("t", as_of=t2)].count("DELETE") == 2

    flat = PositionState(quantity=0.0, entry_price=None, equity=10_000.0, exposure=0.0)
    buy = Decision(action="buy", size=0.5, rationale="r")
    short = Decision(action="sell", size=0.5, rationale="r")
    for profile, blocked in ((before, True), (after, False)):
        out, violations = check_decision(buy, profile=profile, symbol="SOL/USDT", position=flat)
        assert (out.action == "hold") is blocked and bool(violations) is blocked
        out, violations = check_decision(short, profile=profile, symbol="BTC/USDT", position=flat)
        assert (out.action == "hold") is blocked and bool(violations) is blocked
    out, _ = check_decision(buy, profile=after, symbol="DOGE/USDT", position=flat)
    assert out.action == "hold"  # DOGE stays forbidden


def test_with_a_model_a_lift_stands_unless_the_model_read_a_ban() -> None:
    banned = _say(empty_profile("t", T0), BANS)
    note = "SOL is allowed again."

    def decision(action: str, tickers: list[str]) -> PersonaDecision:
        constraint = HardConstraint(kind="forbidden_assets", value=tickers, quote=note)
        return PersonaDecision(
            attribute="constraints", action=action, constraint=constraint, reason="model"
        )

    goal = PersonaDecision(attribute="goals", action="ADD", goal="steady gains", reason="r")

    def forbidden(
        asked: list[PersonaDecision], failure: str | None = None, text: str = note
    ) -> list[str]:
        result = route_text(banned, text, asked, failure=failure, as_of=T0, evidence_id="n")
        assert result is not None
        return list(_rules(result.profile).get("forbidden_assets", []))

    assert forbidden([decision("DELETE", ["SOL"])]) == ["DOGE"]  # both read it
    assert forbidden([goal]) == ["DOGE"]  # the model read something else: the rules' lift
    assert forbidden([], failure="timeout") == ["DOGE"]  # no answer: the rules alone
    assert forbidden([decision("ADD", ["SOL"])]) == ["SOL", "DOGE"]  # it read a ban: kept
    both = "SOL is allowed again. DOGE is allowed again."
    assert forbidden([decision("DELETE", ["SOL"])], text=both) == []  # the rules read DOGE too


def test_a_chat_reads_a_lift_in_the_traders_run_of_messages(make_store: StoreFactory) -> None:
    store = make_store()
    persona = PersonaManager(store)
    chat = ConversationMemory(store, settings=ConversationSettings(), persona=persona)
    end = T0 + timedelta(hours=1)

    def after(trader: str, *said: tuple[str, str], split: bool = False) -> dict[str, Any]:
        persona.update_from_text(trader, BANS, as_of=T0, note_id="bans")
        messages = [
            ChatMessage(id=f"m{i}", speaker=who, text=text, time=T0 + timedelta(minutes=i + 1),
                        session="s1")
            for i, (who, text) in enumerate(said)
        ]  # fmt: skip
        cut = len(messages) - 1 if split else len(messages)  # split: the last one live
        for part in (messages[:cut], messages[cut:]):
            chat.record(trader, part, as_of=end)
        profile = persona.get_profile(trader, end)
        assert profile is not None
        return _rules(profile)

    banned = ["SOL", "DOGE"]
    assert after("t1", ("trader", "don't"), ("trader", "unban SOL"))["forbidden_assets"] == banned
    said = (("trader", "don't"), ("trader", "unban SOL"))
    assert after("t2", *said, split=True)["forbidden_assets"] == banned  # "don't" was stored
    # only earlier words (no look-ahead): a take-back after the lift does not undo it,
    # a ban stated again does
    assert after("t3", ("trader", "unban SOL"), ("trader", "jk"))["forbidden_assets"] == ["DOGE"]
    again = (("trader", "unban SOL"), ("trader", "jk, never trade SOL"))
    assert after("t3b", *again)["forbidden_assets"] == ["DOGE", "SOL"]
    asked = (("trader", "should I?"), ("assistant", "up to you"), ("trader", "unban SOL"))
    assert after("t4", *asked)["forbidden_assets"] == ["DOGE"]
    both = after("t5", ("trader", "unban SOL"), ("trader", "You can short again."))
    assert both["forbidden_assets"] == ["DOGE"] and "long_only" not in both
    # two speakers who could be the trader (none named): no lift; named: the trader's
    bot = (("bot", "Done."), ("trader", "thanks"), ("bot", "SOL is no longer banned"))
    assert after("t6", *bot)["forbidden_assets"] == banned
    chat = ConversationMemory(
        store, settings=ConversationSettings(trader_speakers=["trader"]), persona=persona
    )
    named = (("bot", "Done."), ("trader", "unban SOL"))
    assert after("t7", *named)["forbidden_assets"] == ["DOGE"]
    # a stored message sent again keeps its place: the run does not jump the reply
    persona.update_from_text("t8", BANS, as_of=T0, note_id="bans")
    first = ChatMessage(id="a", speaker="trader", text="what do you think", time=T0, session="s")
    reply = ChatMessage(
        id="b", speaker="bot", text="ok", time=T0 + timedelta(minutes=1), session="s"
    )
    lift = ChatMessage(
        id="c", speaker="trader", text="Unban SOL", time=T0 + timedelta(minutes=2), session="s"
    )
    chat.record("t8", [first, reply], as_of=end)
    chat.record("t8", [first, lift], as_of=end)
    profile = persona.get_profile("t8", end)
    assert profile is not None and _rules(profile)["forbidden_assets"] == ["DOGE"]

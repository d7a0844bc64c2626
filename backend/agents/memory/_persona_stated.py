"""The trader's stated goals and preferences read from their words (offline rules):
``my goal is ...``, ``I'm a conservative trader``, ``I'm a swing trader``, ``I usually
hold for a few days``, ``I mostly trade SOL`` (:mod:`backend.agents.memory._persona_text`
has the rules' overview); the router keeps them as ``goals`` and ``stated_<name>``."""

from __future__ import annotations

import re
from typing import Any

from backend.llm.prompts import PersonaDecision
from backend.text.tickers import LIST, parse_tickers

__all__ = ["normalize_stated", "stated_decisions"]

_PREFERRED = re.compile(
    rf"(?i:\bi\s+(?:mostly|mainly|usually|primarily|prefer\s+to)\s+trade|\bi\s+prefer|"
    rf"\bmy\s+favou?rite\s+(?:coins?|assets?)\s+(?:is|are))\s+{LIST}"
)
_GOAL = re.compile(
    r"(?i)\b(?:my\s+(?:main\s+|primary\s+|only\s+)?goal\s+is(?:\s+to)?|i\s+want\s+to|"
    r"i'?d\s+like\s+to|i\s+would\s+like\s+to|i\s+aim\s+to|i'?m\s+aiming\s+(?:for|to)|"
    r"aiming\s+for|my\s+target\s+is|target(?:ing)?)\s+([^.;!?\n]{3,250})"
)
_GOAL_IS_LIMIT = re.compile(r"(?i)^(?:never|not|avoid|stay|only|keep|limit|cap|stop)\b")
_RISK_WORDS: dict[str, str] = {
    "conservative": "conservative", "cautious": "conservative", "careful": "conservative",
    "risk averse": "conservative", "risk-averse": "conservative", "low risk": "conservative",
    "low-risk": "conservative", "moderate": "moderate", "balanced": "moderate",
    "medium risk": "moderate", "medium-risk": "moderate",
    "aggressive": "aggressive", "degen": "aggressive", "risk seeking": "aggressive",
    "risk-seeking": "aggressive", "risk taker": "aggressive", "risk-taker": "aggressive",
    "high risk": "aggressive", "high-risk": "aggressive",
}  # fmt: skip
_RISK = re.compile(
    r"(?i)\b(?:i\s+am|i'?m|im|i\s+consider\s+myself|my\s+risk\s+(?:tolerance|appetite|profile)"
    r"\s+is)\s+(?:(?:a|an|very|pretty|quite|fairly|rather|more|of)\s+)*("
    + "|".join(re.escape(w).replace(r"\ ", r"\s") for w in _RISK_WORDS)
    + r")\b"
)
_STYLE_WORDS: dict[str, str] = {
    "scalper": "scalper", "scalp": "scalper", "day trader": "day", "day trade": "day",
    "daytrade": "day", "swing trader": "swing", "swing trade": "swing", "swing": "swing",
    "position trader": "position", "long-term investor": "position",
    "long term investor": "position", "hodler": "position",
    # names of the styles the rules' sentences do not read, for a model's reading of them
    "day trading": "day", "daytrading": "day", "daytrader": "day", "intraday": "day",
    "scalping": "scalper", "hodl": "position", "hodling": "position",
}  # fmt: skip
_STYLE = re.compile(
    r"(?i)\b(?:i\s+am|i'?m|im)\s+(?:(?:a|an|mostly|mainly|basically)\s+)*("
    r"scalper|day\s+trader|swing\s+trader|position\s+trader|long[\s-]term\s+investor|hodler)\b"
    r"|\bi\s+(?:mostly\s+|mainly\s+|usually\s+)?(scalp|day\s?trade|swing(?:\s+trade)?)\b"
)
_UNITS = r"(?:minutes?|hours?|days?|weeks?|months?|years?)"
_DURATION = re.compile(rf"\b{_UNITS}\b")
_ONE_TO_TWELVE = ("one", "two", "three", "four", "five", "six", "seven", "eight", "nine",
                  "ten", "eleven", "twelve")  # fmt: skip
NUMBER_WORDS: dict[str, int] = {word: n for n, word in enumerate(_ONE_TO_TWELVE, start=1)} | {
    "fifteen": 15, "twenty": 20, "thirty": 30, "fifty": 50,
}  # fmt: skip
"""The number words every persona rule reads as numbers ("twelve times leverage", "hold
for three days"), in one table: three copies with different words had read "twelve
times leverage" as 12 in a model's check and as nothing in the rules."""
NUMBER_WORD = "|".join(sorted(NUMBER_WORDS, key=len, reverse=True))
"""A regular-expression alternation of :data:`NUMBER_WORDS`, longest first."""
_COUNT = rf"(?:\d+|{NUMBER_WORD})"
_HOLD = re.compile(
    r"(?i)\bi(?:(?P<modal>(?:['\u2019]d|\s+would)\s+rather|\s+(?:prefer|like|tend)\s+to)|"
    r"\s+(?:usually|typically|normally|mostly))?\s+hold(?:\s+my)?"
    r"(?:\s+(?:positions?|trades?))?(?:\s+for)?\s+(?P<period>(?:a\s+few\s+|several\s+"
    rf"|{_COUNT}(?:\s*(?:-|to|or)\s*{_COUNT})?\s+|a\s+|an\s+)?{_UNITS})\b"
)
"""A holding period the trader states: "I usually hold for a few days", "I hold trades
for 2-3 days", "I'd rather hold positions for weeks", "I like / tend / prefer to hold
...". What the trader says they do comes before what they would rather do ("I'd rather
hold for weeks, but I hold for days": days); a preference (``modal``) is not read in a
question, a condition or someone else's words (:data:`_NOT_SAID_BY_THE_TRADER` before
it: "If I had more time I'd rather hold for weeks", "My coach thinks I'd rather hold
for weeks", "Would I like to hold for weeks?") nor with a condition or a "but" after
it (:data:`_NOT_SO_AFTER`: "I'd rather hold for weeks if fees drop", "... but I
can't")."""
_NOT_SAID_BY_THE_TRADER = re.compile(
    r"(?i)\b(?:if|when|unless|once|should|would|why|who|whether|wish|thinks|thought|says|"
    r"said|believes|claims?|heard|friend|coach|he|she|they)\b"
)
_NOT_SO_AFTER = re.compile(r"(?i)\b(?:if|unless|once|when|but|though|although|except)\b")


def _holding_period(sentence: str) -> str | None:
    """The holding period ``sentence`` states (:data:`_HOLD`), lower case; None if none."""
    found = list(_HOLD.finditer(sentence))
    plain = [m for m in found if not m.group("modal")]
    preferred = [
        m for m in found
        if m.group("modal") and not sentence.rstrip().endswith("?")
        and not _NOT_SAID_BY_THE_TRADER.search(sentence[: m.start()])
        and not _NOT_SO_AFTER.search(sentence[m.end() :])
    ]  # fmt: skip
    chosen = plain or preferred
    return " ".join(chosen[0].group("period").lower().split()) if chosen else None


def normalize_stated(attribute: str, value: str) -> str | list[str]:
    """A stated value in canonical form: ``preferred_assets`` -> ticker list,
    ``risk_tolerance`` -> conservative/moderate/aggressive, ``style`` -> scalper/day/swing/
    position, ``holding_period`` -> the lower-cased words when they name a duration;
    empty (the router's "invalid: no value") when the value is none of these. A model
    had stored ``stated_style`` "never lose more than $200 on a trade" (Gemma 3 270M,
    2026-12-07); the rules only ever state the vocabulary's words."""
    words = " ".join(value.lower().replace("_", " ").split())
    if attribute == "preferred_assets":
        return parse_tickers(value) or parse_tickers(value.upper())
    if attribute == "risk_tolerance":
        vocabulary: dict[str, str] = _RISK_WORDS
    elif attribute == "style":
        vocabulary = _STYLE_WORDS
    elif attribute == "holding_period":
        return words if _DURATION.search(words) else ""
    else:
        return words
    for word, canonical in vocabulary.items():
        if re.search(rf"\b{re.escape(word)}\b", words) or canonical == words:
            return canonical
    return ""


def stated_decisions(sentence: str, attrs: dict[str, Any]) -> list[PersonaDecision]:
    """The goal and stated-preference decisions of one ``sentence`` (``attrs``: the
    profile's attributes, which choose ``ADD`` vs ``UPDATE``)."""
    decisions: list[PersonaDecision] = []
    for match in _GOAL.finditer(sentence):
        goal = " ".join(match.group(0).split())
        if not _GOAL_IS_LIMIT.match(match.group(1).strip()):
            decisions.append(
                PersonaDecision(
                    attribute="goals", action="ADD", goal=goal[:300], reason="rule goal"
                )
            )
    stated: list[tuple[str, str]] = []
    if m := _RISK.search(sentence):
        word = " ".join(m.group(1).lower().split())
        stated.append(("risk_tolerance", _RISK_WORDS.get(word, word)))
    if m := _STYLE.search(sentence):
        word = " ".join((m.group(1) or m.group(2)).lower().split())
        stated.append(("style", _STYLE_WORDS.get(word, word)))
    if period := _holding_period(sentence):
        stated.append(("holding_period", period))
    if (m := _PREFERRED.search(sentence)) and (tickers := parse_tickers(m.group(1))):
        stated.append(("preferred_assets", ", ".join(tickers)))
    for attribute, value in stated:
        decisions.append(
            PersonaDecision(
                attribute=attribute,
                action="UPDATE" if f"stated_{attribute}" in attrs else "ADD",
                value=value[:300],
                reason=f"rule stated {attribute}: {sentence}"[:300],
            )
        )
    return decisions

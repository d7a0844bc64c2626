"""When a trader's sentence lifts a rule they had set (:mod:`._persona_text`'s rules).

A forbidden asset and the three flag rules (``no_memecoins``, ``long_only``,
``no_leverage``) are never loosened by a sentence that merely states another rule: a ban
is only ever united with a new one, so a misread or offhand sentence cannot undo it.
Before these rules a ban could not be undone at all, even when the trader said so (or
when the rules had misread it). A **lift** says it in so many words, about that asset or
rule:

- ``unban SOL``, ``lift the ban on SOL``, ``lift the SOL ban``, ``remove SOL from the
  banned list``, ``SOL is allowed again`` (ok / fine / back on the table ... again),
  ``SOL is no longer off limits`` (banned / forbidden / blocked), ``you can trade SOL
  again`` (I / we can trade / buy / touch / hold ... again), ``allow SOL again``;
- the same forms for meme coins (``memecoins are fine again``, ``lift the memecoin
  ban``), leverage (``you can use leverage again``, ``leverage is allowed again``,
  ``lift the no-leverage rule``) and shorting (``you can short again``, ``shorting is
  allowed again``, ``I'm no longer long only``, ``lift the long-only rule``).

A lift is read only from the trader's own statement: not in a question ("Can I trade SOL
again?"), not after a negation, a condition, a maybe or someone else's words before it
("I won't unban SOL", "if it holds 150, SOL is allowed again", "my friend says SOL is
fine again"), nor with a condition after it ("SOL is allowed again once it holds 150").
When in doubt the rule stays: a hard constraint is as strict as the trader last stated.
Numeric caps are not lifted here: they are raised by a sentence that says so
(:func:`._persona_change.states_a_change`).
"""

from __future__ import annotations

import re

from backend.memory.models import HardConstraint
from backend.text.tickers import LIST, parse_tickers

__all__ = ["LIFTABLE_KINDS", "lift_constraints", "reads_a_lift"]

LIFTABLE_KINDS: tuple[str, ...] = ("forbidden_assets", "no_memecoins", "long_only", "no_leverage")
"""Constraint kinds a lift removes (the forbidden list: the lifted tickers only)."""

_REMOVE = r"(?:lift|lifting|remove|removing|drop|dropping|end|ending|cancel|cancelling)"
_THE = r"(?:the\s+|my\s+|your\s+|that\s+)?"
_FINE = r"(?:allowed|ok|okay|fine|back\s+on\s+the\s+table|tradable|tradeable)"
_BANNED = r"(?:off[\s-]limits?|banned|forbidden|blocked)"
_RULE = r"(?:ban|block|restriction|rule|limit)"
_CAN = r"\b(?:you|i|we)\s+(?:can|may)\s+(?:now\s+)?"
_MEME = r"(?:meme[\s-]?(?:coins?|tokens?)|memes|memecoins?|shitcoins?)"
_SHORTS = r"(?:short(?:s|ing)?)"


def _subject(subject: str, verbs: str) -> list[str]:
    """The lift forms of the module doc for one subject (a regex, case-insensitive)."""
    return [
        rf"\bun-?ban\s+{subject}",
        rf"\b{_REMOVE}\s+{_THE}(?:ban|block|restriction)\s+on\s+{subject}",
        rf"\b{_REMOVE}\s+{_THE}{subject}\s+{_RULE}\b",
        rf"\bremove\s+{subject}\s+from\s+{_THE}(?:banned|forbidden|blocked|no[\s-]go)\s+list",
        rf"{subject}\s+(?:is|are)\s+{_FINE}\s+again\b",
        rf"{subject}\s+(?:is|are)\s+no\s+longer\s+{_BANNED}",
        rf"{_CAN}{verbs}\s+{subject}\s+again\b",
        rf"\b(?:allow|unblock)\s+{subject}\s+again\b",
    ]


def _compiled(forms: list[str]) -> re.Pattern[str]:
    return re.compile("|".join(f"(?:{f})" for f in forms), flags=re.IGNORECASE)


_ASSET_FORMS = [
    rf"\bun-?ban\s+{LIST}",
    rf"\b{_REMOVE}\s+{_THE}(?:ban|block|restriction)\s+on\s+{LIST}",
    rf"\b{_REMOVE}\s+{_THE}{LIST}\s+(?:ban|block|restriction)\b",
    rf"\bremove\s+{LIST}\s+from\s+{_THE}(?:banned|forbidden|blocked|no[\s-]go)\s+list",
    rf"{LIST}\s+(?:is|are)\s+{_FINE}\s+again\b",
    rf"{LIST}\s+(?:is|are)\s+no\s+longer\s+{_BANNED}",
    rf"{_CAN}(?:trade|buy|touch|hold)\s+{LIST}\s+again\b",
    rf"\b(?:allow|unblock)\s+{LIST}\s+again\b",
]
"""One pattern per form, each with ``LIST``'s one group (the tickers). Case-insensitive:
a lower-case word the list takes in ("you can trade it again") is no ticker
(:func:`~backend.text.tickers.parse_tickers` drops it)."""
_ASSETS = [re.compile(f, flags=re.IGNORECASE) for f in _ASSET_FORMS]
_FLAGS: dict[str, re.Pattern[str]] = {
    "no_memecoins": _compiled(
        [*_subject(_MEME, r"(?:trade|buy|touch|hold)"), rf"\b{_REMOVE}\s+{_THE}no[\s-]{_MEME}"]
    ),
    "no_leverage": _compiled(
        [
            *_subject(r"leverage", r"use"),
            rf"\b{_REMOVE}\s+{_THE}no[\s-]leverage\b",
        ]
    ),
    "long_only": _compiled(
        [
            *_subject(_SHORTS, r"(?:go|open)"),
            rf"{_CAN}(?:go\s+)?short\s+again\b",
            rf"\b{_REMOVE}\s+{_THE}(?:long[\s-]only|no[\s-]{_SHORTS})\b",
            r"\b(?:i'?m|i\s+am|we'?re|we\s+are)\s+no\s+longer\s+long[\s-]only\b",
            r"\bno\s+more\s+long[\s-]only\b",
        ]
    ),
}

_ASKED = re.compile(
    r"(?i)^\W*(?:should|shall|can|could|would|will|do|does|did|is|are|am|may|might|what|"
    r"how|why|when|where|which|who|whether)\b"
)
_NOT_SAID = re.compile(
    r"(?i)\b(?:if|unless|when|whenever|once|maybe|perhaps|might|could|would|should|not|"
    r"never|don'?t|doesn'?t|won'?t|can'?t|cannot|isn'?t|aren'?t|wouldn'?t|shouldn'?t|"
    r"told|tells?|said|says?|thinks?|thought|believes?|claims?|heard|friend|he|she|they|"
    r"whether|who|wish|hope|wonder\w*|considering|thinking)\b|'d\b"
)
"""Before a lift: a condition, a maybe, a negation, someone else's words."""
_LATER = re.compile(
    r"(?i)\b(?:if|unless|once|when|whenever|after|until|till|provided|said|says|thinks|"
    r"according)\b"
)
"""After a lift: a condition it waits for, or whose words they are."""


def _said(sentence: str, match: re.Match[str]) -> bool:
    """Whether the lift ``match`` is the trader's own, unconditional statement."""
    if sentence.rstrip().endswith("?") or _ASKED.match(sentence):
        return False
    before, after = sentence[: match.start()], sentence[match.end() :]
    return not (_NOT_SAID.search(before) or _LATER.search(after))


def lift_constraints(sentence: str) -> list[HardConstraint]:
    """The rules ``sentence`` lifts (module doc), one per kind: ``forbidden_assets`` with
    the tickers lifted, a flag kind with ``True``; ``quote`` = the sentence. ``[]`` when it
    lifts none. Never raises for any text."""
    quote = sentence[:1000]
    out: list[HardConstraint] = []
    tickers: list[str] = []
    for pattern in _ASSETS:
        for match in pattern.finditer(sentence):
            if _said(sentence, match):
                tickers += [t for t in parse_tickers(match.group(1)) if t not in tickers]
    if tickers:
        out.append(HardConstraint(kind="forbidden_assets", value=tickers, quote=quote))
    for kind, pattern in _FLAGS.items():
        if any(_said(sentence, m) for m in pattern.finditer(sentence)):
            out.append(HardConstraint(kind=kind, value=True, quote=quote))
    return out


def reads_a_lift(constraint: HardConstraint, sentence: str) -> bool:
    """Whether ``sentence`` lifts ``constraint`` by these rules: its kind, and for
    ``forbidden_assets`` every ticker of its value (a model's ``DELETE`` is applied only
    when the trader's own words say it)."""
    for lift in lift_constraints(sentence):
        if lift.kind != constraint.kind:
            continue
        if not isinstance(constraint.value, list):
            return True
        lifted = lift.value if isinstance(lift.value, list) else []
        return {str(t).upper() for t in constraint.value} <= set(lifted)
    return False

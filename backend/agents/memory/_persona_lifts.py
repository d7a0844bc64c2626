"""When a trader's sentence lifts a rule they had set (:mod:`._persona_text`'s rules).

A forbidden asset and the three flag rules (``no_memecoins``, ``long_only``,
``no_leverage``) are never loosened by a sentence that merely states another rule: a ban
is only ever united with a new one. Before these rules a ban could not be undone at all,
even when the trader said so (or when the rules had misread it). Removing a hard risk
limit is the worst misreading, so a **lift** is a whole sentence that is nothing but the
lift (an optional "ok", "alright", "please" or "also" before it; "please", "now" or "from
now on" after it), in one of these forms:

- assets: ``unban SOL``, ``lift the ban on SOL and DOGE`` (remove / drop / end / cancel;
  ``bans``), ``lift the SOL ban``, ``remove SOL from the banned list`` (``from my
  blacklist``; ``take SOL off ...``), ``SOL is allowed again``, ``SOL is no longer
  banned`` (off limits / forbidden / blocked), ``SOL isn't banned anymore``, ``you can
  trade SOL again`` (I can; trade / buy / touch), ``allow SOL again``;
- meme coins: ``memecoins are allowed again``, ``you can trade memecoins again``, ``lift
  the memecoin ban``, ``unban memecoins``;
- leverage: ``you can use leverage again``, ``leverage is allowed again``, ``lift the
  no-leverage rule``, ``lift the leverage ban``;
- shorting: ``you can short again``, ``shorting is allowed again``, ``I'm no longer long
  only``, ``I'm not long only anymore``, ``lift the long-only rule``.

So a question ("Can I trade SOL again", "SOL is allowed again, right"), a negation or a
refusal ("No lifting the ban on SOL", "I refuse to unban SOL"), a condition or a time
("Until I lift the ban on SOL ...", "You can trade SOL again next year"), a story ("I
regret lifting the ban on DOGE"), someone else's rule or market talk ("Coinbase is lifting
the ban on DOGE", "Solana is fine again, the outage is over"), a sentence that goes on
("Unban SOL, DOGE stays banned") or a limit order ("Cancel my short limit order") lifts
nothing (sentences a reviewer wrote against the first, looser version, 2026-12-07). When
in doubt the rule stays: a hard constraint is as strict as the trader last stated it.
Numeric caps are not lifted here: they are raised by a sentence that says so
(:func:`._persona_change.states_a_change`); ``allowed_assets`` is widened the same way.
"""

from __future__ import annotations

import re

from backend.memory.models import HardConstraint
from backend.text.tickers import TICKER, parse_tickers

__all__ = ["LIFTABLE_KINDS", "lift_constraints", "reads_a_lift"]

LIFTABLE_KINDS: tuple[str, ...] = ("forbidden_assets", "no_memecoins", "long_only", "no_leverage")
"""Constraint kinds a lift removes (the forbidden list: the lifted tickers only)."""

_ONE = rf"\$?{TICKER}"
_TICKERS = rf"({_ONE}(?:\s*(?:,\s*(?:and\s+)?|\band\b|&|/)\s*{_ONE})*)"
"""A list of tickers (one group; "and", commas, "&" or "/" between; not "or" / "nor")."""
_LEAD = r"^\W*(?:(?:ok|okay|alright|please|also)\W+)*"
_TAIL = r"(?:\s+(?:please|now|from\s+now\s+on))?\W*$"
_REMOVE = r"(?:lift|remove|drop|end|cancel)"
_THE = r"(?:the|my|your|that)\s+"
_BANNED = r"(?:banned|forbidden|blocked|off[\s-]limits?)"
_BAN_LIST = rf"(?:{_THE})?(?:(?:banned|forbidden|blocked|no[\s-]go|ban)\s+list|black[\s-]?list)"
_MEME = r"(?:meme[\s-]?(?:coins?|tokens?)|memes|memecoins?|shitcoins?)"
_SHORTS = r"(?:short(?:s|ing)?)"


def _forms(subject: str, verbs: str) -> list[str]:
    """The sentence forms of the module doc that name ``subject`` (a regex)."""
    return [
        rf"un-?ban\s+{subject}",
        rf"{_REMOVE}\s+(?:{_THE})?bans?\s+on\s+{subject}",
        rf"{_REMOVE}\s+(?:{_THE})?{subject}\s+bans?",
        rf"(?:remove\s+{subject}\s+from|take\s+{subject}\s+off)\s+{_BAN_LIST}",
        rf"{subject}\s+(?:is|are)\s+allowed\s+again",
        rf"{subject}\s+(?:is|are)\s+no\s+longer\s+{_BANNED}",
        rf"{subject}\s+(?:isn'?t|is\s+not|aren'?t|are\s+not)\s+{_BANNED}\s+any\s*more",
        rf"(?:you|i)\s+can\s+{verbs}\s+{subject}\s+again",
        rf"allow\s+{subject}\s+again",
    ]


def _sentence(forms: list[str]) -> re.Pattern[str]:
    """A whole sentence in one of ``forms`` (module doc), case-insensitive."""
    body = "|".join(f"(?:{f})" for f in forms)
    return re.compile(f"{_LEAD}(?:{body}){_TAIL}", flags=re.IGNORECASE)


_ASSETS = [_sentence([f]) for f in _forms(_TICKERS, r"(?:trade|buy|touch)")]
"""One pattern per form, the tickers in its one matched group. Case-insensitive: a word the
list takes in ("you can trade it again") is no ticker (:func:`parse_tickers` drops it)."""
_FLAGS: dict[str, re.Pattern[str]] = {
    "no_memecoins": _sentence(
        [
            *_forms(_MEME, r"(?:trade|buy|touch)"),
            rf"{_REMOVE}\s+{_THE}(?:no[\s-]{_MEME}|{_MEME}\s+ban)\s+(?:rule|restriction)",
        ]
    ),
    "no_leverage": _sentence(
        [*_forms("leverage", "use"), rf"{_REMOVE}\s+{_THE}no[\s-]leverage\s+(?:rule|restriction)"]
    ),
    "long_only": _sentence(
        [
            *_forms(_SHORTS, "(?:go|open)"),
            r"(?:you|i)\s+can\s+(?:go\s+)?short\s+again",
            rf"{_REMOVE}\s+{_THE}(?:long[\s-]only|no[\s-]{_SHORTS})\s+(?:rule|restriction)",
            r"(?:i'?m|i\s+am|we'?re|we\s+are)\s+no\s+longer\s+long[\s-]only",
            r"(?:i'?m|i\s+am|we'?re|we\s+are)\s+not\s+long[\s-]only\s+any\s*more",
        ]
    ),
}


def lift_constraints(sentence: str) -> list[HardConstraint]:
    """The rules ``sentence`` lifts (module doc): ``forbidden_assets`` with the tickers
    lifted, or one flag kind with ``True``; ``quote`` = the sentence. ``[]`` when it lifts
    none. Never raises for any text."""
    quote = sentence[:1000]
    for pattern in _ASSETS:
        match = pattern.match(sentence)
        listed = next((g for g in match.groups() if g), "") if match else ""
        tickers = parse_tickers(listed.replace("$", ""))
        if tickers:
            return [HardConstraint(kind="forbidden_assets", value=tickers, quote=quote)]
    for kind, pattern in _FLAGS.items():
        if pattern.match(sentence):
            return [HardConstraint(kind=kind, value=True, quote=quote)]
    return []


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

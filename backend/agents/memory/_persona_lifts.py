"""When a trader's note lifts a rule they had set (:mod:`._persona_text`'s rules).

A forbidden asset and the three flag rules (``no_memecoins``, ``long_only``,
``no_leverage``) are never loosened by a note that states another rule: a ban is only
ever united with a new one. Before these rules a ban could not be undone at all, even
when the trader said so (or when the rules had misread it). Removing a hard risk limit is
the worst misreading, so a **lift is a note of its own**: every sentence of it (split at
``.``, ``!``, ``;`` and line breaks; a ``?`` anywhere and it lifts nothing) is one of
these forms, with nothing else in it but an optional bullet (``-``, ``*``), "ok",
"okay", "alright", "please" or "also" before it and "please", "now" or "from now on"
after it:

- assets: ``unban SOL``, ``lift the ban on SOL and DOGE`` (remove / drop / end / cancel;
  ``bans``), ``lift the SOL ban``, ``remove SOL from the banned list`` (``from my
  blacklist``; ``take SOL off ...``), ``SOL is allowed again``, ``SOL is no longer
  banned`` (off limits / forbidden / blocked), ``SOL isn't banned anymore``, ``you can
  trade SOL again`` (I can; trade / buy / touch), ``allow SOL again``. The tickers are
  written as tickers (``SOL``, ``$SOL``) or coin names (``solana``), joined by commas,
  "and", "&" or "/", every word of the list a ticker (a sentence in capitals only, or a
  list with "NOW", "PLEASE", "NEVER", ... in it, lifts nothing);
- meme coins: ``memecoins are allowed again``, ``you can trade memecoins again``, ``lift
  the memecoin ban``, ``unban memecoins`` (not bare "memes");
- leverage: ``you can use leverage again``, ``leverage is allowed again``, ``lift the
  no-leverage rule``, ``lift the leverage ban``;
- shorting: ``you can short again``, ``shorting is allowed again`` (short selling /
  positions / trades; not bare "shorts"), ``I'm no longer long only``, ``I'm not long
  only anymore``, ``lift the long-only rule``.

A ticker of a lift must be a known coin (:data:`~backend.text.tickers.KNOWN_TICKERS`) or
one the profile forbids (the router checks: "Unban SOL, JK" lifts nothing). A chat reads
a lift in the trader's run of consecutive messages up to it, not in the one message
("don't" / "unban SOL" lifts nothing): the ``lift_note`` of
:meth:`~backend.agents.memory.PersonaManager.update_from_text`. A take-back sent after a
lift ("jk") does not restore the ban: the trader states the ban again.

So a question ("Can I trade SOL again", "Unban SOL?"), a negation or refusal, on the
sentence or on another line ("Don't\\nunban SOL", "I refuse to lift the ban on SOL"), a
condition or a time ("If BTC breaks 100k; unban SOL", "You can trade SOL again next
year"), a story ("I regret lifting the ban on DOGE"), someone else's rule or market talk
("Binance announcement:\\nSOL is allowed again", "Solana is fine again"), a retraction
("Unban SOL. Just kidding.", "Unban SOL. SOL stays banned."), a list that goes on ("Unban
SOL, no"), markup or emoji around it ("~~unban SOL~~", "❌ unban SOL") or a limit order
("Cancel my short limit order") lifts nothing: two reviewers' sentences against looser
versions (2026-12-07). When in doubt the rule stays: a hard constraint is as strict as
the trader last stated it. Numeric caps are not lifted here: they are raised by a
sentence that says so (:func:`._persona_change.states_a_change`); ``allowed_assets`` is
widened the same way.
"""

from __future__ import annotations

import re

from backend.memory.models import HardConstraint
from backend.text.tickers import TICKER, parse_tickers

__all__ = ["LIFTABLE_KINDS", "note_lifts"]


_JOIN = r"(?>\s*(?:,\s*(?:(?i:and)\s+)?|\s(?i:and)\s|&|/)\s*)"
"""Atomic: a space after a comma is matched one way only (else each separator of a long
list doubled the work: 22 tickers took 3.7 s, a reviewer measured)."""
_TICKERS = rf"(\$?{TICKER}(?:{_JOIN}\$?{TICKER})*)"
"""A list of tickers, case as :data:`TICKER` (upper case or a coin name), one group."""
_SHOUTED = frozenset({"NOW", "PLEASE", "AGAIN", "NEVER", "NOT", "MAYBE", "ALSO", "OK"})
"""Words in capitals a list of tickers may take in ("Unban SOL and DOGE, NOW"): a lift
that names one lifts nothing."""
_LEAD = r"^\s*(?:[-*]\s+)?(?:(?i:ok|okay|alright|please|also),?\s+)*"
_TAIL = r"(?:\s+(?i:please|now|from\s+now\s+on))?\s*$"
_REMOVE = r"(?:lift|remove|drop|end|cancel)"
_THE = r"(?:(?:the|my|your|that)\s+)?"
_BANNED = r"(?:banned|forbidden|blocked|off[\s-]limits?)"
_BAN_LIST = rf"{_THE}(?:(?:banned|forbidden|blocked|no[\s-]go|ban)\s+list|black[\s-]?list)"
_MEME = r"(?:meme[\s-]?(?:coins?|tokens?)|memecoins?|shitcoins?)"
_SHORTS = r"(?:shorting|short\s+(?:selling|positions?|trades?))"
"""Not bare "memes" nor "shorts" ("Shorts are allowed again": a dress code, videos)."""


def _forms(subject: str, verbs: str) -> list[str]:
    """The sentence forms of the module doc that name ``subject``: the words around it
    case-insensitive, ``subject`` as given."""
    i = "(?i:{})".format
    return [
        i(r"un-?ban\s+") + subject,
        i(rf"{_REMOVE}\s+{_THE}bans?\s+on\s+") + subject,
        i(rf"{_REMOVE}\s+{_THE}") + subject + i(r"\s+bans?"),
        i(r"remove\s+") + subject + i(rf"\s+from\s+{_BAN_LIST}"),
        i(r"take\s+") + subject + i(rf"\s+off\s+{_BAN_LIST}"),
        subject + i(r"\s+(?:is|are)\s+allowed\s+again"),
        subject + i(rf"\s+(?:is|are)\s+no\s+longer\s+{_BANNED}"),
        subject + i(rf"\s+(?:isn'?t|is\s+not|aren'?t|are\s+not)\s+{_BANNED}\s+any\s*more"),
        i(rf"(?:you|i)\s+can\s+{verbs}\s+") + subject + i(r"\s+again"),
        i(r"allow\s+") + subject + i(r"\s+again"),
    ]


def _sentence(forms: list[str]) -> re.Pattern[str]:
    """A whole sentence in one of ``forms`` (module doc)."""
    return re.compile(_LEAD + "(?:" + "|".join(f"(?:{f})" for f in forms) + ")" + _TAIL)


_ASSETS = [_sentence([f]) for f in _forms(_TICKERS, r"(?:trade|buy|touch)")]
"""One pattern per form, the tickers in its one group."""
_FLAGS: dict[str, re.Pattern[str]] = {
    "no_memecoins": _sentence(
        [
            *_forms(f"(?i:{_MEME})", r"(?:trade|buy|touch)"),
            rf"(?i:{_REMOVE}\s+{_THE}(?:no[\s-]{_MEME}|{_MEME}\s+ban)\s+(?:rule|restriction))",
        ]
    ),
    "no_leverage": _sentence(
        [
            *_forms("(?i:leverage)", "use"),
            rf"(?i:{_REMOVE}\s+{_THE}no[\s-]leverage\s+(?:rule|restriction))",
        ]
    ),
    "long_only": _sentence(
        [
            *_forms(f"(?i:{_SHORTS})", "(?:go|open)"),
            r"(?i:(?:you|i)\s+can\s+(?:go\s+)?short\s+again)",
            rf"(?i:{_REMOVE}\s+{_THE}(?:long[\s-]only|no[\s-]short(?:s|ing)?)\s+(?:rule|restriction))",
            r"(?i:(?:i'?m|i\s+am|we'?re|we\s+are)\s+no\s+longer\s+long[\s-]only)",
            r"(?i:(?:i'?m|i\s+am|we'?re|we\s+are)\s+not\s+long[\s-]only\s+any\s*more)",
        ]
    ),
}


LIFTABLE_KINDS: tuple[str, ...] = ("forbidden_assets", *_FLAGS)
"""Constraint kinds a lift removes (the forbidden list: the lifted tickers only)."""


def _lift(sentence: str) -> list[HardConstraint]:
    """The rule one ``sentence`` (no ``.!?;`` or line break in it) lifts by the forms of
    the module doc: ``forbidden_assets`` with the tickers, or one flag kind with ``True``;
    ``quote`` = the sentence. ``[]`` when it is not such a sentence. Never raises."""
    quote = sentence[:1000]
    if not re.search(r"[a-z]", sentence):
        return []  # all capitals: a ticker cannot be told from a word ("UNBAN SOL, NEVER")
    for pattern in _ASSETS:
        match = pattern.match(sentence)
        if match is None:
            continue
        listed = next((g for g in match.groups() if g), "").replace("$", "")
        tickers = parse_tickers(listed)
        every = len(tickers) == len(re.split(_JOIN, listed))  # every word a ticker
        if tickers and every and not _SHOUTED & set(tickers):
            return [HardConstraint(kind="forbidden_assets", value=tickers, quote=quote)]
        return []
    for kind, pattern in _FLAGS.items():
        if pattern.match(sentence):
            return [HardConstraint(kind=kind, value=True, quote=quote)]
    return []


def note_lifts(text: str) -> list[HardConstraint]:
    """The rules a whole note lifts: ``[]`` unless it holds no ``?`` and every sentence of
    it is a lift (module doc); else one constraint per kind (the tickers of all its
    sentences; ``quote`` its first sentence of that kind). Never raises."""
    if "?" in text:
        return []
    sentences = [s for s in re.split(r"[.!;\n]", text) if s.strip()]
    found: dict[str, HardConstraint] = {}
    for sentence in sentences:
        lifted = _lift(sentence.strip())
        if not lifted:
            return []
        for lift in lifted:
            old = found.get(lift.kind)
            if old is None:
                found[lift.kind] = lift
            elif isinstance(old.value, list) and isinstance(lift.value, list):
                united = list(dict.fromkeys([*old.value, *lift.value]))
                found[lift.kind] = old.model_copy(update={"value": united})
    return list(found.values())

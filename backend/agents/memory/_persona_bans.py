"""When words that look like a ban of an asset state none (:mod:`._persona_text`).

A forbidden asset is lifted only by a note that says so in those words
(:mod:`._persona_lifts`; forbidden lists are otherwise only united), so a misread ban
stays until the trader lifts it. Readers found these misreadings (2026-12-06/07), each of
which had become one:

- a bare "no <ticker>" about what the trader holds: "I have no SOL right now", "No ETH
  position yet", "No BTC today" ("No SOL.", "no more SOL positions" still ban);
- "stop / quit / done / no longer (trading) <ticker>" asked, conditional, reported,
  someone else's or limited in time: "Should I stop trading SOL", "If SOL dumps I'll stop
  trading SOL", "My friend is done with memecoins", "I'm done trading ETH for the day",
  "I quit trading DOGE last year but now I'm back" ("stop trading SOL" still bans);
- "no (more) <ticker> ban(s)": about a ban, not one ("No more SOL ban"; 2026-12-07).
"""

from __future__ import annotations

import re

__all__ = ["REPORTED", "not_a_ban"]

REPORTED = re.compile(
    r"(?i)\b(?:who|whether|if|nobody|no\s+one|think|thinks|thought|say|says|said|believe|"
    r"believes|claims?|heard)\b"
)
"""Words that make a statement a question or someone else's view ("Who says SOL is off
limits", "my coach thinks DOGE is banned"): no rule is stated."""
_NONE_HELD = re.compile(
    r"(?i)\b(?:have|has|had|got|hold|holding|own|owning|there'?s|there\s+is)\s*$|^\s*"
    r"(?:(?:positions?|exposure|trades?)\s+)?(?:left|yet|today|tonight|right\s+now|"
    r"at\s+the\s+moment|for\s+now|this\s+(?:week|month)|"
    r"in\s+(?:my|the)\s+(?:account|portfolio|bags?|wallet))\b"
)
"""Around a bare "no <ticker>", words of holding."""
_QUITTING = re.compile(r"(?i)^(?:stop|quit|done|no\s+longer)\b")
_PASSING = re.compile(
    r"(?i)\b(?:for\s+(?:the\s+|a\s+)?(?:day|today|now|night|week|month|while|bit)|today|"
    r"tonight|after|until|till|last\s+(?:year|month|week)|ago|back)\b|\bat\s+\d"
)
"""After "stop trading X", a time that limits it."""
_NOT_THE_TRADER = re.compile(r"(?i)\b(?:if|when|unless|once|should|would|why|friend|he|she|they)\b")


def not_a_ban(sentence: str, match: re.Match[str]) -> bool:
    """Whether ``match`` (a ban's words in ``sentence``: "no SOL", "stop trading SOL",
    "done with memecoins") states no ban (module doc)."""
    words = match.group(0)
    head = re.split(r",|;|\bbut\b|\bnow\b", sentence[: match.start()])[-1]
    tail = re.split(r",|;|\bbut\b", sentence[match.end() :])[0]
    if _QUITTING.match(words):
        before = sentence[: match.start()]
        return bool(
            sentence.rstrip().endswith("?")
            or REPORTED.search(before)
            or _NOT_THE_TRADER.search(before)
            or _PASSING.search(tail)
        )
    if re.match(r"(?i)no\b", words) and re.match(r"(?i)\s*bans?\b", tail):
        return True  # "no more SOL ban(s)": about a ban, not one
    if re.match(r"(?i)no\s+(?!more\b)", words):  # a bare "no <ticker>"
        return bool(_NONE_HELD.search(head) or _NONE_HELD.search(tail))
    return False

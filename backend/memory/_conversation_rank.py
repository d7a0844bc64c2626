"""Pure ranking steps of conversation recall (:mod:`backend.memory.conversation`):
the speakers a query names, whether a query asks *when* and which messages state a
time, and the greedy session-diverse selection of the top messages."""

from __future__ import annotations

import re

import numpy as np

__all__ = ["asks_when", "diverse_order", "named_speakers", "states_time"]


def named_speakers(query: str, speakers: list[str]) -> set[str]:
    """The ``speakers`` named in ``query`` (whole words, case-insensitive, a possessive
    ``'s`` allowed)."""
    return {
        s
        for s in speakers
        if s.strip() and re.search(rf"\b{re.escape(s)}(?:'s|’s)?\b", query, flags=re.IGNORECASE)
    }


_WHEN_RE = re.compile(
    r"^\W*(?:when\b|what (?:date|day|time|month|year|week|weekend)\b|"
    r"how long (?:ago|before|after)\b|in which (?:month|year)\b)",
    flags=re.IGNORECASE,
)
_DAYS = "monday|tuesday|wednesday|thursday|friday|saturday|sunday"
# capitalised month names (case-sensitive), May only with a day or a year ("I may buy")
_MONTHS = (
    "(?-i:January|February|March|April|June|July|August|September|October|November|December"
    "|May(?= \\d))"
)
_TIME_RE = re.compile(
    r"\b(?:yesterday|today|tonight|tomorrow|recently|ago|"
    rf"(?:last|next|this|past|coming) (?:week|weekend|month|year|night|summer|winter|"
    rf"spring|fall|autumn|{_DAYS})|{_DAYS}|(?:{_MONTHS})(?: \d{{1,2}})?|"
    r"(?:19|20)\d\d|the other day|the day before|a (?:few|couple of) "
    r"(?:days|weeks|months|years))\b",
    flags=re.IGNORECASE,
)


def asks_when(query: str) -> bool:
    """Whether ``query`` asks for a time: it starts with *when*, *what date/day/month/
    year ...*, *how long ago/before/after* or *in which month/year*."""
    return _WHEN_RE.search(query) is not None


def states_time(text: str) -> bool:
    """Whether ``text`` states a time: a relative day (*yesterday*, *last week*, *next
    Friday*, *two days ago*, *recently*), a weekday, a capitalised month name (*May*
    only before a number) or a year. The answer to a *when* question is a message that
    says when (LoCoMo's temporal evidence: "I went to a support group yesterday").
    ~14 us a message: conversation memory stores the flag with each message
    (``says_time``) rather than matching 700 messages per question (~10 ms)."""
    return _TIME_RE.search(text) is not None


def diverse_order(
    scores: np.ndarray, sessions: np.ndarray, top_k: int, penalty: float
) -> list[int]:
    """Indices of the ``top_k`` best ``scores``, chosen greedily: each pick lowers the
    remaining messages of its session by ``penalty`` (score units), so evidence spread
    over several sessions (LoCoMo's multi-hop questions) is not crowded out by one
    session's run of neighbours. ``penalty`` 0 is the plain descending order (stable)."""
    if penalty <= 0 or len(scores) <= 1:
        return [int(i) for i in np.argsort(-scores, kind="stable")[:top_k]]
    names, codes = np.unique(sessions, return_inverse=True)
    taken = np.zeros(len(names))
    live = scores.astype(np.float64).copy()
    out: list[int] = []
    for _ in range(min(top_k, len(scores))):
        i = int(np.argmax(live - penalty * taken[codes]))
        out.append(i)
        live[i] = -np.inf
        taken[codes[i]] += 1
    return out

"""Whether a model's reading of a note is in the trader's own words (:func:`stated_in`):
the router stores an LLM's goal or stated preference only when the note says it, and
says it without a negation ("I'm not aggressive" states no aggressive risk tolerance).

A word is *negated* when one of :data:`_NEGATORS` stands in the four words before it in
its clause (clauses end at ``. , ; : ! ?``, a line break and "but"): the scope of a
negation in short trader notes, read the way the rules of
:mod:`backend.agents.memory._persona_text` read a ban ("no memecoins like DOGE").
"""

from __future__ import annotations

import re

from backend.agents.memory._persona_stated import (
    _DURATION,
    _PREFERRED,
    _RISK_WORDS,
    _STYLE_WORDS,
    NUMBER_WORDS,
)
from backend.text.tickers import mentioned_tickers, parse_tickers

__all__ = ["stated_in"]

Clauses = list[list[tuple[str, str, bool]]]
"""A note's clauses, each a list of ``(raw, normalised, negated)`` tokens."""

_CLAUSE = re.compile(r"[.,;:!?\n]|\bbut\b", re.IGNORECASE)
_TOKEN = re.compile(r"[A-Za-z0-9@]+(?:'[A-Za-z]+)?")
_NEGATORS = frozenset((
    "not", "no", "never", "nor", "cannot", "dont", "don't", "won't", "wont", "can't", "cant",
    "didn't", "didnt", "doesn't", "doesnt", "isn't", "isnt", "aren't", "arent", "wasn't",
    "wasnt", "shouldn't", "wouldn't", "haven't", "used",
))  # fmt: skip
_SCOPE = 4
"""Words before a word that a negator reaches."""
_NUMBER_WORDS = {word: str(n) for word, n in NUMBER_WORDS.items()}
_NUMBER_WORDS |= {"a": "1", "an": "1", "couple": "2"}
_FILLER = frozenset((
    "the", "and", "for", "with", "that", "this", "then", "than", "from", "into", "over",
    "about", "more", "less", "very", "much", "our", "your", "its", "their", "all", "any",
    "some", "also", "just", "get", "got", "make", "want", "would", "like",
))  # fmt: skip
_HOLDING = frozenset(("hold", "held", "holding", "keep", "kept", "last", "stay", "sit"))
"""Words of holding a position, one of which comes before a holding period's unit."""
_QUALIFIERS = frozenset(("for", "about", "around", "roughly", "usually", "to", "or", "of"))


def _norm(word: str) -> str:
    """One token's comparable form: lower case, a number word as its digits ("a" is 1),
    a plural's ``s`` dropped ("days" -> "day"; not "less" or a filler word)."""
    word = word.lower()
    word = _NUMBER_WORDS.get(word, word)
    if word in _FILLER or len(word) <= 3 or word.endswith("ss") or not word.endswith("s"):
        return word
    return word[:-1]


def _clauses(note: str) -> Clauses:
    """The note's :data:`Clauses` (a curly apostrophe read as a straight one)."""
    out = []
    for clause in _CLAUSE.split(note.replace("\u2019", "'")):
        tokens: list[tuple[str, str, bool]] = []
        for raw in _TOKEN.findall(clause):
            before = [t[0].lower() for t in tokens[-_SCOPE:]]
            tokens.append((raw, _norm(raw), any(w in _NEGATORS for w in before)))
        if tokens:
            out.append(tokens)
    return out


def _phrase_said(phrase: str, clauses: Clauses) -> bool:
    """``phrase`` ("low risk", "day trader") in a clause, its first word not negated."""
    wanted = [_norm(w) for w in _TOKEN.findall(phrase)]
    for tokens in clauses:
        norms = [t[1] for t in tokens]
        for i in range(len(tokens) - len(wanted) + 1):
            if norms[i : i + len(wanted)] == wanted and not tokens[i][2]:
                return True
    return False


def _tickers_said(tickers: list[str], note: str, clauses: Clauses) -> bool:
    """Every ticker named, not negated: written in upper case, or a coin name
    (:func:`mentioned_tickers`: "solana"; "hype" or "Ada" only in upper case), or in the
    list the rules read as the trader's preferred assets ("I mostly trade Ripple")."""
    named: set[str] = set()
    for tokens in clauses:
        for raw, _, negated in tokens:
            if negated:
                continue
            if raw.isupper():
                named.add(raw)
            named.update(mentioned_tickers(raw))
    for match in _PREFERRED.finditer(note):
        named.update(parse_tickers(match.group(1)))
    return bool(tickers) and all(t in named for t in tickers)


def _holding_said(value: str, clauses: Clauses) -> bool:
    """The value's duration unit in the note, not negated, after a word of holding in
    its clause ("hold", "keep", "last", ...: "I've traded for 3 years" holds no holding
    period), with the value's count words ("1", "few", "2 3") among the four words
    before it ("a week" holds "1 week", "last month" does not hold "a month")."""
    words = [_norm(w) for w in _TOKEN.findall(value)]
    units = [i for i, w in enumerate(words) if _DURATION.fullmatch(w + "s")]
    if not units:
        return False
    unit = words[units[-1]]
    counts = {w for w in words[: units[-1]] if w not in _QUALIFIERS}
    for tokens in clauses:
        held = False  # a word of holding before this token in its clause
        for i, (_, norm, negated) in enumerate(tokens):
            window = tokens[max(0, i - _SCOPE) : i]
            if norm == unit and not negated and held and counts <= {t[1] for t in window}:
                return True
            held = held or norm in _HOLDING
    return False


def _goal_said(value: str, clauses: Clauses) -> bool:
    """Every number of the goal, and two thirds of its content words (three letters or
    more, not filler; at least one), in the note and not negated."""
    said = {norm for tokens in clauses for _, norm, negated in tokens if not negated}
    words = _TOKEN.findall(value)
    numbers = {_norm(w) for w in words if any(c.isdigit() for c in w)}
    content = {_norm(w) for w in words if len(w) >= 3 and w.lower() not in _FILLER} | numbers
    found = content & said
    return bool(content) and numbers <= said and 3 * len(found) >= 2 * len(content)


def stated_in(attribute: str, value: str | list[str], note: str) -> bool:
    """Whether ``value`` (:func:`~._persona_stated.normalize_stated`'s, or a goal) is
    read in ``note``, the trader's words it was read from, not negated there: a model
    must not store what the trader never said (Gemma 3 270M, asked "You can short
    again.", answered a ``stated_style`` of its own).

    - ``risk_tolerance``, ``style``: a phrase of the vocabulary that means ``value``
      ("low risk" for conservative; "I'm not a degen" states no aggressive);
    - ``preferred_assets``: every ticker named (:func:`_tickers_said`; "I never trade
      SOL" names none);
    - ``holding_period``: its unit with its count (:func:`_holding_said`);
    - ``goals`` (and any other): :func:`_goal_said`.

    Strict on purpose: a model's reading refused here leaves the note to the rules,
    while a wrong one stored sets sizes and limits (``stated_risk_tolerance`` is read
    before the fills' risk tolerance). The rules' own readings of the tests' notes pass
    (``tests/agents/memory/test_persona_text.py``)."""
    clauses = _clauses(note)
    if attribute in ("risk_tolerance", "style"):
        vocabulary = _RISK_WORDS if attribute == "risk_tolerance" else _STYLE_WORDS
        return any(
            canonical == value and _phrase_said(word, clauses)
            for word, canonical in vocabulary.items()
        )
    if attribute == "preferred_assets":
        tickers = value if isinstance(value, list) else parse_tickers(value)
        return _tickers_said(tickers, note, clauses)
    text = " ".join(value) if isinstance(value, list) else value
    if attribute == "holding_period":
        return _holding_said(text, clauses)
    return _goal_said(text, clauses)

"""Whether a trader's sentence says a hard limit changes: the only way a looser value may
replace a stored one (:mod:`backend.agents.memory._persona_router`).

A change verb anywhere in the sentence had been enough, so a question ("Should I raise
my leverage to 10x?"), a negation ("I'm not raising my leverage to 10x", "I don't allow
myself more than 10x"), someone else's story ("My friend raised his leverage to 20x and
got liquidated") or a verb about something else ("I'm increasing my position size,
still never above 10x leverage") loosened a 3x cap (a reviewer's sentences, 2026-12-06).
Now the verb must be the trader's own, not negated, in a statement, with the new number
in its clause ("from now on" / "going forward" speak for the whole sentence). When in
doubt, no change: a limit stays as strict as the trader last stated it.
"""

from __future__ import annotations

import re

from backend.agents.memory._persona_text import text_decisions
from backend.memory.models import HardConstraint

__all__ = ["reads_a_change", "states_a_change"]

_RELAX = re.compile(
    r"(?i)\b(?:rais(?:e|es|ed|ing)|increas(?:e|es|ed|ing)|bump(?:s|ed|ing)?|loosen\w*|"
    r"relax\w*|allow(?:s|ed|ing)?|from\s+now\s+on|going\s+forward)\b"
)
"""Change verbs by which a trader says a limit goes up."""
_WHOLE_SENTENCE = re.compile(r"(?i)^(?:from\s+now\s+on|going\s+forward)$")
_ASKED = re.compile(
    r"(?i)^\W*(?:should|shall|can|could|would|will|do|does|did|is|are|am|may|might|what|"
    r"how|why|when|where|which|who|whether)\b"
)
"""A sentence that opens as a question (its ``?`` may be gone: sentences are split there)."""
_NOT_MINE = re.compile(
    r"(?i)\b(?:not|never|no|don'?t|do\s+not|doesn'?t|won'?t|wouldn'?t|can'?t|cannot|"
    r"shouldn'?t|isn'?t|aren'?t|wasn'?t|no\s+longer|if|whether|unless|think|thinks|thought|"
    r"says?|said|heard|believes?|claims?|he|she|they|his|her|their|him|them|friend|friends|"
    r"someone|somebody|people|everyone|everybody|others?|guys?|coach|wife|husband|brother|"
    r"sister|dad|mom|father|mother)\b"
)
"""Words before the verb, in its clause, that make it not the trader's own statement of
a change: a negation, a condition, a report, another person."""
_CLAUSE = re.compile(r",|;|\bbut\b|\band\b|\bstill\b")
_NUMBER = re.compile(r"(?i)\d|\b(?:one|two|three|four|five|six|seven|eight|nine|ten|twenty)\b")


def states_a_change(quote: str) -> bool:
    """Whether ``quote`` (a sentence) says a limit changes (module doc): "raise my max
    leverage to 10x", "from now on, max 10x"."""
    text = " ".join(quote.split())
    if text.endswith("?") or _ASKED.match(text):
        return False
    for verb in _RELAX.finditer(text):
        head = _CLAUSE.split(text[: verb.start()])[-1]
        if _NOT_MINE.search(head):
            continue
        if _WHOLE_SENTENCE.match(verb.group(0)):
            return True
        clause = _CLAUSE.split(text[verb.end() :])[0]
        if _NUMBER.search(clause):
            return True
    return False


def reads_a_change(constraint: HardConstraint, text: str) -> bool:
    """Whether the model's ``constraint`` is a numeric limit whose change the note states:
    its quote is in ``text`` (spacing and case aside), says a change
    (:func:`states_a_change`) and reads, by the offline rules, as the model's very value.
    Then the rules' reading of the whole note (its smallest number: "raising to 5x;
    previously 2x" reads 2x) does not undo it. A made-up quote, a value the quote does
    not state, or a list or flag (never loosened: united or set) gives no such
    exemption."""
    value = constraint.value
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    quote = " ".join(constraint.quote.split()).casefold()
    if not quote or quote not in " ".join(text.split()).casefold():
        return False
    if not states_a_change(constraint.quote):
        return False
    own = [d.constraint for d in text_decisions(constraint.quote) if d.constraint is not None]
    return any(c.kind == constraint.kind and c.value == value for c in own)

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

from backend.agents.memory._persona_text import split_sentences, text_decisions
from backend.memory.models import HardConstraint

__all__ = ["reads_a_change", "sentence_of", "states_a_change"]

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
"""A sentence that opens as a question."""
_HEDGED = re.compile(
    r"(?i)\b(?:if|unless|when|whenever|once|maybe|perhaps|might|may|could|would|should|"
    r"thinking|considering|tempted|wonder|wondering|wish|hope|not|never|no\s+longer|"
    r"told|tells?|said|says?|suggest\w*|advis\w*|recommend\w*|"
    r"don'?t|doesn'?t|won'?t|can'?t|isn'?t|aren'?t)\b|'d\b"
)
"""Anywhere before the verb: a condition, a maybe, a negation, a report of what someone
said (not a change the trader states)."""
_SPEAKER = re.compile(
    r"(?i)^(?:(?:please|ok(?:ay)?|so|now|then|also|and|just)\s+)*"
    r"(?:(?:i|we)(?:'m|'re|'ve|'ll|\s+am|\s+are|\s+have|\s+will)?|let'?s|let\s+me)?"
    r"(?:\s*(?:just|also|now|hereby|want\s+to|wanna|going\s+to|gonna|decided\s+to|"
    r"need\s+to|plan\s+to))*\s*$"
)
"""What may stand before the verb in its clause: nothing (an instruction), or the
trader (I, I'm, I've, we, let's) and words of intent. Anyone else ("Binance allows up
to 125x", "my friend raised his") is not the trader changing a limit."""
_NOW_TAIL = re.compile(
    r"(?i)\b(?:now|these\s+days|from\s+here(?:\s+on)?|starting\s+(?:today|now))\W*$"
)
"""An asset list said to hold from now ("I only trade ETH now"): a reviewer's switch of
the allowed assets from BTC to ETH was refused as looser, and BTC kept trading."""
_CLAUSE = re.compile(r",|;|:|\bbut\b|\band\b|\bstill\b")
_NUMBER = re.compile(r"(?i)\d|\b(?:one|two|three|four|five|six|seven|eight|nine|ten|twenty)\b")


def states_a_change(quote: str, *, numeric: bool = True) -> bool:
    """Whether ``quote`` (a sentence) says a limit changes (module doc): "raise my max
    leverage to 10x", "I'm raising my risk to 3%", "from now on, max 10x". ``numeric``:
    the limit is a number, which must then be in the verb's clause (an asset list need
    not be)."""
    text = " ".join(quote.split())
    if text.endswith("?") or _ASKED.match(text):
        return False
    if not numeric and _NOW_TAIL.search(text) and not _HEDGED.search(text):
        return True  # "I only trade ETH now": a list, said to hold from now
    for verb in _RELAX.finditer(text):
        if _HEDGED.search(text[: verb.start()]) or _HEDGED.search(text[verb.end() :]):
            return False  # "raise my leverage to 10x if BTC breaks 100k"
        head = _CLAUSE.split(text[: verb.start()])[-1]
        if not _SPEAKER.match(head):
            continue
        said = verb.group(0).lower()
        if said.endswith("ed") and head.strip().lower() in ("i", "we"):
            continue  # "I raised my leverage to 20x yesterday": a story, not a rule
        if _WHOLE_SENTENCE.match(said) or not numeric:
            return True
        if _NUMBER.search(_CLAUSE.split(text[verb.end() :])[0]):
            return True
    return False


def sentence_of(quote: str, text: str) -> str | None:
    """The sentence of ``text`` that holds ``quote`` (spacing and case aside); None when
    no one sentence holds it ("Raise my max leverage to 10x? No way" spans a question
    and its answer)."""
    want = " ".join(quote.split()).casefold().rstrip(".!;")
    if not want:
        return None
    for sentence in split_sentences(text):
        if want in " ".join(sentence.split()).casefold():
            return sentence
    return None  # a quote across sentences (a question and its answer) states no change


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
    if not states_a_change(sentence_of(constraint.quote, text) or ""):
        return False
    own = [d.constraint for d in text_decisions(constraint.quote) if d.constraint is not None]
    return any(c.kind == constraint.kind and c.value == value for c in own)

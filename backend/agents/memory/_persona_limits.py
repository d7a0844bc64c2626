"""The numeric limits a trader's sentence states: percentages, leverage multiples and
amounts, read clause by clause (and ``no_leverage``, read in the same clause as a
leverage number), for :mod:`._persona_text`, whose module doc lists the rules.

Also the clause helpers both modules use: :func:`clause_at` (the clause around a match)
and :func:`undone` (a negation just before a rule's words undoes it: :data:`UNDONE`).
"""

from __future__ import annotations

import re
from collections.abc import Iterator

from backend.agents.memory._persona_stated import NUMBER_WORD, NUMBER_WORDS
from backend.memory.models import HardConstraint

__all__ = ["UNDONE", "clause_at", "limit_constraints", "undone"]

_DECIMAL = r"(?<![\w.,])(\d+(?:[.,]\d+)?|[.,]\d+)"
"""A number as a trader writes it: ``2``, ``0.5``, ``.5`` and the decimal comma ``0,5``
(:func:`decimal`). Not a digit run inside another number: ``.5%`` had been read as 5%,
a cap ten times looser than said (a reviewer's)."""
_PCT = _DECIMAL + r"\s*(?:%|percent\b|per\s+cent\b|pct\b)"
_PCT_RE = re.compile(_PCT, flags=re.IGNORECASE)
_LIMIT = re.compile(
    r"(?i)\b(?:never|no more than|not more than|max(?:imum)?|at most|up to|limit(?:ed)?|"
    r"cap(?:ped)?|above|over|exceed(?:ing)?|larger than|bigger than|below|under|only|"
    r"no|don'?t|do not|keep)\b"
)

_LEVERAGE_X = re.compile(r"(?i)" + _DECIMAL + r"\s*[x×](?![a-z])")
_LEVERAGE_TIMES = re.compile(r"(?i)" + _DECIMAL + r"\s*(?:[x×](?![a-z])|times\b)")
"""``3 times`` is leverage only in a clause that says leverage."""
_NO_LEVERAGE = re.compile(
    r"(?i)\b(?:no|never(?:\s+use|\s+trade\s+with)?|without|zero|don'?t\s+use|do\s+not\s+use|"
    r"not\s+using|avoid|keep\s+me\s+(?:out\s+of|away\s+from)|stay\s+(?:out\s+of|away\s+from))"
    r"\s+(?:any\s+)?leverage(?:d)?\b"
)
UNDONE = re.compile(
    r"(?i)\b(?:don'?t|do\s+not|doesn'?t|does\s+not|no\s+longer|not|never|can'?t|cannot|"
    r"couldn'?t|won'?t|wouldn'?t|isn'?t|aren'?t|wasn'?t|weren'?t|used\s+to)\s+"
    r"(?:\w+\s+)?$"
)
"""A negation just before a rule's words, in the same clause: "I don't avoid SOL", "I no
longer only trade BTC", "not long only": the rule is not stated."""


_PERMISSION = re.compile(
    r"(?i)\b(?:don'?t|do\s+not)\s+mind\b|\b(?:fine|ok|okay|happy|comfortable|cool)\s+"
    r"(?:with|to|using|going)\b|\bno\s+problem\b|\bi\s+can\s+(?:use|go|lose|take|risk)\b"
)
"""A permission, not a limit: "I don't mind 10x leverage", "no problem going above 3x",
"I can lose 50% on a trade and hold"; unless the clause caps it too ("I can risk up to 2%
a trade": :data:`_CAP`)."""
_CAP = re.compile(
    r"(?i)\b(?:never|no\s+more\s+than|not\s+more\s+than|max(?:imum)?|at\s+most|up\s+to|"
    r"limit(?:ed)?|cap(?:ped)?|exceed(?:ing)?)\b"
)


def _permits(clause: str) -> bool:
    """Whether ``clause`` gives a permission and no cap (:data:`_PERMISSION`)."""
    return _PERMISSION.search(clause) is not None and _CAP.search(clause) is None


_FLOOR = re.compile(
    r"(?i)\b(?:at\s+least|minimum(?:\s+of)?|min\.?|(?:never|not)\s+(?:go\s+|drop\s+|fall\s+)?"
    r"(?:below|under|less\s+than))\s*$"
)
"""Right before a number, a floor, not a cap: "never go below 2x leverage", "at least 1%"."""
_DAILY = re.compile(
    r"(?i)\b(?:daily|a\s+day|per\s+day|each\s+day|in\s+one\s+day|in\s+a\s+day|"
    r"for\s+the\s+day|today|intraday)\b"
)
_PERIOD = re.compile(
    r"(?i)\b(?:week|weekly|month|monthly|quarter|quarterly|year|yearly|annual(?:ly)?|overall|"
    r"total|all[\s-]time|drawdown)\b"
)
"""A loss over a period other than a day (or in all): no per-trade limit, and no kind of
hard constraint holds it ("stop trading if I'm down 10% this month")."""
_STOP_LOSS = re.compile(r"(?i)\bstop[\s-]?loss(?:es)?\b|\bstops?\s+(?:at|is|are)\b")
"""A stop-loss distance ("my stop loss is 5% below entry"): not a risk per trade."""
_WORD_NUMBER = re.compile(
    rf"(?i)\b({NUMBER_WORD})(?=\s*(?:%|percent\b|pct\b|[x×](?![a-z])|times\b))"
)


def _with_digits(clause: str) -> str:
    """``two percent`` -> ``2 percent``, ``three times`` -> ``3 times``."""
    return _WORD_NUMBER.sub(lambda m: str(NUMBER_WORDS[m.group(1).lower()]), clause)


_SET_TO = re.compile(
    r"(?i)\b(?:rais(?:e|es|ed|ing)|increas(?:e|es|ed|ing)|bump(?:s|ed)?|lift(?:s|ed)?|"
    r"lower(?:s|ed)?|reduc(?:e|es|ed|ing)|cut(?:s|ting)?|set(?:s|ting)?)\b.*?\bto\b"
)
"""A limit set to a number: "reduce my leverage to 2x", "increase my max leverage from 5x
to 10x" (the number after ``to``)."""


def _limited_number(pattern: re.Pattern[str], clause: str) -> re.Match[str] | None:
    """The number ``pattern`` finds after ``<change verb> ... to`` (:data:`_SET_TO`), else
    the first one after the clause's first limit word ("usually 5x and never above 10x" ->
    10x), else the last one before that word ("instead of 20x I'll use 5x max" -> 5x: the
    first, 20x, was the number left behind), else its first one; None when that number is
    a floor ("never go below 2x")."""
    set_to = _SET_TO.search(clause)
    limit = _LIMIT.search(clause)
    before = list(pattern.finditer(clause, 0, limit.start())) if limit else []
    found = (
        (pattern.search(clause, set_to.end()) if set_to else None)
        or (pattern.search(clause, limit.end()) if limit else None)
        or (before[-1] if before else None)
        or pattern.search(clause)
    )
    if found is None or _FLOOR.search(clause[: found.start()]):
        return None
    return found


def _governs(clause: str, number: re.Match[str]) -> bool:
    """Whether a limit word (or "set to") bears on ``number``: before it in the clause,
    or after it within six words with no joining word ("so", "if", "when", ...) between
    and not naming something else ("max size") or another number ("under $100"): "3x
    max", "5x leverage is my max", "3x is my absolute maximum". Not "I went 10x long SOL
    and max size", read as a 10x leverage cap (a reviewer's finding), nor "I use 20x
    leverage when BTC is below 60k"."""
    head = clause[: number.start()]
    if _LIMIT.search(head) or _SET_TO.search(head):
        return True
    after = _LIMIT.search(clause, number.end())
    if after is None:
        return False
    between = clause[number.end() : after.start()]
    other = _OTHER_LIMIT.match(clause, after.end())
    return len(between.split()) <= 6 and not _JOINED.search(between) and other is None


_JOINED = re.compile(r"(?i)\b(?:then|but|so|if|when|because|since|unless)\b|[,;:<>]")
_OTHER_LIMIT = re.compile(
    r"(?i)\s+(?:(?:size|position|risk|loss|exposure|amount|notional|memecoins?)\b|\$|\d)"
)
"""After a limit word, what makes it about something other than leverage ("max size",
"under $100", "below 60k")."""


def _amounts(clause: str, sentence: str) -> Iterator[tuple[HardConstraint, str]]:
    """The amount limits of one clause. The word nearest an amount (within five words
    before it or four after it, not past another amount) says what it limits: a loss
    word -> a loss per trade (``max_loss_per_trade``: "never lose more than $200 on a
    trade", "$300 max loss per trade"), a position word (position, size, trade, per,
    put, invest, allocate, exposure) -> a position cap; none -> no limit ("with my $10k
    account", "when BTC is at $60k"). A loss over a day or another period, a past loss
    ("I lost $200 on that trade") and a complaint ("I keep losing $100 per trade") read
    nothing. Before, a loss word anywhere in the clause made every amount a loss cap:
    "I risked too much so max position $1k" allowed a position many times that."""
    if not _LIMIT.search(_PAST_LOSS.sub(" ", clause)) or _permits(clause):
        return
    found = list(_USD.finditer(clause))
    for n, usd in enumerate(found):
        start = found[n - 1].end() if n else 0
        end = found[n + 1].start() if n + 1 < len(found) else len(clause)
        before = clause[start : usd.start()].split()[-5:]
        after = clause[usd.end() : end].split()[:4]
        near = " ".join([*before, *after])
        if _PAST_LOSS.search(" ".join(before[-3:])):
            continue
        if (usd.group(5) and _NOT_SIZE.search(near)) or (
            (after and _ASIDE_AFTER.match(after[0]))
            or any(_ASIDE_BEFORE.match(w) for w in before[-2:])
        ):
            continue
        kind = _amount_kind(before, after)
        qualified = " ".join([*before[-2:], *after])  # "$500 a day", "per week $1k"
        if kind is None or _DAILY.search(qualified) or _PERIOD.search(qualified):
            continue  # an amount per day or period: no kind holds it
        first = next(i for i in (1, 3, 5) if usd.group(i))
        value = _number(usd.group(first), usd.group(first + 1))
        if value > 0:
            yield HardConstraint(kind=kind, value=value, quote=sentence[:1000]), "usd"


def _amount_kind(before: list[str], after: list[str]) -> str | None:
    """``max_loss_per_trade`` or ``max_position_notional`` by the words around an amount
    (``before``: the words before it, nearest last). A position word anywhere near makes
    it a position cap (the stricter reading: "To limit risk max $1k per position" is a
    position cap); else a loss word within three words before it or anywhere after it a
    loss per trade ("never lose more than $200", "$300 max loss per trade"; not past a
    joining word: "to $1k so losses stay small"); else "trade"
    or "per" a position cap ("never more than $5,000 per trade"); else no limit."""
    words = [w.strip(".,!?").lower() for w in [*before, *after]]
    if any(_POSITION_WORD.fullmatch(w) for w in words):
        return "max_position_notional"
    joined = next((i for i, w in enumerate(after) if _JOINED.fullmatch(w.strip(".,!?"))), None)
    close = [w.strip(".,!?").lower() for w in [*before[-3:], *after[:joined]]]
    if any(_LOSS_WORD.fullmatch(w) for w in close):
        return "max_loss_per_trade"
    return "max_position_notional" if {"trade", "trades", "per"} & set(words) else None


def clause_at(sentence: str, start: int, end: int) -> tuple[str, str]:
    """The text of the clause (``,``/``but``/``now`` bounded) before ``start`` and after
    ``end``."""
    head = re.split(r",|\bbut\b|\bnow\b", sentence[:start])[-1]
    tail = re.split(r",|\bbut\b|\bnow\b", sentence[end:])[0]
    return head, tail


def undone(sentence: str, start: int) -> bool:
    """Whether the words before ``start`` in its clause undo the rule matched there."""
    return UNDONE.search(clause_at(sentence, start, start)[0]) is not None


_USD = re.compile(
    r"(?i)(?:\$\s?(\d[\d,]*(?:\.\d+)?)\s*([km])?\b|\b(\d[\d,]*(?:\.\d+)?)\s*([km])?\s*"
    r"(?:usd[ct]?|dollars|bucks)\b|\b(\d[\d,]*(?:\.\d+)?)\s*(k)\b)"
)
"""``$5,000``, ``5k USDC``, ``10 dollars``, or a bare ``10k`` (``k`` required; a bare ``m``
is a timeframe: "the 15m chart")."""
_LOSS_WORD = re.compile(r"(?i)\b(?:lose|loses|losing|loss|losses|risk|risking|risked)\b")
"""An amount next to these is a loss, not a position size ("never lose more than $200 on
a trade")."""
_ASIDE_AFTER = re.compile(r"(?i)(?:account|balance|bankroll|stack|profits?|gains?)\b")
"""The word right after an amount that makes it the account's size or a target ("my $10k
account", "$300 profit"), not a limit."""
_ASIDE_BEFORE = re.compile(r"(?i)(?:make|target|aim|aiming|earn|win)\b")
"""One of the two words right before an amount that makes it a target ("to make $300")."""
_POSITION_WORD = re.compile(
    r"(?i)(?:positions?|size|sizes|sizing|put|invest\w*|allocat\w*|exposure|notional)"
)
_PAST_LOSS = re.compile(r"(?i)\blost\b|\b(?:after|since|been|keep|kept)\s+losing\b")
"""A loss told as past or going on ("I only lost $200 on that trade", "after losing
$1k", "I keep losing $100 per trade"): a report, no limit."""
_NOT_SIZE = re.compile(r"(?i)\b(?:profit|gain|volume|chart|candles?|followers|cap|mcap)\b")
"""A bare amount next to these is not a position size ("1k profit per trade")."""


def _clauses(sentence: str) -> list[str]:
    """The clauses of ``sentence``: split at ``but`` and at a comma, except one inside a
    number (``$1,000``, the decimal comma of ``0,5%``)."""
    return [c.strip() for c in re.split(r"(?<!\d),|,(?!\d)|\bbut\b", sentence) if c.strip()]


def decimal(raw: str) -> float:
    """A number of :data:`_DECIMAL`: a comma before one or two digits is a decimal comma
    (``0,5`` -> 0.5), before three a thousands separator (``1,000`` -> 1000)."""
    if re.fullmatch(r"\d*,\d{1,2}", raw):
        return float(raw.replace(",", "."))
    return float(raw.replace(",", ""))


def _number(raw: str, suffix: str | None = None) -> float:
    value = float(raw.replace(",", ""))
    return value * {"k": 1e3, "m": 1e6}.get((suffix or "").lower(), 1.0)


def _fraction_kind(clause: str) -> str | None:
    low = clause.lower()
    limited = _LIMIT.search(clause) is not None or _SET_TO.search(clause) is not None
    losing = re.search(r"\b(?:loss|losses|lose|losing|down|drawdown)\b", low) is not None
    if _permits(clause):
        return None
    if _DAILY.search(clause) and losing:  # a limit, not a report ("I'm down 1% today")
        capped = _CAP.search(clause) or re.search(r"\bstop", low) or _SET_TO.search(clause)
        return "max_daily_loss" if capped else None
    if (losing or re.search(r"\bstop\b", low)) and _PERIOD.search(clause):
        return None
    if _STOP_LOSS.search(clause) and not re.search(r"\brisk", low):
        return None
    if re.search(r"\b(?:risk|risking)\b", low):
        return "max_risk_per_trade"
    if limited and re.search(r"\b(?:lose|loss|losing|stop)\b", low):
        return "max_risk_per_trade"
    if limited and re.search(
        r"\b(?:position|positions|size|allocat\w*|put|invest|exposure|of my (?:account|"
        r"portfolio|equity|capital|balance|bankroll))\b",
        low,
    ):
        return "max_position_fraction"
    if limited and re.search(r"(?:\b(?:per|each|a|any|one|single)\s+|/\s*)trade\b", low):
        return "max_risk_per_trade"
    return None


def limit_constraints(sentence: str) -> Iterator[tuple[HardConstraint, str]]:
    """``(constraint, rule name)`` of the numeric limits (and ``no_leverage``) one sentence
    states, clause by clause: percentages, leverage multiples, amounts (the module doc of
    :mod:`._persona_text`)."""
    for clause in map(_with_digits, _clauses(sentence)):
        pct = re.search(_PCT, clause)
        kind = _fraction_kind(clause) if pct else None
        if kind and (capped := _limited_number(_PCT_RE, clause)):
            value = round(decimal(capped.group(1)) / 100.0, 10)
            yield HardConstraint(kind=kind, value=value, quote=sentence[:1000]), kind
        times = _LEVERAGE_X if not re.search(r"(?i)\bleverage", clause) else _LEVERAGE_TIMES
        lev = _limited_number(times, clause) if not _permits(clause) else None
        any_lev = times.search(clause)
        no_lev = _NO_LEVERAGE.search(clause)
        if lev and _governs(clause, lev):  # not "I use 20x", "I went 10x long and max size"
            q = sentence[:1000]  # the whole sentence: the router reads it for a change
            yield HardConstraint(kind="max_leverage", value=decimal(lev.group(1)), quote=q), "lev"
        elif no_lev and not any_lev and not undone(clause, no_lev.start()):
            yield HardConstraint(kind="no_leverage", value=True, quote=clause[:1000]), "no_lev"
        if not pct:
            yield from _amounts(clause, sentence)

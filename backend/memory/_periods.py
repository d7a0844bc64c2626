"""The period a recall query names, resolved against ``as_of`` (the moment of the question).

Offline rules, most precise first (:func:`query_period`): a day written out (ISO
``2024-03-05``, ``5 March 2024``, ``March 5th, 2024``, or without its year ``March 5``),
a month with its year, a month alone after a preposition (``in May``), a year after a
word that makes it one (``in 2023``), then the relative forms (``yesterday``, ``last
night``, ``3 days ago``, ``a few days ago``, ``in the last 3 days``, ``last week``, ``last
Tuesday``). A date without its year, a month or a weekday alone is the latest one at or
before ``as_of`` (a question asks about the past). Calendar units of relative spans are
approximated as 7, 30 and 365 days.

What is deliberately not read, because a trader's words make it ambiguous: a bare
number as a year (``sell ETH at 2050``, ``2010 yesterday``: prices of the same size as
years), ``may``/``march`` with no day, year or preposition (``I may short``), and
slashed dates (``03/05/2024`` is March 5 or May 3).
"""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, timedelta

__all__ = ["query_period"]

_MONTH_NAMES = (
    "january", "february", "march", "april", "may", "june",
    "july", "august", "september", "october", "november", "december",
)  # fmt: skip
_MONTH_OF = (
    {name: i + 1 for i, name in enumerate(_MONTH_NAMES)}
    | {name[:3]: i + 1 for i, name in enumerate(_MONTH_NAMES)}
    | {"sept": 9}
)
_MONTH = r"(?P<month>" + "|".join(sorted(_MONTH_OF, key=len, reverse=True)) + r")\.?"
_DAY = r"(?P<day>[0-3]?\d)(?:st|nd|rd|th)?"
_YEAR = r"(?P<year>(?:19|20)\d\d)"
_NOT_NUMBER = r"(?![\d.,]\d|\s*(?:%|k\b|usd|usdt|dollars?|bucks))"
"""After a year or a day: not a longer number, a percentage or a price."""
_AMBIGUOUS = {"may", "mar", "march"}
"""Month names that are also verbs: where the words around them are ambiguous, read only
when capitalised."""
_PREPOSITION = r"(?P<prep>in|during|since|of|early|late|mid|last|this|until|till|before|after)"
_YEAR_WORD = (
    r"\b(?:in|during|since|of|until|till|before|after|year|early|late|mid|summer|winter|"
    r"spring|autumn|fall)\s+(?:of\s+)?" + _YEAR + r"\b" + _NOT_NUMBER
)

_ISO_RE = re.compile(r"\b(?P<year>\d{4})-(?P<month>\d{2})-(?P<day>\d{2})\b")
_DMY_RE = re.compile(
    rf"\b{_DAY}\s+(?:of\s+)?{_MONTH}(?:,?\s+{_YEAR})?\b{_NOT_NUMBER}", re.IGNORECASE
)
_MDY_RE = re.compile(rf"\b{_MONTH}\s+{_DAY}\b(?!:)(?:,?\s+{_YEAR}\b)?{_NOT_NUMBER}", re.IGNORECASE)
_MONTH_YEAR_RE = re.compile(rf"\b{_MONTH},?\s+{_YEAR}\b{_NOT_NUMBER}", re.IGNORECASE)
_MONTH_ALONE_RE = re.compile(rf"\b{_PREPOSITION}\s+(?:the\s+)?{_MONTH}\b", re.IGNORECASE)
_YEAR_RE = re.compile(_YEAR_WORD, re.IGNORECASE)

_UNITS = {"day": 1, "week": 7, "month": 30, "year": 365}
_COUNTS = {"a": (1, 1), "an": (1, 1), "one": (1, 1), "two": (2, 2), "three": (3, 3),
           "four": (4, 4), "five": (5, 5), "six": (6, 6), "seven": (7, 7),
           "couple": (2, 2), "few": (2, 4), "several": (3, 6)}  # fmt: skip
_COUNT = r"(?:a\s+)?(?P<n>\d+|" + "|".join(_COUNTS) + r")(?:\s+of)?"
_AGO_RE = re.compile(rf"\b{_COUNT}\s+(?P<unit>day|week|month|year)s?\s+ago\b")
_WITHIN_RE = re.compile(
    rf"\b(?:in|over|during|for|within)?\s*the\s+(?:last|past)\s+{_COUNT}\s+"
    r"(?P<unit>day|week|month|year)s?\b"
)
_BEFORE_RE = re.compile(
    rf"\b(?:{_COUNT}\s+)?(?P<unit>day|week|weekend|month)s?\s+before\s+(?:the\s+)?(?:on\s+)?$",
    re.IGNORECASE,
)
_LAST_RE = re.compile(r"\b(?P<which>last|past|this|previous)\s+(?P<unit>week|month|year|weekend)\b")
_WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
_WEEKDAY_RE = re.compile(
    r"\b(?P<which>last|on|this|past)\s+(?P<day>" + "|".join(_WEEKDAYS) + r")\b"
)


def _day(moment: datetime) -> datetime:
    return moment.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)


def _one_day(day: date) -> tuple[datetime, datetime]:
    start = datetime(day.year, day.month, day.day, tzinfo=UTC)
    return start, start + timedelta(days=1)


def _month(year: int, month: int) -> tuple[datetime, datetime]:
    start = datetime(year, month, 1, tzinfo=UTC)
    return start, datetime(year + (month == 12), month % 12 + 1, 1, tzinfo=UTC)


def _latest(month: int, day: int | None, today: date, *, before: bool = False) -> date | None:
    """The latest date of that month (and day) at or before ``today`` (in a month before
    ``today``'s when ``before``: "last May" in May is a year ago); ``None`` for a day the
    month never has."""
    limit = today.replace(day=1) - timedelta(days=1) if before else today
    for year in range(limit.year, limit.year - 9, -1):  # Feb 29: the latest leap year
        try:
            found = date(year, month, 1 if day is None else day)
        except ValueError:
            continue
        if found <= limit:
            return found
    return None


def _month_number(token: str, text: str, start: int, *, strict: bool) -> int | None:
    """The month ``token`` names; ``None`` for what may be a verb: ``may``, ``mar`` or
    ``march`` in lower case where the caller finds the words around it ambiguous
    (``strict``: "this may hurt", "sold 3 may be")."""
    name = token.lower()
    if name in _AMBIGUOUS and strict and not text[start].isupper():
        return None
    return _MONTH_OF.get(name)


def _day_period(query: str, start: int, day: date) -> tuple[datetime, datetime]:
    """``day``, or with ``the week before`` (``two weeks``, ``3 days``, ``the weekend``)
    written just before it, that span up to ``day`` included: what was said then, or on
    ``day`` about it ("last week I ...")."""
    first, end = _one_day(day)
    if (m := _BEFORE_RE.search(query[:start])) is not None:
        n = _counts(m["n"].lower())[1] if m["n"] else 1
        first -= timedelta(days=n * _UNITS.get(m["unit"].lower(), 7))
    return first, end


def _explicit(query: str, today: date) -> tuple[datetime, datetime] | None:
    """A day, a month or a year written out in ``query``."""
    for m in _ISO_RE.finditer(query):
        try:
            iso = date(int(m["year"]), int(m["month"]), int(m["day"]))
        except ValueError:
            continue
        return _day_period(query, m.start(), iso)
    for pattern in (_DMY_RE, _MDY_RE):
        for m in pattern.finditer(query):
            strict = pattern is _DMY_RE and not m["year"]  # "sold 3 may be": a verb
            month = _month_number(m["month"], query, m.start("month"), strict=strict)
            if month is None:
                continue
            try:
                found = (
                    date(int(m["year"]), month, int(m["day"]))
                    if m["year"]
                    else _latest(month, int(m["day"]), today)
                )
            except ValueError:
                continue
            if found is not None:
                return _day_period(query, m.start(), found)
    for m in _MONTH_YEAR_RE.finditer(query):
        month = _month_number(m["month"], query, m.start("month"), strict=False)
        if month is not None:
            return _month(int(m["year"]), month)
    year = _YEAR_RE.search(query)
    for m in _MONTH_ALONE_RE.finditer(query):
        strict = m["prep"].lower() in ("this", "of")  # "this may hurt"
        month = _month_number(m["month"], query, m.start("month"), strict=strict)
        if month is None:
            continue
        if year is not None:  # "in May ... in 2023"
            return _month(int(year["year"]), month)
        latest = _latest(month, None, today, before=m["prep"].lower() == "last")
        if latest is not None:
            return _month(latest.year, latest.month)
    if year is not None:
        y = int(year["year"])
        return datetime(y, 1, 1, tzinfo=UTC), datetime(y + 1, 1, 1, tzinfo=UTC)
    return None


def _relative(text: str, as_of: datetime) -> tuple[datetime, datetime] | None:
    """A period relative to ``as_of`` in ``text`` (lower case)."""
    today = _day(as_of)
    if re.search(r"\b(?:the\s+)?day\s+before\s+yesterday\b", text):
        return today - timedelta(days=2), today - timedelta(days=1)
    if re.search(r"\byesterday\b|\blast\s+night\b", text):
        return today - timedelta(days=1), today
    if re.search(r"\b(?:today|tonight|this\s+(?:morning|afternoon|evening))\b", text):
        return today, today + timedelta(days=1)
    if (m := _AGO_RE.search(text)) is not None:
        lo, hi = _counts(m["n"])
        days = _UNITS[m["unit"]]
        return today - timedelta(days=hi * days), today - timedelta(days=(lo - 1) * days)
    if (m := _WITHIN_RE.search(text)) is not None:
        _, hi = _counts(m["n"])
        return today - timedelta(days=hi * _UNITS[m["unit"]]), today + timedelta(days=1)
    if (m := _WEEKDAY_RE.search(text)) is not None:
        back = (today.weekday() - _WEEKDAYS.index(m["day"])) % 7
        if m["which"] in ("last", "past") and back == 0:
            back = 7
        start = today - timedelta(days=back)
        return start, start + timedelta(days=1)
    if (m := _LAST_RE.search(text)) is not None:
        span = _UNITS.get(m["unit"], 7)
        end = as_of if m["which"] == "this" else today
        return end - timedelta(days=span), end + timedelta(days=1)
    return None


def _counts(word: str) -> tuple[int, int]:
    return (int(word), int(word)) if word.isdigit() else _COUNTS[word]


def query_period(query: str, *, as_of: datetime) -> tuple[datetime, datetime] | None:
    """The period ``query`` names, ``[start, end)`` in UTC, or ``None`` (module doc).

    ``N days ago`` is that day, ``N weeks/months/years ago`` that unit's span ending at
    the same day; ``a few`` is 2-4, ``several`` 3-6; ``last/past week|month|year|weekend``
    are the 7/30/365 days before ``as_of``'s day (``this`` ends at ``as_of``); ``in the
    last N days`` runs up to ``as_of``'s day included; ``last Tuesday`` is the latest
    Tuesday before today, ``on Tuesday`` the latest at or before it.
    """
    as_of = as_of.astimezone(UTC)
    return _explicit(query, as_of.date()) or _relative(query.lower(), as_of)

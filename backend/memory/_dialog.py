"""Pure helpers of conversation recall: z-scores, speaker-name stripping, the period a
query names (absolute or relative to ``as_of``), and the events a message tells of."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import numpy as np

__all__ = ["message_event", "query_period", "strip_names", "zscore"]

_MONTHS = [
    "january", "february", "march", "april", "may", "june",
    "july", "august", "september", "october", "november", "december",
]  # fmt: skip
_MONTH_RE = re.compile(r"\b(" + "|".join(_MONTHS) + r")\b(?:\s*,?\s*(\d{4}))?", re.IGNORECASE)
_YEAR_RE = re.compile(r"\b(19\d\d|20\d\d)\b")
_UNITS = {"day": 1, "week": 7, "month": 30, "year": 365}
_AGO_RE = re.compile(r"\b(\d+|a|an|one|two|three|four|five|six)\s+(day|week|month|year)s?\s+ago\b")
_WORDS = {"a": 1, "an": 1, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6}
_LAST_RE = re.compile(r"\b(last|past|this|previous)\s+(week|month|year|weekend)\b")


def zscore(values: np.ndarray) -> np.ndarray:
    """``(x - mean) / std`` (a constant vector becomes zeros)."""
    std = float(values.std())
    return (values - values.mean()) / std if std > 0 else np.zeros_like(values)


def strip_names(query: str, names: list[str]) -> str:
    """``query`` without the given names (and their possessive ``'s``): a speaker's name
    dominates MiniLM's vector of a short question (measured on LoCoMo)."""
    out = query
    for name in names:
        out = re.sub(rf"\b{re.escape(name)}(?:'s|’s)?\b", " ", out, flags=re.IGNORECASE)
    return " ".join(out.split()) or query


def _day(moment: datetime) -> datetime:
    return moment.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)


def query_period(query: str, *, as_of: datetime) -> tuple[datetime, datetime] | None:
    """The period ``query`` names, ``[start, end)`` in UTC, or ``None``:

    - a month with a year (``July 2023``, ``July, 2023``, or a month and a year elsewhere
      in the query), or a year alone (``in 2022``);
    - relative to ``as_of`` (the moment of the question): ``yesterday``, ``today``,
      ``N days/weeks/months/years ago`` (that day, or that unit's span), ``last/past/this
      week|month|year|weekend`` (the 7/30/365 days before ``as_of``; ``this`` ends at
      ``as_of``). Calendar units are approximated as 7, 30 and 365 days.
    """
    text = query.lower()
    month = _MONTH_RE.search(query)
    year = _YEAR_RE.search(query)
    if month is not None and (month.group(2) or year):
        y = int(month.group(2) or (year.group(1) if year else 0))
        m = _MONTHS.index(month.group(1).lower()) + 1
        return datetime(y, m, 1, tzinfo=UTC), datetime(y + (m == 12), m % 12 + 1, 1, tzinfo=UTC)
    if year is not None:
        y = int(year.group(1))
        return datetime(y, 1, 1, tzinfo=UTC), datetime(y + 1, 1, 1, tzinfo=UTC)
    today = _day(as_of)
    if re.search(r"\byesterday\b", text):
        return today - timedelta(days=1), today
    if re.search(r"\btoday\b|\btonight\b", text):
        return today, today + timedelta(days=1)
    ago = _AGO_RE.search(text)
    if ago is not None:
        n = int(ago.group(1)) if ago.group(1).isdigit() else _WORDS[ago.group(1)]
        days = _UNITS[ago.group(2)]
        start = today - timedelta(days=n * days)
        return start, start + timedelta(days=days if days > 1 else 1)
    last = _LAST_RE.search(text)
    if last is not None:
        span = {"week": 7, "weekend": 7, "month": 30, "year": 365}[last.group(2)]
        end = as_of if last.group(1) == "this" else today
        return end - timedelta(days=span), end + timedelta(days=1)
    return None


_EVENTS: tuple[tuple[str, float, re.Pattern[str]], ...] = (
    (
        "liquidation",
        0.9,
        re.compile(r"\bliquidat\w*|\bmargin call\w*|\bblew up\b|\bwiped out\b|\brekt\b", re.I),
    ),
    (
        "life change",
        0.6,
        re.compile(
            r"\bmoving (?:house|home|out|to)\b|\bnew job\b|\blost my job\b|\bbaby\b|"
            r"\bgetting married\b|\bdivorce\w*\b|\bless screen time\b|\bhospital\b|"
            r"\bvacation\b|\bholiday\b|\bretir\w+\b",
            re.I,
        ),
    ),
    (
        "plan",
        0.5,
        re.compile(
            r"\b(?:i|we)(?:'m| am| are)? (?:plan(?:ning)? to|going to|gonna|intend to)\b|"
            r"\bmy plan\b|\bfrom now on\b|\bnext (?:week|month|year)\b",
            re.I,
        ),
    ),
)


def message_event(text: str) -> tuple[str, float] | None:
    """The kind of event a message tells of and its importance (0..1), or ``None``:
    ``liquidation`` (0.9), ``life change`` (0.6), ``plan`` (0.5), by the first rule
    that matches (offline keyword rules, in that order)."""
    for kind, importance, pattern in _EVENTS:
        if pattern.search(text):
            return kind, importance
    return None

"""Pure helpers of conversation recall: z-scores, speaker-name stripping, and the events
a message tells of (the period a query names: :mod:`backend.memory._periods`)."""

from __future__ import annotations

import re

import numpy as np

__all__ = ["message_event", "strip_names", "zscore"]


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

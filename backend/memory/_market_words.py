"""Words for a market state: the buckets :meth:`MarketSnapshot.situation` describes it in.

Buckets instead of numbers: numbers cost many tokens, and a word two similar states share
is what a text search of past episodes can match. Inputs are fractions (0.05 = 5%);
volatility is annualised.
"""

from __future__ import annotations

__all__ = ["depth_words", "move_word", "volatility_level", "volume_words"]


def volatility_level(vol: float) -> str:
    """``extreme`` (>= 120% a year), ``very high`` (>= 80%), ``high`` (>= 50%),
    ``normal`` (>= 25%) or ``low``."""
    for floor, word in ((1.2, "extreme"), (0.8, "very high"), (0.5, "high"), (0.25, "normal")):
        if vol >= floor:
            return word
    return "low"


def move_word(ret: float) -> str:
    """A return over a horizon in a word: ``crash`` (<= -10%), ``sharp drop`` (<= -3%),
    ``drop`` (< -1%), ``flat`` (<= +1%), ``rise`` (< +3%), ``sharp rally`` (< +10%),
    ``surge``."""
    if ret <= -0.10:
        return "crash"
    if ret <= -0.03:
        return "sharp drop"
    if ret < -0.01:
        return "drop"
    if ret <= 0.01:
        return "flat"
    if ret < 0.03:
        return "rise"
    return "sharp rally" if ret < 0.10 else "surge"


def depth_words(drawdown: float) -> str:
    """A drawdown from the window's high (<= 0): ``near its high`` (above -5%),
    ``moderate drawdown`` (above -15%), ``deep drawdown`` (above -30%) or
    ``crash-level drawdown``."""
    for floor, words in (
        (-0.05, "near its high"),
        (-0.15, "moderate drawdown"),
        (-0.3, "deep drawdown"),
    ):
        if drawdown > floor:
            return words
    return "crash-level drawdown"


def volume_words(shock: float) -> str:
    """Bar volume over its trailing mean: ``heavy volume`` (>= 2x), ``thin volume``
    (< 0.5x) or ``normal volume``."""
    if shock >= 2:
        return "heavy volume"
    return "thin volume" if shock < 0.5 else "normal volume"

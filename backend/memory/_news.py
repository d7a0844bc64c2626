"""Deterministic topic tags of headlines and market state, and causal news / F&G lookups.

Topics are lower-case tags chosen by keyword rules (regular expressions over the
case-folded title, word-bounded), so the same headline always gets the same tags and no
LLM is needed. Market-state tags come from the bar features (:func:`state_topics`).

Time rules (no look-ahead):

- a headline is known from its ``published_at`` (the end of the file's minute-precision
  stamp, taken as UTC by the loader); a bar that closes at ``T`` sees headlines published
  at or before ``T``;
- the Fear & Greed value dated ``D`` (alternative.me, one value per UTC day) is treated
  as known only from ``D + 1 day 00:00 UTC`` (the conservative rule: the day's value is
  published during day ``D`` at a time the file does not give, so it is used from the end
  of ``D``); values older than ``max_age`` are considered stale (``None``).
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd

from backend.config import DataSettings
from backend.data import load_fear_greed, load_headlines
from backend.data.models import Headline
from backend.errors import DataError
from backend.types import to_utc

log = logging.getLogger(__name__)

__all__ = [
    "NEWS_TOPICS",
    "FearGreedIndex",
    "HeadlineIndex",
    "News",
    "NewsFiles",
    "coverage_notes",
    "headline_topics",
    "load_news",
    "state_topics",
]

NEWS_TOPICS: dict[str, re.Pattern[str]] = {
    name: re.compile(pattern)
    for name, pattern in {
        "stablecoin": r"\b(?:stablecoins?\b|de-?peg|peg(?:ged|s)?\b|ust\b|usdt\b|usdc\b"
        r"|usdd\b|tether\b|terrausd\b)",
        "insolvency": r"\bwithdrawals?\b.{0,40}\b(?:paus|halt|suspen|freez|froze|stop|block)"
        r"|\b(?:paus|halt|suspen|freez|froze|stop|block)\w*\b.{0,40}\bwithdrawal"
        r"|\b(?:insolven|bankrupt|solvency|chapter 11|contagion|bailout)",
        "exchange": r"\b(?:exchanges?|binance|coinbase|kraken|ftx|bitfinex|okx|huobi|kucoin"
        r"|bybit|bitstamp|gemini)\b",
        "regulation": r"\b(?:sec\b|cftc\b|regulat|lawmakers?\b|senat|congress|bill\b|bans?\b"
        r"|banned\b|sanction|lawsuit|sues?\b|sued\b|court\b|legislat|compliance\b|cbdc\b)",
        "etf": r"\b(?:etfs?\b|exchange-traded)",
        "hack": r"\b(?:hack|exploit|stolen\b|theft\b|drained\b|breach|phishing\b|rug ?pull)",
        "liquidation": r"\bliquidat",
        "macro": r"\b(?:fed\b|federal reserve|fomc\b|inflation\b|cpi\b|interest rates?"
        r"|rate hikes?|powell\b|recession\b|treasury yields?|dxy\b|nasdaq\b|s&p\b"
        r"|stocks?\b)",
        "crash": r"\b(?:crash|plung|tumbl|collaps|sell-?off|bloodbath\b|massacre\b|capitulat"
        r"|rout\b|nosedive|free ?fall)",
        "rally": r"\b(?:rall(?:y|ies|ied)\b|surg(?:e|es|ed)\b|soar|all-time high|ath\b"
        r"|skyrocket|breaks? above\b)",
    }.items()
}
"""Topic -> rule. Order matters only for display (tags are listed in this order)."""

_NS = 1_000_000_000


def headline_topics(title: str) -> tuple[str, ...]:
    """Topic tags of one headline title (possibly empty), in :data:`NEWS_TOPICS` order."""
    text = " ".join(title.casefold().split())
    return tuple(name for name, rule in NEWS_TOPICS.items() if rule.search(text))


def state_topics(
    *,
    regime: str,
    realized_vol: float,
    vol_ratio: float,
    drawdown: float,
    ret_bar: float,
    volume_shock: float,
    fear_greed: int | None,
) -> list[str]:
    """Tags of the market state of one bar (units as in ``backend.memory._features``).

    ``trend_up`` / ``trend_down`` / ``range`` (the regime); ``high_volatility`` when the
    annualised realised vol is >= 1.0 or >= 1.5x its long-run level; ``drawdown`` when 10%
    or more under the rolling high; ``selloff`` / ``pump`` for a bar move beyond -3% / +3%;
    ``volume_spike`` for volume >= 3x its trailing mean; ``extreme_fear`` (F&G <= 20) and
    ``extreme_greed`` (>= 80). NaN inputs never produce a tag.
    """
    tags = [regime]
    if realized_vol >= 1.0 or vol_ratio >= 1.5:
        tags.append("high_volatility")
    if drawdown <= -0.10:
        tags.append("drawdown")
    if ret_bar <= -0.03:
        tags.append("selloff")
    elif ret_bar >= 0.03:
        tags.append("pump")
    if volume_shock >= 3.0:
        tags.append("volume_spike")
    if fear_greed is not None and fear_greed <= 20:
        tags.append("extreme_fear")
    elif fear_greed is not None and fear_greed >= 80:
        tags.append("extreme_greed")
    return tags


def _ns(moment: datetime) -> int:
    return int(pd.Timestamp(to_utc(moment)).value)


@dataclass(frozen=True)
class HeadlineIndex:
    """Headlines sorted by publication time with their topic tags, for O(log n) windows.

    Build once (``HeadlineIndex.build(headlines)``, ~50 ms for 7.5k headlines) and reuse.
    """

    published_ns: np.ndarray
    headlines: tuple[Headline, ...]
    topics: tuple[tuple[str, ...], ...]

    @classmethod
    def build(cls, headlines: Iterable[Headline]) -> HeadlineIndex:
        items = sorted(headlines, key=lambda h: (h.published_at, h.id))
        return cls(
            published_ns=np.asarray([_ns(h.published_at) for h in items], dtype=np.int64),
            headlines=tuple(items),
            topics=tuple(headline_topics(h.title) for h in items),
        )

    def __len__(self) -> int:
        return len(self.headlines)

    def span(self, start: datetime, end: datetime) -> range:
        """Positions of headlines published in ``(start, end]`` (oldest first)."""
        lo = int(np.searchsorted(self.published_ns, _ns(start), side="right"))
        hi = int(np.searchsorted(self.published_ns, _ns(end), side="right"))
        return range(lo, max(lo, hi))

    def window(self, start: datetime, end: datetime) -> list[Headline]:
        """Headlines published in ``(start, end]``, oldest first."""
        return [self.headlines[i] for i in self.span(start, end)]

    def bar_positions(self, close_ns: np.ndarray) -> np.ndarray:
        """For each headline, the row of the first bar closing at or after it (its bar);
        ``len(close_ns)`` for headlines after the last bar."""
        return np.searchsorted(close_ns, self.published_ns, side="left")


@dataclass(frozen=True)
class FearGreedIndex:
    """Causal lookup of the daily Fear & Greed index (see the module's time rules)."""

    known_ns: np.ndarray
    values: np.ndarray
    max_age_ns: int

    @classmethod
    def build(
        cls,
        series: pd.Series,
        *,
        publication_lag: timedelta = timedelta(days=1),
        max_age: timedelta = timedelta(days=3),
    ) -> FearGreedIndex:
        """``series``: int values indexed by UTC day (``backend.data.load_fear_greed``)."""
        dates = pd.DatetimeIndex(series.index)
        if dates.tz is None:
            dates = dates.tz_localize("UTC")
        order = np.argsort(dates.asi8, kind="stable")
        known = dates.as_unit("ns").asi8[order] + int(publication_lag.total_seconds() * _NS)
        return cls(
            known_ns=np.asarray(known, dtype=np.int64),
            values=np.asarray(series.to_numpy()[order], dtype=np.int64),
            max_age_ns=int(max_age.total_seconds() * _NS),
        )

    def at(self, as_of: datetime) -> int | None:
        """The newest value known at ``as_of`` (0..100), or ``None`` if none or stale."""
        ts = _ns(as_of)
        i = int(np.searchsorted(self.known_ns, ts, side="right")) - 1
        if i < 0 or ts - int(self.known_ns[i]) > self.max_age_ns:
            return None
        return int(self.values[i])


def as_headline_index(headlines: HeadlineIndex | Sequence[Headline] | None) -> HeadlineIndex:
    """``headlines`` as an index (building one costs O(n): pass an index in loops)."""
    if isinstance(headlines, HeadlineIndex):
        return headlines
    return HeadlineIndex.build(headlines or ())


def as_fear_greed_index(fear_greed: FearGreedIndex | pd.Series | None) -> FearGreedIndex | None:
    """``fear_greed`` as an index (``None`` stays ``None``)."""
    if fear_greed is None or isinstance(fear_greed, FearGreedIndex):
        return fear_greed
    return FearGreedIndex.build(fear_greed)


@dataclass(frozen=True)
class News:
    """The optional news inputs of a run: headlines and the Fear & Greed index, each None
    when its file is missing (the run goes on without news shocks or sentiment)."""

    headlines: HeadlineIndex | None
    fear_greed: FearGreedIndex | None


def coverage_notes(news: News, start: datetime, end: datetime) -> list[str]:
    """One line per news input that does not cover a run's ``[start, end)`` (UTC):
    none of it there, or only part. The shared headlines cover 2021-10..2022-07, so a
    2024 run had no news shock at all, and its report and ablation JSON said nothing (a
    reviewer's). Pure; ``[]`` when both cover the run or are missing (that is said
    elsewhere: ``news_warnings``)."""
    spans = []
    if news.headlines is not None and len(news.headlines):
        ns = news.headlines.published_ns
        spans.append(("headlines (news shocks)", int(ns[0]), int(ns[-1])))
    if news.fear_greed is not None and len(news.fear_greed.known_ns):
        known = news.fear_greed.known_ns
        last = int(known[-1]) + news.fear_greed.max_age_ns  # stale after that
        spans.append(("Fear & Greed index", int(known[0]), last))
    lo, hi = _ns(start), _ns(end)
    notes = []
    for what, first, last in spans:
        have = f"{_day(first)}..{_day(last)}"
        run = f"{start:%Y-%m-%d}..{end:%Y-%m-%d}"
        if last < lo or first >= hi:
            notes.append(f"{what}: none in the run's {run} (the file covers {have})")
        elif first > lo or last < hi:
            notes.append(f"{what}: the file covers {have}, only part of the run's {run}")
    return notes


def _day(ns: int) -> str:
    return f"{pd.Timestamp(ns, tz='UTC'):%Y-%m-%d}"


def load_news(data: DataSettings, data_dir: Path | None) -> News:
    """The :class:`News` under ``data_dir`` (file names ``data.headlines`` and
    ``data.fear_greed`` from config), none for ``data_dir`` None. Raises
    :class:`~backend.errors.DataError` for a file that is there but unreadable."""
    if data_dir is None:
        return News(None, None)
    paths = data.model_copy(update={"data_dir": data_dir})
    news, fg = paths.headlines_path, paths.fear_greed_path
    return News(
        HeadlineIndex.build(load_headlines(news)) if news.is_file() else None,
        FearGreedIndex.build(load_fear_greed(fg)) if fg.is_file() else None,
    )


_Stamp = tuple[tuple[int, int] | None, ...]


class NewsFiles:
    """The :class:`News` of a data root for a process that lives for many bars (a paper
    run of ``sentinel paper`` or ``sentinel scheduler run``), read again when a file
    changes: another process appends headlines and publishes each day's Fear & Greed
    value, and a run that loaded them once had decided for weeks on the news of its
    start (a reviewer's appended headline was never seen).

    The cache earns its place: loading the shared data's 7,492 headlines and 2,644 Fear &
    Greed values takes ~330 ms (measured here), a ``stat`` of the two files microseconds,
    so :meth:`current` stats them and loads again only when a file's size or mtime
    changed, or it appeared or went. A file that fails to load at a change (e.g. caught
    mid-write) keeps the previous news for that step, with a warning, and is read again
    at the next; at construction it raises :class:`~backend.errors.DataError` (as
    :func:`load_news`). Thread-safe."""

    def __init__(self, data: DataSettings, data_dir: Path | None) -> None:
        self._data, self._dir = data, data_dir
        self._paths: tuple[Path, ...] = ()
        if data_dir is not None:
            paths = data.model_copy(update={"data_dir": data_dir})
            self._paths = (paths.headlines_path, paths.fear_greed_path)
        self._lock = threading.Lock()
        self._stamp = self._stat()
        self._news = load_news(data, data_dir)

    def _stat(self) -> _Stamp:
        stamps: list[tuple[int, int] | None] = []
        for path in self._paths:
            try:
                st = path.stat()
            except OSError:
                stamps.append(None)
            else:
                stamps.append((st.st_size, st.st_mtime_ns))
        return tuple(stamps)

    def current(self) -> News:
        """The news as the files hold them now (module-level :func:`load_news`)."""
        with self._lock:
            stamp = self._stat()
            if stamp != self._stamp:
                try:
                    self._news = load_news(self._data, self._dir)
                except DataError as err:
                    log.warning(
                        "news files changed but could not be read (kept as before): %s", err
                    )
                else:
                    self._stamp = stamp
            return self._news

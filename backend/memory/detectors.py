"""Causal event detectors over precomputed bar features, headlines and fills -> episodes.

Every detector works on whole arrays at once (vectorised masks, then a cheap pass over the
few candidate rows for cooldowns) and is causal: an event at bar ``t`` (time = the bar's
CLOSE) depends only on candles closed at or before ``t``, headlines published at or before
``t`` and fills executed at or before ``t`` (quantiles from strictly earlier fills).

Detectors (thresholds from :class:`~backend.config.DetectorSettings`, fractions):

- ``flash_crash``: bar return ``<= flash_crash_return``; severity ``s(ret / threshold)``.
- ``volatility_spike``: ``rv_short / rv_long >= volatility_spike_ratio`` (1-day over 30-day
  realised vol), first bar of a run; severity ``s(ratio / threshold)``.
- ``large_drawdown``: close ``<= large_drawdown`` under the rolling 14-day high, first
  crossing; while not re-armed it fires again only when the drawdown deepens by another
  ``|threshold| / 2`` (-20%, -30%, -40%...); re-armed when it recovers above
  ``threshold / 2``. Severity ``s(drawdown / threshold)``.
- ``breakout_up`` / ``breakout_down``: close above the max high / below the min low of the
  previous ``breakout_lookback_bars`` bars (current bar excluded), first bar of a run, at
  most one per direction per lookback. Severity ``0.3 + 0.4 * min(1, beyond / sigma)``
  (``beyond`` = fraction past the level, ``sigma`` = per-bar realised vol): 0.3..0.7.
- ``news_shock``: ``>= news_shock_headlines`` headlines on one topic within the last
  ``news_window_bars`` bars AND at least ``burst_ratio`` times the topic's trailing
  ``baseline_days`` mean count per window (so chatter topics need a real burst), first bar
  of a run, one per topic per day. Severity ``s(count / threshold)``.
- ``big_win`` / ``big_loss``: a closing trade (fills of one trader, symbol, side and
  minute with non-zero realised PnL, summed) whose ``|PnL|`` is at or above the
  ``big_trade_quantile`` of that trader's strictly earlier closing trades (at least
  ``min_history`` of them). Severity ``s(|pnl| / quantile)``, +0.1 for losses.

``s(x) = 1 - 0.5 / x`` for ``x >= 1`` (0.5 at the threshold, 0.75 at twice it, -> 1).
Other market events are suppressed for ``cooldown_bars`` (default one day) after one of
the same type.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta

import numpy as np
import pandas as pd

from backend.config import DetectorSettings
from backend.data.models import Headline
from backend.memory._events import DetectedEvent, severity
from backend.memory._features import FeatureFrame
from backend.memory._news import (
    NEWS_TOPICS,
    FearGreedIndex,
    HeadlineIndex,
    as_fear_greed_index,
    as_headline_index,
)
from backend.memory._snapshot import build_snapshot, candle_source
from backend.memory._trades import MIN_TRADE_HISTORY, count_closing_trades, detect_trade_events
from backend.memory.models import Episode, EpisodeType

__all__ = [
    "MIN_TRADE_HISTORY",
    "SHOCK_TOPICS",
    "STATE_COLUMNS",
    "DetectedEvent",
    "count_by_type",
    "count_closing_trades",
    "detect_market_events",
    "detect_news_shocks",
    "detect_trade_events",
    "events_to_episodes",
    "severity",
]

STATE_COLUMNS = (
    "close",
    "ret_bar",
    "ret_1d",
    "ret_7d",
    "rv_short",
    "rv_long",
    "vol_ratio",
    "drawdown",
    "volume_shock",
    "trend_spread",
)
SHOCK_TOPICS = tuple(t for t in NEWS_TOPICS if t != "exchange")
"""Topics that can make a news shock (``exchange`` is too generic on its own; exchange
failures are ``insolvency`` or ``hack``)."""


def _rising(mask: np.ndarray) -> np.ndarray:
    prev = np.concatenate(([False], mask[:-1]))
    return mask & ~prev


def _cooldown(rows: Iterable[int], bars: int) -> list[int]:
    kept: list[int] = []
    for i in rows:
        if not kept or i - kept[-1] >= bars:
            kept.append(int(i))
    return kept


def _state(features: FeatureFrame, i: int) -> dict[str, float]:
    out = {}
    for name in STATE_COLUMNS:
        value = float(features.column(name)[i])
        if math.isfinite(value):
            out[name] = value
    return out


def _drawdown_rows(dd: np.ndarray, warm: np.ndarray, threshold: float) -> np.ndarray:
    """Rows where the drawdown first crosses ``threshold`` or deepens by another step."""
    step = abs(threshold) / 2.0
    first_level = math.floor(abs(threshold) / step + 1e-9)
    level = np.floor(np.nan_to_num(-dd, nan=0.0) / step + 1e-9)
    level[~warm] = 0
    rearm = np.nan_to_num(dd, nan=0.0) > threshold / 2.0
    segment = np.cumsum(rearm)
    peak = pd.Series(level).groupby(segment).cummax().to_numpy()
    prev = pd.Series(peak).groupby(segment).shift(1).fillna(0).to_numpy()
    return np.flatnonzero((peak > prev) & (level >= first_level) & warm)


def detect_market_events(
    features: FeatureFrame,
    *,
    settings: DetectorSettings,
    cooldown_bars: int | None = None,
) -> list[DetectedEvent]:
    """Flash crashes, volatility spikes, large drawdowns and breakouts (see module doc),
    oldest first. Only warm rows (full windows) can fire. ``cooldown_bars`` defaults to
    one day of bars."""
    n_day = max(1, round(features.bars_per_day))
    cool = n_day if cooldown_bars is None else cooldown_bars
    warm = features.frame["warm"].to_numpy()
    ret = features.column("ret_bar")
    ratio = features.column("vol_ratio")
    dd = features.column("drawdown")
    close = features.column("close")
    hi, lo = features.column("prior_high"), features.column("prior_low")
    sigma = features.column("rv_short") / features.params["annualisation"]
    lookback = int(features.params["breakout_lookback_bars"])
    with np.errstate(invalid="ignore"):
        crash = warm & (ret <= settings.flash_crash_return)
        spike = warm & (ratio >= settings.volatility_spike_ratio)
        up = warm & (close > hi)
        down = warm & (close < lo)
    found: list[tuple[EpisodeType, int, float, str]] = []
    tf = features.timeframe
    for i in _cooldown(np.flatnonzero(crash), cool):
        found.append(
            (
                "flash_crash",
                i,
                severity(ret[i] / settings.flash_crash_return),
                f"Flash crash: {tf} bar return {ret[i]:+.1%} "
                f"(threshold {settings.flash_crash_return:+.0%})",
            )
        )
    for i in _cooldown(np.flatnonzero(_rising(spike)), cool):
        found.append(
            (
                "volatility_spike",
                i,
                severity(ratio[i] / settings.volatility_spike_ratio),
                f"Volatility spike: short/long realised vol {ratio[i]:.1f}x "
                f"(threshold {settings.volatility_spike_ratio:.1f}x)",
            )
        )
    for i in _drawdown_rows(dd, warm, settings.large_drawdown):
        found.append(
            (
                "large_drawdown",
                int(i),
                severity(dd[i] / settings.large_drawdown),
                f"Large drawdown: {dd[i]:.1%} under the rolling high "
                f"(threshold {settings.large_drawdown:.0%})",
            )
        )
    for kind, mask, level in (("breakout_up", up, hi), ("breakout_down", down, lo)):
        for i in _cooldown(np.flatnonzero(_rising(mask)), lookback):
            beyond = abs(close[i] / level[i] - 1.0)
            z = beyond / sigma[i] if sigma[i] > 0 else 1.0
            word = "above the high" if kind == "breakout_up" else "below the low"
            found.append(
                (
                    kind,  # type: ignore[arg-type]
                    i,
                    0.3 + 0.4 * min(1.0, z),
                    f"Breakout: close {beyond:.1%} {word} of the previous {lookback} bars "
                    f"({level[i]:,.2f})",
                )
            )
    found.sort(key=lambda e: (e[1], e[0]))
    times = features.close_times
    opens = features.frame["open_time"]
    return [
        DetectedEvent(
            event_type=kind,
            symbol=features.symbol,
            at=times[i].to_pydatetime(),
            severity=sev,
            reason=reason,
            state=_state(features, i),
            sources=(candle_source(features.symbol, tf, opens.iloc[i].to_pydatetime()),),
        )
        for kind, i, sev, reason in found
    ]


def detect_news_shocks(
    features: FeatureFrame,
    headlines: HeadlineIndex | Sequence[Headline],
    *,
    settings: DetectorSettings,
    topics: Sequence[str] = SHOCK_TOPICS,
    burst_ratio: float = 4.0,
    baseline_days: float = 30.0,
    cooldown_bars: int | None = None,
) -> list[DetectedEvent]:
    """News shocks on the bars of ``features`` (see module doc), oldest first.

    A headline belongs to the first bar closing at or after its publication (headlines
    before the first bar's open or after the last close are ignored); windows count bars.
    A bar fires only once ``baseline_days`` of headline history precede its window
    (``baseline_days=0`` disables the burst rule and that warm-up).
    """
    index = as_headline_index(headlines)
    n = len(features)
    if not len(index) or not n:
        return []
    close_ns = features.close_times.as_unit("ns").asi8
    first_open = features.frame["open_time"].iloc[0].value
    pos = index.bar_positions(close_ns)
    usable = (pos < n) & (index.published_ns > first_open)
    width = settings.news_window_bars
    base_bars = round(baseline_days * features.bars_per_day)
    first_news = int(pos[usable].min()) if usable.any() else n
    cool = max(1, round(features.bars_per_day)) if cooldown_bars is None else cooldown_bars
    found: list[tuple[int, str, int, float]] = []
    for topic in topics:
        member = usable & np.fromiter((topic in t for t in index.topics), bool, len(index))
        counts = np.bincount(pos[member], minlength=n).astype(np.float64)
        cum = np.concatenate(([0.0], np.cumsum(counts)))
        rows = np.arange(n)
        window = cum[rows + 1] - cum[np.maximum(rows + 1 - width, 0)]
        fire = window >= settings.news_shock_headlines
        if base_bars > 0:
            hi = np.maximum(rows + 1 - width, 0)
            lo = np.maximum(hi - base_bars, 0)
            baseline = (cum[hi] - cum[lo]) / base_bars * width
            fire &= (window >= burst_ratio * baseline) & (rows - width - base_bars >= first_news)
        else:
            baseline = np.zeros(n)
        found.extend(
            (i, topic, int(window[i]), float(baseline[i]))
            for i in _cooldown(np.flatnonzero(_rising(fire)), cool)
        )
    found.sort()
    times = features.close_times
    out = []
    for i, topic, count, baseline in found:
        start = times[max(0, i - width)] if i >= width else features.frame["open_time"].iloc[0]
        span = [j for j in index.span(start.to_pydatetime(), times[i]) if topic in index.topics[j]]
        items = [index.headlines[j] for j in span]
        titles = " | ".join(h.title for h in reversed(items[-3:]))
        out.append(
            DetectedEvent(
                event_type="news_shock",
                symbol=features.symbol,
                at=times[i].to_pydatetime(),
                severity=severity(count / settings.news_shock_headlines),
                reason=f"News shock on '{topic}': {count} headlines in {width} bars "
                f"(trailing mean {baseline:.1f}): {titles}",
                state={**_state(features, i), "headline_count": float(count)},
                sources=tuple(h.id for h in items),
                key=topic,
            )
        )
    return out


def events_to_episodes(
    events: Iterable[DetectedEvent],
    *,
    trader_id: str,
    features: FeatureFrame | None = None,
    headlines: HeadlineIndex | Sequence[Headline] | None = None,
    fear_greed: FearGreedIndex | pd.Series | None = None,
    news_window_bars: int = 6,
) -> list[Episode]:
    """One :class:`Episode` per event: description = the event's reason + the market state
    at its time (``MarketSnapshot.describe()`` of ``features`` at the last bar closed by
    then, with headlines and F&G known then); state = the event's numbers;
    importance = its severity."""
    index = as_headline_index(headlines) if headlines is not None else None
    fg = as_fear_greed_index(fear_greed)
    out = []
    for event in events:
        text = event.reason
        state = dict(event.state)
        if features is not None and features.locate(event.at) >= 0:
            row = features.at(event.at)
            snap = build_snapshot(
                trader_id=trader_id,
                symbol=features.symbol,
                timeframe=features.timeframe,
                row=row,
                as_of=event.at,
                headlines=index,
                fear_greed=fg,
                news_window=timedelta(seconds=news_window_bars * 86_400 / features.bars_per_day),
            )
            text = f"{event.reason}. Market: {snap.describe()}"
            if snap.fear_greed is not None:
                state.setdefault("fear_greed", float(snap.fear_greed))
        out.append(
            Episode(
                id=event.episode_id(trader_id),
                trader_id=trader_id,
                symbol=event.symbol,
                event_type=event.event_type,
                occurred_at=event.at,
                description=text,
                state=state,
                importance=round(min(1.0, max(0.0, event.severity)), 6),
                sources=list(event.sources),
            )
        )
    return out


def count_by_type(
    events: Iterable[DetectedEvent | Episode],
    *,
    start: datetime | None = None,
    end: datetime | None = None,
) -> dict[str, int]:
    """Number of events per type whose time is in ``[start, end)`` (for reports)."""
    counts: Counter[str] = Counter()
    for e in events:
        at = e.at if isinstance(e, DetectedEvent) else e.occurred_at
        if (start is None or at >= start) and (end is None or at < end):
            counts[e.event_type] += 1
    return dict(sorted(counts.items()))

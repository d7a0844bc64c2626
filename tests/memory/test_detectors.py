"""Event detectors on the real BTC/USDT 1h candles, headlines and Hyperliquid fills."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pandas as pd
import pytest

from backend.config import DetectorSettings
from backend.data import Fill, Headline, OHLCVFrame
from backend.memory._features import FeatureFrame, compute_features
from backend.memory._news import FearGreedIndex, HeadlineIndex
from backend.memory.detectors import (
    DetectedEvent,
    count_by_type,
    detect_market_events,
    detect_news_shocks,
    detect_trade_events,
    events_to_episodes,
    severity,
)

START, END = datetime(2021, 10, 1, tzinfo=UTC), datetime(2022, 8, 1, tzinfo=UTC)
LUNA = (datetime(2022, 5, 9, tzinfo=UTC), datetime(2022, 5, 13, tzinfo=UTC))
CELSIUS = (datetime(2022, 6, 12, tzinfo=UTC), datetime(2022, 6, 14, tzinfo=UTC))
SETTINGS = DetectorSettings()


def _in(events: list[DetectedEvent], window: tuple[datetime, datetime]) -> list[DetectedEvent]:
    return [e for e in events if window[0] <= e.at < window[1]]


@pytest.fixture(scope="module")
def market_events(btc_features: FeatureFrame) -> list[DetectedEvent]:
    return detect_market_events(btc_features, settings=SETTINGS)


@pytest.fixture(scope="module")
def news_events(btc_features: FeatureFrame, headline_index: HeadlineIndex) -> list[DetectedEvent]:
    return detect_news_shocks(btc_features, headline_index, settings=SETTINGS)


def test_counts_on_btc_2021_10_to_2022_07_are_tens_not_thousands(
    market_events: list[DetectedEvent], news_events: list[DetectedEvent]
) -> None:
    counts = count_by_type(market_events + news_events, start=START, end=END)
    assert 1 <= counts["flash_crash"] <= 10
    assert 1 <= counts["volatility_spike"] <= 20
    assert 3 <= counts["large_drawdown"] <= 20
    assert 10 <= counts["breakout_up"] <= 80
    assert 10 <= counts["breakout_down"] <= 80
    assert 10 <= counts["news_shock"] <= 150
    assert all(e.at.tzinfo is not None for e in market_events)
    assert all(0.0 <= e.severity <= 1.0 for e in market_events + news_events)


def test_luna_collapse_is_a_flash_crash_vol_spike_and_drawdown(
    market_events: list[DetectedEvent],
) -> None:
    kinds = {e.event_type for e in _in(market_events, LUNA)}
    assert {"flash_crash", "volatility_spike", "large_drawdown", "breakout_down"} <= kinds
    crash = next(e for e in _in(market_events, LUNA) if e.event_type == "flash_crash")
    assert crash.at == datetime(2022, 5, 11, 13, tzinfo=UTC)  # close of the 12:00 candle
    assert crash.state["ret_bar"] <= SETTINGS.flash_crash_return
    assert crash.sources == ("candle:BTC/USDT:1h:2022-05-11T12:00Z",)


@pytest.mark.parametrize("threshold", [3, 4])
def test_luna_and_celsius_news_shocks(
    btc_features: FeatureFrame, headline_index: HeadlineIndex, threshold: int
) -> None:
    settings = DetectorSettings(news_shock_headlines=threshold)
    events = detect_news_shocks(btc_features, headline_index, settings=settings)
    luna = [e for e in _in(events, LUNA) if e.key == "stablecoin"]
    assert luna, "the LUNA/UST collapse must be a stablecoin news shock"
    celsius = [e for e in _in(events, CELSIUS) if e.key == "insolvency"]
    assert celsius, "Celsius pausing withdrawals must be an insolvency news shock"
    shock = celsius[0]
    assert shock.state["headline_count"] >= threshold
    published = {h.id: h for h in headline_index.headlines}
    assert all(published[s].published_at <= shock.at for s in shock.sources)
    assert any("Celsius" in published[s].title for s in shock.sources)


def test_a_future_candle_does_not_change_earlier_detections(btc_1h: OHLCVFrame) -> None:
    frame = btc_1h.frame.loc["2022-03-01":"2022-07-31"].copy()
    cut = pd.Timestamp("2022-06-01", tz="UTC")
    base = detect_market_events(
        compute_features(frame, symbol="BTC/USDT", timeframe="1h"), settings=SETTINGS
    )
    frame.loc[cut:, ["open", "high", "low", "close"]] *= 0.4
    mutated = detect_market_events(
        compute_features(frame, symbol="BTC/USDT", timeframe="1h"), settings=SETTINGS
    )
    known = [e for e in base if e.at <= cut]
    assert known and known == [e for e in mutated if e.at <= cut]
    assert any(e.event_type == "flash_crash" and e.at > cut for e in mutated)


def test_a_future_headline_does_not_change_earlier_news_shocks(
    btc_features: FeatureFrame, headline_index: HeadlineIndex
) -> None:
    cut = datetime(2022, 6, 1, tzinfo=UTC)
    extra = [
        Headline(
            id=f"fake-{i}",
            published_at=cut + timedelta(minutes=10 * i),
            source="test",
            subject="test",
            title="Exchange hacked, funds drained",
            url=None,
        )
        for i in range(6)
    ]
    more = HeadlineIndex.build([*headline_index.headlines, *extra])
    base = detect_news_shocks(btc_features, headline_index, settings=SETTINGS)
    after = detect_news_shocks(btc_features, more, settings=SETTINGS)
    assert [e for e in base if e.at <= cut] == [e for e in after if e.at <= cut]
    assert any(e.key == "hack" and "fake-0" in e.sources for e in after)


def test_big_trades_use_only_earlier_fills(real_fills: list[Fill]) -> None:
    events = detect_trade_events(real_fills, settings=SETTINGS)
    counts = count_by_type(events)
    assert 1 <= counts.get("big_win", 0) + counts.get("big_loss", 0) <= 40
    assert all(e.state["earlier_trades"] >= 20 for e in events)
    assert all(abs(e.state["pnl"]) >= e.state["quantile_pnl"] for e in events)
    # an enormous later fill must not change any earlier decision
    last = max(real_fills, key=lambda f: f.timestamp)
    huge = last.model_copy(
        update={
            "id": "hl-future",
            "timestamp": last.timestamp + 3_600_000,
            "datetime": last.datetime + timedelta(hours=1),
            "realized_pnl": -1e9,
        }
    )
    again = detect_trade_events([*real_fills, huge], settings=SETTINGS)
    assert again[:-1] == events and again[-1].event_type == "big_loss"
    assert again[-1].sources == ("hl-future",)
    one = detect_trade_events(real_fills, settings=SETTINGS, trader_id=last.trader_id)
    assert one == [
        e
        for e in events
        if e.sources[0] in {f.id for f in real_fills if f.trader_id == last.trader_id}
    ]


def test_fills_of_one_minute_are_one_trade_known_at_its_last_fill(real_fills: list[Fill]) -> None:
    """An exchange's API stamps fills to the millisecond: an order's fills a few seconds
    apart are one closing trade (as the export's minute stamps make them), and its event
    is not known before its last fill."""
    last = max(real_fills, key=lambda f: f.timestamp)
    base = last.timestamp + 3_600_000 - last.timestamp % 60_000  # a later minute's start
    parts = [
        last.model_copy(
            update={
                "id": f"ms-{i}",
                "timestamp": base + 7_000 * i,
                "datetime": datetime.fromtimestamp((base + 7_000 * i) / 1000, tz=UTC),
                "realized_pnl": -4e8,
            }
        )
        for i in range(3)
    ]
    events = detect_trade_events([*real_fills, *parts], settings=SETTINGS)
    assert events[-1].sources == ("ms-0", "ms-1", "ms-2")
    assert events[-1].state["pnl"] == pytest.approx(-1.2e9)
    assert events[-1].at == parts[-1].datetime


def test_events_become_episodes(
    market_events: list[DetectedEvent],
    btc_features: FeatureFrame,
    headline_index: HeadlineIndex,
    fear_greed_index: FearGreedIndex,
) -> None:
    luna = _in(market_events, LUNA)
    eps = events_to_episodes(
        luna,
        trader_id="alice",
        features=btc_features,
        headlines=headline_index,
        fear_greed=fear_greed_index,
    )
    again = events_to_episodes(luna, trader_id="alice", features=btc_features)
    assert [e.id for e in eps] == [e.id for e in again]  # stable ids
    assert len({e.id for e in eps}) == len(eps)
    assert {e.id for e in eps}.isdisjoint(
        e.id for e in events_to_episodes(luna, trader_id="bob", features=btc_features)
    )
    crash = next(e for e in eps if e.event_type == "flash_crash")
    assert crash.description.startswith("Flash crash: 1h bar return -7.0%")
    assert "BTC/USDT 1h at 2022-05-11 13:00Z" in crash.description
    assert "Fear & Greed" in crash.description and "fear_greed" in crash.state
    assert crash.importance == pytest.approx(severity(-0.0699 / -0.05), abs=0.01)
    assert crash.occurred_at == datetime(2022, 5, 11, 13, tzinfo=UTC)


def test_severity_scale() -> None:
    assert severity(1.0) == 0.5 and severity(2.0) == 0.75
    assert severity(0.0) == 0.0 and severity(float("nan")) == 0.0
    assert 0.99 < severity(100.0) <= 1.0

"""Bar features: causal (no look-ahead), gap-aware, formulas as documented."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pytest

from backend.data import OHLCVFrame
from backend.errors import DataError, LookAheadError
from backend.memory._features import FeatureFrame, compute_features
from backend.memory._news import FearGreedIndex, HeadlineIndex, headline_topics
from backend.memory.working import snapshot_at

CUT = pd.Timestamp("2022-05-09 12:00", tz="UTC")  # open time of the mutated candle


def _slice(btc_1h: OHLCVFrame, start: str, end: str) -> pd.DataFrame:
    return btc_1h.frame.loc[start:end].copy()


def _synthetic(n: int = 400, *, seed: int = 1) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.01, n)))
    open_ = np.concatenate(([100.0], close[:-1]))
    idx = pd.date_range("2022-01-01", periods=n, freq="1h", tz="UTC", name="date")
    return pd.DataFrame(
        {
            "open": open_,
            "high": np.maximum(open_, close) * 1.002,
            "low": np.minimum(open_, close) * 0.998,
            "close": close,
            "volume": rng.uniform(10, 20, n),
        },
        index=idx,
    )


def test_a_future_candle_never_changes_earlier_rows(btc_1h: OHLCVFrame) -> None:
    frame = _slice(btc_1h, "2022-03-01", "2022-06-30")
    base = compute_features(frame, symbol="BTC/USDT", timeframe="1h")
    mutated = frame.copy()
    mutated.loc[CUT:, ["open", "high", "low", "close"]] *= 0.5  # a crash from CUT on
    mutated.loc[CUT:, "volume"] *= 20
    after = compute_features(mutated, symbol="BTC/USDT", timeframe="1h")
    # Rows are indexed by CLOSE time: the mutated candle (open CUT) closes at CUT + 1h.
    known = base.frame.index <= CUT
    pd.testing.assert_frame_equal(base.frame.loc[known], after.frame.loc[known])
    assert not base.frame.loc[~known, "close"].equals(after.frame.loc[~known, "close"])
    assert base.frame.index[0] == frame.index[0] + pd.Timedelta(hours=1)


def test_a_future_candle_never_changes_an_earlier_snapshot(
    btc_1h: OHLCVFrame, headline_index: HeadlineIndex, fear_greed_index: FearGreedIndex
) -> None:
    frame = _slice(btc_1h, "2022-03-01", "2022-06-30")
    mutated = frame.copy()
    mutated.loc[CUT:, ["open", "high", "low", "close", "volume"]] *= 3.0
    at = CUT.to_pydatetime()  # the mutated candle opens now: it has not closed yet
    snaps = [
        snapshot_at(
            "alice",
            "BTC/USDT",
            "1h",
            compute_features(f, symbol="BTC/USDT", timeframe="1h").at(at),
            as_of=at,
            headlines=headline_index,
            fear_greed=fear_greed_index,
        )
        for f in (frame, mutated)
    ]
    assert snaps[0] == snaps[1]
    assert snaps[0].close == frame.loc[CUT - pd.Timedelta(hours=1), "close"]


def test_row_lookup_is_causal(btc_features: FeatureFrame) -> None:
    t = datetime(2022, 5, 9, 12, 30, tzinfo=UTC)
    row = btc_features.at(t)
    assert row.as_of == datetime(2022, 5, 9, 12, tzinfo=UTC)  # candle 11:00-12:00
    assert row.open_time == datetime(2022, 5, 9, 11, tzinfo=UTC)
    assert btc_features.at(datetime(2022, 5, 9, 13, tzinfo=UTC)).as_of.hour == 13
    with pytest.raises(LookAheadError):
        btc_features.at(datetime(2020, 9, 20, 0, 59, tzinfo=UTC))
    assert set(row.returns) == {"1h", "24h", "7d"}


def test_formulas_on_a_synthetic_series() -> None:
    frame = _synthetic()
    ff = compute_features(frame, symbol="X/USDT", timeframe="1h", breakout_lookback_bars=10)
    f = ff.frame
    close = frame["close"].to_numpy()
    i = 300
    assert f["ret_bar"].iloc[i] == pytest.approx(close[i] / close[i - 1] - 1)
    assert f["ret_1d"].iloc[i] == pytest.approx(close[i] / close[i - 24] - 1)
    assert f["ret_7d"].iloc[i] == pytest.approx(close[i] / close[i - 168] - 1)
    logret = np.diff(np.log(close))
    expected = np.std(logret[i - 24 : i], ddof=1) * math.sqrt(365 * 24)
    assert f["rv_short"].iloc[i] == pytest.approx(expected)
    assert f["prior_high"].iloc[i] == pytest.approx(frame["high"].iloc[i - 10 : i].max())
    assert f["prior_low"].iloc[i] == pytest.approx(frame["low"].iloc[i - 10 : i].min())
    vol = frame["volume"].to_numpy()
    assert f["volume_shock"].iloc[i] == pytest.approx(vol[i] / vol[i - 168 : i].mean())
    peak = frame["high"].iloc[max(0, i - 14 * 24 + 1) : i + 1].max()
    assert f["drawdown"].iloc[i] == pytest.approx(min(0.0, close[i] / peak - 1))
    assert (f["drawdown"] <= 0).all()
    spread = f["trend_spread"].to_numpy()
    codes = f["regime_code"].to_numpy()
    assert np.all(codes[(spread > 0.01) & (f["close"] >= f["ema_slow"]).to_numpy()] == 1)
    assert np.all(codes[np.abs(spread) < 0.01] == 0)


def test_gaps_are_not_filled(btc_1h: OHLCVFrame) -> None:
    frame = _slice(btc_1h, "2022-01-01", "2022-02-28")
    holed = frame.drop(frame.index[500:503])  # three candles the exchange never produced
    ff = compute_features(holed, symbol="BTC/USDT", timeframe="1h")
    assert len(ff) == len(holed)
    after = ff.frame.iloc[500]  # first candle after the hole
    before_close = holed["close"].iloc[499]
    assert after["ret_bar"] == pytest.approx(holed["close"].iloc[500] / before_close - 1)
    # the 24h return still looks back 24 hours of wall-clock time, not 24 rows
    t0 = holed.index[500] - pd.Timedelta(hours=24)
    assert after["ret_1d"] == pytest.approx(
        holed["close"].iloc[500] / holed.loc[:t0, "close"].iloc[-1] - 1
    )


def test_bad_input_is_a_data_error() -> None:
    with pytest.raises(DataError):
        compute_features(_synthetic().iloc[:0], symbol="X", timeframe="1h")
    with pytest.raises(DataError):
        compute_features(_synthetic().drop(columns="volume"), symbol="X", timeframe="1h")
    with pytest.raises(DataError):
        compute_features(_synthetic())


def test_fear_greed_value_of_day_d_is_known_from_d_plus_1(fear_greed: pd.Series) -> None:
    fg = FearGreedIndex.build(fear_greed)
    d = pd.Timestamp("2022-05-10", tz="UTC")
    prev = int(fear_greed.loc[pd.Timestamp("2022-05-09", tz="UTC")])
    assert fg.at(datetime(2022, 5, 10, 23, 59, tzinfo=UTC)) == prev
    assert fg.at(datetime(2022, 5, 11, tzinfo=UTC)) == int(fear_greed.loc[d])
    assert fg.at(datetime(2010, 1, 1, tzinfo=UTC)) is None
    assert fg.at(datetime(2030, 1, 1, tzinfo=UTC)) is None  # stale


def test_snapshot_sees_only_published_headlines(
    btc_features: FeatureFrame, headline_index: HeadlineIndex, fear_greed_index: FearGreedIndex
) -> None:
    row = btc_features.at(datetime(2022, 6, 13, 5, tzinfo=UTC))
    snap = snapshot_at(
        "alice",
        "BTC/USDT",
        "1h",
        row,
        headlines=headline_index,
        fear_greed=fear_greed_index,
    )
    assert snap.as_of == datetime(2022, 6, 13, 5, tzinfo=UTC)
    assert snap.headlines[0].startswith("Nifty News")  # 04:50, newest first
    assert any(t.startswith("Celsius exodus") for t in snap.headlines)  # 04:01
    assert all(
        h.published_at <= snap.as_of
        for h in headline_index.window(snap.as_of - timedelta(hours=6), snap.as_of)
    )
    later = [h.title for h in headline_index.window(snap.as_of, snap.as_of + timedelta(hours=3))]
    assert later and not set(later) & set(snap.headlines)
    assert "insolvency" in snap.topics and "trend_down" in snap.topics
    assert snap.fear_greed is not None
    with pytest.raises(LookAheadError):
        snapshot_at("alice", "BTC/USDT", "1h", row, as_of=row.as_of - timedelta(minutes=1))


def test_topic_rules() -> None:
    assert headline_topics("Celsius Crashes 50% As the Platform Halts Withdrawals") == (
        "insolvency",
        "crash",
    )
    assert "stablecoin" in headline_topics("Terra peg mechanism in doubt as UST crashes")
    assert headline_topics("Fed raises rates, Bitcoin ETF delayed by SEC") == (
        "regulation",
        "etf",
        "macro",
    )
    assert headline_topics("NFT marketplace launches new drop") == ()

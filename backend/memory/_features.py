"""Vectorised, causal bar features of one OHLCV series (computed once per frame).

:func:`compute_features` turns a candle frame into a :class:`FeatureFrame`: one row per
candle, indexed by the candle's CLOSE time (``as_of``), whose values use only candles that
closed at or before that time (every window ends at the row; nothing is centred or shifted
backwards). A backtest computes it once and then reads rows with :meth:`FeatureFrame.row`
or :meth:`FeatureFrame.at` (a few microseconds each).

Gaps: missing candles are never invented. Windows are counted in grid bars (a 24-bar
window always spans 24 timeframes of wall-clock time, holes included); a horizon return
whose start candle is missing uses the last close known at or before the start.

Columns (units; ``n`` = bars per day, ``86400 / timeframe seconds``):

- ``close``: quote currency.
- ``ret_bar``, ``ret_1d``, ``ret_7d``: fractional close-to-close returns over 1 bar, 1 day,
  7 days (``close_t / close_{t-h} - 1``). Labels in :attr:`FeatureFrame.return_labels`
  (``"1h"``, ``"24h"``, ``"7d"`` on hourly candles).
- ``rv_short`` / ``rv_long``: realised volatility, the sample standard deviation of bar log
  returns over ``vol_short_days`` / ``vol_long_days``, annualised by ``sqrt(bars per year)``
  (365-day year: crypto trades every day). Fraction (0.8 = 80% a year).
- ``vol_ratio``: ``rv_short / rv_long`` (>= 0; the volatility-spike statistic).
- ``ema_fast`` / ``ema_slow``: exponential moving averages of close, spans
  ``trend_fast_days * n`` / ``trend_slow_days * n`` bars (``adjust=False``, causal).
- ``trend_spread``: ``ema_fast / ema_slow - 1``. Regime rule (moving-average crossover with a
  dead band, e.g. Brock, Lakonishok & LeBaron 1992): ``trend_up`` if the spread is
  ``>= trend_band`` and close ``>=`` ``ema_slow``; ``trend_down`` if ``<= -trend_band`` and
  close ``<=`` ``ema_slow``; otherwise ``range``. Codes in ``regime_code`` (1, -1, 0).
- ``drawdown``: ``close / max(high over drawdown_days) - 1``, in [-1, 0].
- ``volume_shock``: bar volume over the mean volume of the previous ``volume_days``
  (the current bar excluded), >= 0; 1.0 when there is no history.
- ``prior_high`` / ``prior_low``: max high / min low of the previous ``breakout_lookback_bars``
  bars, the current bar EXCLUDED (breakout levels).
- ``warm``: True once every window is full (detectors fire only on warm rows).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import numpy as np
import pandas as pd

from backend.data import close_times, period_steps
from backend.data.models import OHLCVFrame
from backend.data.ohlcv import timeframe_seconds
from backend.errors import DataError, LookAheadError
from backend.memory.models import Regime
from backend.types import to_utc

__all__ = ["REGIMES", "FeatureFrame", "FeatureRow", "compute_features"]

REGIMES: dict[int, Regime] = {1: "trend_up", -1: "trend_down", 0: "range"}
_DAY_S = 86_400
_YEAR_DAYS = 365.0
_FLOAT_COLUMNS = (
    "close",
    "ret_bar",
    "ret_1d",
    "ret_7d",
    "rv_short",
    "rv_long",
    "vol_ratio",
    "ema_fast",
    "ema_slow",
    "trend_spread",
    "drawdown",
    "volume_shock",
    "prior_high",
    "prior_low",
)


@dataclass(frozen=True, slots=True)
class FeatureRow:
    """The features of one bar (see the module docstring for units); NaN = not enough history.

    ``as_of`` is the bar's close time (UTC); ``open_time`` its open time; ``index`` its row.
    ``returns`` maps horizon labels (``"1h"``, ``"24h"``, ``"7d"``) to finite returns only.
    """

    index: int
    as_of: datetime
    open_time: datetime
    values: dict[str, float]
    returns: dict[str, float]
    regime: Regime
    warm: bool

    def __getitem__(self, name: str) -> float:
        return self.values[name]


@dataclass(frozen=True)
class FeatureFrame:
    """Precomputed bar features of one symbol and timeframe (index: close time, UTC)."""

    symbol: str
    timeframe: str
    frame: pd.DataFrame
    return_labels: dict[str, str]
    """Column -> horizon label, e.g. ``{"ret_bar": "1h", "ret_1d": "24h", "ret_7d": "7d"}``."""
    bars_per_day: float
    params: dict[str, float]
    _close_ns: np.ndarray = field(repr=False)
    _open_ns: np.ndarray = field(repr=False)
    _arrays: dict[str, np.ndarray] = field(repr=False)
    _regime: np.ndarray = field(repr=False)
    _warm: np.ndarray = field(repr=False)
    _matrix: np.ndarray = field(repr=False)
    _close_dt: list[datetime] = field(repr=False)
    _open_dt: list[datetime] = field(repr=False)

    def __len__(self) -> int:
        return len(self.frame)

    @property
    def close_times(self) -> pd.DatetimeIndex:
        return pd.DatetimeIndex(self.frame.index)

    def column(self, name: str) -> np.ndarray:
        """A float column as a read-only numpy array (no copy)."""
        return self._arrays[name]

    def locate(self, as_of: datetime) -> int:
        """Row of the last bar that closed at or before ``as_of``; -1 if none did."""
        ts = pd.Timestamp(to_utc(as_of)).value
        return int(np.searchsorted(self._close_ns, ts, side="right")) - 1

    def row(self, index: int) -> FeatureRow:
        """The features of row ``index`` (0-based; negative counts from the end)."""
        n = len(self.frame)
        if not -n <= index < n:
            raise IndexError(f"feature row {index} out of range 0..{n - 1}")
        i = index % n
        values = dict(zip(_FLOAT_COLUMNS, self._matrix[i].tolist(), strict=True))
        returns = {
            label: values[col]
            for col, label in self.return_labels.items()
            if math.isfinite(values[col])
        }
        return FeatureRow(
            index=i,
            as_of=self._close_dt[i],
            open_time=self._open_dt[i],
            values=values,
            returns=returns,
            regime=REGIMES[int(self._regime[i])],
            warm=bool(self._warm[i]),
        )

    def at(self, as_of: datetime) -> FeatureRow:
        """The features known at ``as_of``: the last bar closed at or before it.

        Raises :class:`LookAheadError` if no bar had closed by then.
        """
        i = self.locate(as_of)
        if i < 0:
            raise LookAheadError(f"{self.symbol} {self.timeframe}: no bar closed by {as_of}")
        return self.row(i)


def _rolling(values: pd.Series, window: int, how: str, *, min_periods: int) -> pd.Series:
    roll = values.rolling(window, min_periods=max(1, min(min_periods, window)))
    out: pd.Series = getattr(roll, how)()
    return out


def compute_features(
    ohlcv: OHLCVFrame | pd.DataFrame,
    *,
    symbol: str | None = None,
    timeframe: str | None = None,
    vol_short_days: float = 1.0,
    vol_long_days: float = 30.0,
    trend_fast_days: float = 1.0,
    trend_slow_days: float = 7.0,
    trend_band: float = 0.01,
    drawdown_days: float = 14.0,
    volume_days: float = 7.0,
    breakout_lookback_bars: int = 72,
) -> FeatureFrame:
    """Compute every feature column of ``ohlcv`` at once (vectorised, causal).

    ``ohlcv`` is an :class:`OHLCVFrame` or a frame of the same shape (UTC open-time index,
    float ``open, high, low, close, volume``), in which case ``symbol`` and ``timeframe``
    are required. Window lengths are in days (converted to bars, at least 2) except
    ``breakout_lookback_bars``; ``trend_band`` is a fraction (0.01 = 1%).

    Raises :class:`DataError` for an empty frame, a missing column, an unsorted index or a
    bad timeframe. Cost: ~60-80 ms for 44k hourly candles (2 cores).
    """
    if isinstance(ohlcv, OHLCVFrame):
        frame, symbol, timeframe = ohlcv.frame, symbol or ohlcv.pair, timeframe or ohlcv.timeframe
    else:
        frame = ohlcv
    if symbol is None or timeframe is None:
        raise DataError("symbol and timeframe are required with a plain DataFrame")
    missing = {"open", "high", "low", "close", "volume"} - set(frame.columns)
    if missing:
        raise DataError(f"OHLCV frame lacks column(s) {sorted(missing)}", field="frame")
    if frame.empty:
        raise DataError(f"{symbol} {timeframe}: no candles", field="frame")
    dates = pd.DatetimeIndex(frame.index)
    if dates.tz is None or not dates.is_monotonic_increasing or not dates.is_unique:
        raise DataError("OHLCV index must be unique, increasing, tz-aware UTC open times")
    if breakout_lookback_bars < 1:
        raise DataError("breakout_lookback_bars must be >= 1", field="breakout_lookback_bars")
    dates = dates.tz_convert("UTC")
    seconds = timeframe_seconds(timeframe)
    per_day = _DAY_S / seconds

    def bars(days: float) -> int:
        return max(2, round(days * per_day))

    # Place candles on the complete grid (NaN where the exchange produced none).
    steps, _ = period_steps(dates, timeframe)
    pos = np.asarray(steps - steps[0], dtype=np.int64)
    size = int(pos[-1]) + 1

    def on_grid(col: str) -> pd.Series:
        arr = np.full(size, np.nan)
        arr[pos] = frame[col].to_numpy(dtype=np.float64)
        return pd.Series(arr)

    close, high, low, volume = (on_grid(c) for c in ("close", "high", "low", "volume"))
    known = close.ffill()  # last close known at or before each grid bar

    def horizon_return(h: int) -> pd.Series:
        return close / known.shift(h) - 1.0

    h_day, h_week = max(1, round(per_day)), max(1, round(7 * per_day))
    ret_bar = horizon_return(1)
    ret_1d = horizon_return(h_day)
    ret_7d = horizon_return(h_week)
    logret = pd.Series(np.log((close / known.shift(1)).to_numpy()))
    annual = math.sqrt(_YEAR_DAYS * per_day)
    w_short, w_long = bars(vol_short_days), bars(vol_long_days)
    rv_short = _rolling(logret, w_short, "std", min_periods=w_short // 2) * annual
    rv_long = _rolling(logret, w_long, "std", min_periods=w_short) * annual
    vol_ratio = rv_short / rv_long.where(rv_long > 0)
    span_fast, span_slow = bars(trend_fast_days), bars(trend_slow_days)
    ema_fast = known.ewm(span=span_fast, adjust=False).mean()
    ema_slow = known.ewm(span=span_slow, adjust=False).mean()
    spread = ema_fast / ema_slow - 1.0
    w_dd = bars(drawdown_days)
    drawdown = (close / _rolling(high, w_dd, "max", min_periods=1) - 1.0).clip(upper=0.0)
    w_vol = bars(volume_days)
    trailing_volume = _rolling(volume, w_vol, "mean", min_periods=1).shift(1)
    volume_shock = (volume / trailing_volume.where(trailing_volume > 0)).fillna(1.0)
    n = breakout_lookback_bars
    prior_high = _rolling(high, n, "max", min_periods=n // 2).shift(1)
    prior_low = _rolling(low, n, "min", min_periods=n // 2).shift(1)

    grid = pd.DataFrame(
        {
            "close": close,
            "ret_bar": ret_bar,
            "ret_1d": ret_1d,
            "ret_7d": ret_7d,
            "rv_short": rv_short,
            "rv_long": rv_long,
            "vol_ratio": vol_ratio,
            "ema_fast": ema_fast,
            "ema_slow": ema_slow,
            "trend_spread": spread,
            "drawdown": drawdown,
            "volume_shock": volume_shock,
            "prior_high": prior_high,
            "prior_low": prior_low,
        }
    )
    out = grid.iloc[pos].reset_index(drop=True)
    out.index = close_times(dates, timeframe).rename("as_of")
    out.insert(0, "open_time", dates)
    up = (out["trend_spread"] >= trend_band) & (out["close"] >= out["ema_slow"])
    down = (out["trend_spread"] <= -trend_band) & (out["close"] <= out["ema_slow"])
    out["regime_code"] = np.where(up, 1, np.where(down, -1, 0)).astype(np.int8)
    warm_from = max(w_long, w_dd, w_vol, span_slow, n + 1, round(7 * per_day) + 1)
    out["warm"] = pos >= warm_from
    labels = {"ret_bar": timeframe}
    if h_day > 1:  # horizons no longer than one bar would repeat ret_bar
        labels["ret_1d"] = "24h"
    if h_week > h_day:
        labels["ret_7d"] = "7d"
    arrays: dict[str, Any] = {c: out[c].to_numpy(dtype=np.float64) for c in _FLOAT_COLUMNS}
    for arr in arrays.values():
        arr.flags.writeable = False
    return FeatureFrame(
        symbol=symbol,
        timeframe=timeframe,
        frame=out,
        return_labels=labels,
        bars_per_day=per_day,
        params={
            "vol_short_bars": w_short,
            "vol_long_bars": w_long,
            "trend_fast_bars": span_fast,
            "trend_slow_bars": span_slow,
            "trend_band": trend_band,
            "drawdown_bars": w_dd,
            "volume_bars": w_vol,
            "breakout_lookback_bars": n,
            "annualisation": annual,
        },
        _close_ns=np.asarray(out.index.as_unit("ns").asi8),
        _open_ns=np.asarray(dates.as_unit("ns").asi8),
        _arrays=arrays,
        _regime=out["regime_code"].to_numpy(),
        _warm=out["warm"].to_numpy(),
        _matrix=np.column_stack([arrays[c] for c in _FLOAT_COLUMNS]),
        _close_dt=list(out.index.to_pydatetime()),
        _open_dt=list(dates.to_pydatetime()),
    )

"""The figures of a run's report (matplotlib Agg, no display): equity against
buy-and-hold with the salient events, drawdown and exposure, the persona timeline; each
an offline ``<img>`` (PNG as base64). Times on the axes are UTC."""

from __future__ import annotations

import base64
import io
from collections.abc import Callable
from datetime import datetime
from typing import cast

import numpy as np
import pandas as pd
from matplotlib import dates as mdates
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from backend.backtest.engine import BacktestResult, utc_timestamp

__all__ = ["equity_figure", "figure_img", "naive_utc", "risk_figure", "timeline_figure"]

_date2num = cast("Callable[[object], float]", mdates.date2num)
_MAX_EVENT_MARKERS = 40
"""Events marked on the equity figure (the events table lists them all)."""
_TIME_COLUMNS = ("as_of", "time", "date", "timestamp", "valid_from")
"""Columns a persona timeline's time is read from, first found."""


def figure_img(fig: Figure, *, alt: str = "figure") -> str:
    """``fig`` as an offline ``<img>`` tag (PNG at 96 dpi, base64 in the page)."""
    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=96, bbox_inches="tight")
    data = base64.b64encode(buf.getvalue()).decode("ascii")
    return f'<img alt="{alt}" src="data:image/png;base64,{data}">'


def naive_utc(index: pd.Index) -> np.ndarray:
    """Times of ``index`` as naive UTC ``datetime64`` (what matplotlib plots)."""
    times = pd.DatetimeIndex(index)
    if times.tz is not None:
        times = times.tz_convert("UTC").tz_localize(None)
    return times.to_numpy()


def equity_figure(result: BacktestResult, events: list[tuple[datetime, str]]) -> str:
    fig = Figure(figsize=(11, 4.5))
    ax = fig.add_subplot()
    x = naive_utc(result.equity.index)
    ax.plot(x, result.equity.to_numpy(), label="strategy", color="#1f77b4", lw=1.2)
    ax.plot(x, result.buy_and_hold.to_numpy(), label="buy and hold", color="#999999", lw=1.0)
    for number, (when, _label) in enumerate(events[:_MAX_EVENT_MARKERS], start=1):
        stamp = utc_timestamp(when).tz_localize(None).to_datetime64()
        pos = int(np.searchsorted(x, stamp, side="right")) - 1
        at = float(_date2num(stamp))
        y = float(result.equity.iloc[max(pos, 0)])
        ax.axvline(at, color="#d62728", lw=0.6, alpha=0.5, ls="--")
        ax.plot([at], [y], marker="v", color="#d62728", ms=5)
        ax.annotate(
            str(number), (at, y), xytext=(0, 8), textcoords="offset points",
            ha="center", fontsize=8, color="#d62728",
        )  # fmt: skip
    ax.set_ylabel("equity (quote currency)")
    ax.set_title("Equity vs buy-and-hold (numbers: salient events, UTC)")
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left")
    fig.autofmt_xdate()
    return figure_img(fig)


def risk_figure(result: BacktestResult) -> str:
    fig = Figure(figsize=(11, 4.5))
    ax_dd, ax_exp = fig.subplots(2, 1, sharex=True, height_ratios=(2, 1))
    x = naive_utc(result.equity.index)
    bh_dd = result.buy_and_hold / result.buy_and_hold.cummax() - 1.0
    ax_dd.fill_between(x, result.drawdown.to_numpy(), 0.0, color="#1f77b4", alpha=0.4)
    ax_dd.plot(x, bh_dd.to_numpy(), color="#999999", lw=0.8, label="buy and hold")
    ax_dd.set_ylabel("drawdown (fraction)")
    ax_dd.set_title("Drawdown from the running high, and position exposure")
    ax_dd.legend(loc="lower left")
    ax_dd.grid(alpha=0.3)
    # the exposure marked at close t was set by the fill at bar t's open (close t - 1):
    # drawn over (x[t-1], x[t]], where it was held ("post" drew it one bar late)
    ax_exp.step(x, result.exposure.to_numpy(), where="pre", color="#2ca02c", lw=0.8)
    ax_exp.axhline(0.0, color="#555555", lw=0.5)
    ax_exp.set_ylabel("exposure")
    ax_exp.grid(alpha=0.3)
    fig.autofmt_xdate()
    return figure_img(fig)


def _timeline_times(frame: pd.DataFrame) -> pd.DatetimeIndex | None:
    if isinstance(frame.index, pd.DatetimeIndex):
        return frame.index
    for column in _TIME_COLUMNS:
        if column in frame.columns:
            try:
                return pd.DatetimeIndex(pd.to_datetime(frame[column], utc=True))
            except (ValueError, TypeError):
                return None
    return None


def timeline_figure(frame: pd.DataFrame, *, window: tuple[np.datetime64, np.datetime64]) -> str:
    """Persona changes on the run's time axis: one row of markers per ``attribute`` (an
    event-log timeline), else step lines of up to 6 numeric columns (a value timeline)."""
    times = _timeline_times(frame)
    if times is None or len(frame) == 0:
        return ""
    x = naive_utc(times)
    if "attribute" in frame.columns:
        names = [str(v) for v in frame["attribute"]]
        rows = sorted(set(names))
        fig = Figure(figsize=(11, 0.35 * len(rows) + 1.4))
        ax = fig.add_subplot()
        ax.scatter(x, [rows.index(n) for n in names], marker="D", s=22, color="#9467bd")
        ax.set_yticks(range(len(rows)), rows, fontsize=8)
        ax.set_ylim(-0.7, len(rows) - 0.3)
        axes = [ax]
    else:
        numeric = [
            c
            for c in frame.columns
            if pd.api.types.is_numeric_dtype(frame[c]) and not pd.api.types.is_bool_dtype(frame[c])
        ][:6]
        if not numeric:
            return ""
        fig = Figure(figsize=(11, 1.6 * len(numeric) + 0.6))
        axes = list(fig.subplots(len(numeric), 1, sharex=True, squeeze=False)[:, 0])
        for ax, column in zip(axes, numeric, strict=True):
            ax.step(x, frame[column].to_numpy(dtype=np.float64), where="post", lw=1.0)
            ax.set_ylabel(str(column), fontsize=8)
    left, right = float(_date2num(window[0])), float(_date2num(window[1]))
    margin = 0.02 * max(right - left, 1e-3)
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.set_xlim(left - margin, right + margin)
    axes[0].set_title("Persona timeline (changes within the run window)")
    fig.autofmt_xdate()
    return figure_img(fig)

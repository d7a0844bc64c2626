"""Persona attributes computed from a trader's fills (pure functions, no store, no clock).

Input: a fills frame as made by :func:`backend.data.fills_to_frame` (at least the columns
of :data:`REQUIRED_COLUMNS`). Only fills with ``datetime <= as_of`` are used; rows of the
same minute keep their frame order (the export's order, which is chronological: each
perp fill's ``start_position`` continues the previous one). Fills of an unknown kind
(``direction`` ``other``: Hyperliquid's automatic "Spot Dust Conversion") move positions
but are not counted as trading (assets, frequency, sizes, hours). Units: notional, PnL
and fees in the quote currency (USDC for Hyperliquid), times UTC, shares as fractions 0..1.

Every attribute is a :class:`~backend.memory.models.PersonaAttribute` with ``source="fills"``,
``evidence`` = the ids of the fills it was computed from (the newest 50, newest last),
``evidence_count`` = how many, ``first_seen``/``last_updated`` = time of the oldest/newest
of those fills, and ``detail`` = the numbers behind the value.

Confidence is ``n / (n + k)``: ``n`` the orders among the evidence (active days for
``trade_frequency``), ``k`` the per-attribute constant of
:data:`CONFIDENCE_K` (the evidence at which confidence reaches 0.5), rounded to 4 places.
An attribute without evidence gets ``value=None`` and confidence 0; the persona router
never adds such an attribute (``leverage`` is always so: the Hyperliquid export has no
leverage or margin column).
"""

from __future__ import annotations

import math
from datetime import datetime
from typing import Any

import numpy as np
import pandas as pd

from backend.agents.memory._persona_frame import REQUIRED_COLUMNS, normalize_fills_frame
from backend.agents.memory._persona_positions import (
    asset_shares,
    base_assets,
    holding_rows,
    holding_samples,
    opening_notional,
    traded_fills,
)
from backend.agents.memory._persona_risk import RISK_THRESHOLDS, risk_tolerance
from backend.memory.models import PersonaAttribute
from backend.types import to_utc

__all__ = [
    "ATTRIBUTE_NAMES",
    "CLOSING_DIRECTIONS",
    "CONFIDENCE_K",
    "REQUIRED_COLUMNS",
    "RISK_THRESHOLDS",
    "STYLE_THRESHOLDS_H",
    "compute_persona_attributes",
    "holding_samples",
    "normalize_fills_frame",
]

ATTRIBUTE_NAMES: tuple[str, ...] = (
    "preferred_assets",
    "long_share",
    "risk_tolerance",
    "holding_period",
    "trade_frequency",
    "position_notional",
    "leverage",
    "win_rate",
    "pnl_profile",
    "max_drawdown",
    "active_hours",
    "style",
)
CONFIDENCE_K: dict[str, int] = {
    "preferred_assets": 20,
    "long_share": 20,
    "risk_tolerance": 50,
    "holding_period": 20,
    "trade_frequency": 5,
    "position_notional": 20,
    "leverage": 1,
    "win_rate": 30,
    "pnl_profile": 30,
    "max_drawdown": 30,
    "active_hours": 50,
    "style": 20,
}
"""``k`` of ``confidence = n / (n + k)``: orders (of the fills, opening fills or closing
fills an attribute reads) or, for ``trade_frequency``, active days at which the
confidence reaches 0.5."""

CLOSING_DIRECTIONS = (
    "close_long",
    "close_short",
    "sell",
    "flip_long_to_short",
    "flip_short_to_long",
)
"""Fills that realise PnL (perp closes, spot sells, flips); ``win_rate`` counts these."""

STYLE_THRESHOLDS_H: tuple[tuple[float, str], ...] = (
    (1.0, "scalper"),
    (24.0, "day"),
    (24.0 * 14, "swing"),
)
"""Median holding period (hours) below the bound -> style; 14 days or more -> ``position``."""

_EVIDENCE_MAX = 50
_TOP_HOURS = 3


def _confidence(name: str, n: int) -> float:
    k = CONFIDENCE_K[name]
    return round(n / (n + k), 4) if n > 0 else 0.0


def _r(value: float | None, places: int) -> float | None:
    if value is None or not math.isfinite(value):
        return None
    return round(float(value), places)


def _orders(rows: pd.DataFrame) -> int:
    """Distinct orders of ``rows`` (a fill without an order id is its own): what a
    confidence counts, as one Hyperliquid order fills up to hundreds of times (498
    closing fills of 15 orders had given a win rate the confidence of 498 trades)."""
    return int(rows["order_key"].nunique()) if len(rows) else 0


def _attr(
    name: str,
    value: Any,
    rows: pd.DataFrame,
    *,
    as_of: datetime,
    detail: dict[str, Any],
    n: int | None = None,
) -> PersonaAttribute:
    """One attribute with evidence from ``rows`` (confidence from ``n``, default the
    orders among ``rows``: :func:`_orders`)."""
    count = _orders(rows) if n is None else n
    has = value is not None and len(rows) > 0
    ids = rows["id"].tolist()[-_EVIDENCE_MAX:] if has else []
    first = rows["datetime"].iloc[0].to_pydatetime() if has else as_of
    last = rows["datetime"].iloc[-1].to_pydatetime() if has else as_of
    return PersonaAttribute(
        name=name,
        value=value if has else None,
        confidence=_confidence(name, count) if has else 0.0,
        evidence=[str(i) for i in ids],
        evidence_count=len(rows) if has else 0,
        source="fills",
        first_seen=first,
        last_updated=last,
        detail=detail,
    )


def compute_persona_attributes(
    frame: pd.DataFrame, *, as_of: datetime, normalized: bool = False
) -> dict[str, PersonaAttribute]:
    """All persona attributes (:data:`ATTRIBUTE_NAMES`) of one trader's fills known at
    ``as_of`` (aware; fills after it are never read). ``frame``: one trader's fills (see the
    module doc); ``normalized``: it is :func:`normalize_fills_frame`'s output already (the
    persona manager's ledger; normalizing it again made this call 123 ms instead of 106
    at 0x513b's 12k fills, paid at every bar with new fills). Raises :class:`DataError`
    for missing columns, ``ValueError`` for a naive ``as_of``."""
    fence = to_utc(as_of)
    fills = frame if normalized else normalize_fills_frame(frame)
    fills = fills.loc[fills["datetime"] <= pd.Timestamp(fence)].reset_index(drop=True)
    closing = fills.loc[fills["direction"].isin(CLOSING_DIRECTIONS)]
    traded = traded_fills(fills)  # what the trader did (not a dust conversion)
    hold_hours, hold_at, untimed = holding_rows(fills)
    held = fills.iloc[np.sort(np.asarray(hold_at, dtype=np.int64))]  # the timed closes
    out: dict[str, PersonaAttribute] = {}
    out["preferred_assets"] = _preferred_assets(traded, fence)
    out["long_share"] = _long_share(fills, fence)
    out["holding_period"] = _holding_period(held, hold_hours, untimed, fence)
    out["trade_frequency"] = _trade_frequency(traded, fence)
    out["position_notional"] = _position_notional(traded, fence)
    out["leverage"] = _attr(
        "leverage",
        None,
        fills.iloc[:0],
        as_of=fence,
        detail={"reason": "the fills carry no leverage or margin column"},
    )
    out["win_rate"] = _win_rate(closing, fence)
    out["pnl_profile"] = _pnl_profile(fills, closing, fence)
    out["max_drawdown"] = _max_drawdown(fills, closing, fence)
    out["active_hours"] = _active_hours(traded, fence)
    out["style"] = _style(out["holding_period"], held, fence)
    risk, risk_detail = risk_tolerance(fills, closing, out)
    rows = closing if risk is not None else closing.iloc[:0]
    out["risk_tolerance"] = _attr("risk_tolerance", risk, rows, as_of=fence, detail=risk_detail)
    return {name: out[name] for name in ATTRIBUTE_NAMES}


# ------------------------------------------------------------------ attributes


def _preferred_assets(fills: pd.DataFrame, as_of: datetime) -> PersonaAttribute:
    shares = asset_shares(fills)
    if not shares:
        return _attr("preferred_assets", None, fills.iloc[:0], as_of=as_of, detail={})
    notional = fills["cost"].abs().groupby(base_assets(fills["symbol"])).sum()
    ranked = [(asset, float(notional[asset])) for asset in shares]
    detail = {
        "shares": {asset: round(share, 6) for asset, share in shares.items()},
        "notional_usdc": {a: round(v, 2) for a, v in ranked},
        "total_notional_usdc": round(float(notional.sum()), 2),
        "rule": "assets by share of traded notional |cost|, all trading fills, largest first",
    }
    return _attr("preferred_assets", [str(a) for a, _ in ranked], fills, as_of=as_of, detail=detail)


def _long_share(fills: pd.DataFrame, as_of: datetime) -> PersonaAttribute:
    long_, short = opening_notional(fills)
    opening = fills.loc[(long_ > 0) | (short > 0)]
    total = float(long_.sum() + short.sum())
    value = _r(float(long_.sum()) / total, 4) if total > 0 else None
    detail = {
        "long_open_notional_usdc": round(float(long_.sum()), 2),
        "short_open_notional_usdc": round(float(short.sum()), 2),
        "long_opening_fills": int((long_ > 0).sum()),
        "short_opening_fills": int((short > 0).sum()),
        "rule": "long / (long + short) opening notional; long = open_long + spot buy + the "
        "opening part of short>long flips; short = open_short + opening part of long>short",
    }
    return _attr("long_share", value, opening, as_of=as_of, detail=detail)


def _holding_period(
    rows: pd.DataFrame, hours: list[float], untimed: int, as_of: datetime
) -> PersonaAttribute:
    series = pd.Series(hours, dtype="float64")
    value = _r(float(series.median()), 3) if len(series) else None
    detail = {
        "median_h": value,
        "mean_h": _r(float(series.mean()), 3) if len(series) else None,
        "p25_h": _r(float(series.quantile(0.25)), 3) if len(series) else None,
        "p75_h": _r(float(series.quantile(0.75)), 3) if len(series) else None,
        "timed_closes": len(series),
        "untimed_closes": untimed,
        "rule": "FIFO lots per symbol from start_position; one sample per closing fill = "
        "quantity-weighted age of the lots it closed; closes of unknown-age inventory skipped",
    }
    return _attr("holding_period", value, rows, as_of=as_of, detail=detail)


def _trade_frequency(fills: pd.DataFrame, as_of: datetime) -> PersonaAttribute:
    if fills.empty:
        return _attr("trade_frequency", None, fills, as_of=as_of, detail={})
    days = fills["datetime"].dt.floor("D")
    active = int(days.nunique())
    n_orders = _orders(fills)
    span = (fills["datetime"].iloc[-1] - fills["datetime"].iloc[0]).total_seconds() / 86400
    detail = {
        "fills": len(fills),
        "orders": n_orders,
        "active_days": active,
        "span_days": round(span, 3),
        "fills_per_active_day": round(len(fills) / active, 3),
        "orders_per_active_day": round(n_orders / active, 3),
        "rule": "value = orders (distinct order ids; a fill without one is its own) per "
        "active UTC day: one Hyperliquid order fills up to hundreds of times",
    }
    value = round(n_orders / active, 2)
    return _attr("trade_frequency", value, fills, as_of=as_of, detail=detail, n=active)


def _position_notional(fills: pd.DataFrame, as_of: datetime) -> PersonaAttribute:
    if fills.empty:
        return _attr("position_notional", None, fills, as_of=as_of, detail={})
    cost = fills["cost"].abs()
    per_order = cost.groupby(fills["order_key"]).sum()
    value = {
        "median": round(float(cost.median()), 2),
        "p90": round(float(cost.quantile(0.9)), 2),
    }
    detail = {
        "quote": "USDC",
        "mean": round(float(cost.mean()), 2),
        "max": round(float(cost.max()), 2),
        "order_median": round(float(per_order.median()), 2),
        "order_p90": round(float(per_order.quantile(0.9)), 2),
        "rule": "fill notional |cost| in quote currency; median and p90 (linear)",
    }
    return _attr("position_notional", value, fills, as_of=as_of, detail=detail)


def _win_rate(closing: pd.DataFrame, as_of: datetime) -> PersonaAttribute:
    pnl = closing["realized_pnl"].fillna(0.0).groupby(closing["order_key"], sort=False).sum()
    wins, losses = int((pnl > 0).sum()), int((pnl < 0).sum())
    value = _r(wins / len(pnl), 4) if len(pnl) else None
    detail = {
        "closing_orders": len(pnl),
        "closing_fills": len(closing),
        "wins": wins,
        "losses": losses,
        "flat": len(pnl) - wins - losses,
        "rule": "share of closing orders (their fills' PnL summed; "
        + ", ".join(CLOSING_DIRECTIONS)
        + ") with PnL > 0: an order's many fills had counted as many trades",
    }
    return _attr("win_rate", value, closing, as_of=as_of, detail=detail)


def _pnl_profile(fills: pd.DataFrame, closing: pd.DataFrame, as_of: datetime) -> PersonaAttribute:
    pnl = fills["realized_pnl"].fillna(0.0)
    wins, losses = pnl[pnl > 0], pnl[pnl < 0]
    gross_win, gross_loss = float(wins.sum()), float(-losses.sum())
    realised = fills.loc[pnl != 0]
    value = (
        {
            "total": round(float(pnl.sum()), 2),
            "mean_win": _r(float(wins.mean()), 2) if len(wins) else None,
            "mean_loss": _r(float(losses.mean()), 2) if len(losses) else None,
            "profit_factor": _r(gross_win / gross_loss, 4) if gross_loss > 0 else None,
        }
        if len(realised)
        else None
    )
    fees = float(fills["fee_quote"].sum())
    detail = {
        "quote": "USDC",
        "gross_profit": round(gross_win, 2),
        "gross_loss": round(gross_loss, 2),
        "fees": round(fees, 2),
        "net_after_fees": round(float(pnl.sum()) - fees, 2),
        "realising_fills": len(realised),
        "rule": "realised (closed) PnL before fees; profit factor = gross profit / gross "
        "loss (None without losses)",
    }
    return _attr("pnl_profile", value, realised, as_of=as_of, detail=detail, n=_orders(closing))


def _max_drawdown(fills: pd.DataFrame, closing: pd.DataFrame, as_of: datetime) -> PersonaAttribute:
    realised = fills.loc[fills["realized_pnl"].fillna(0.0) != 0]
    if realised.empty:
        return _attr("max_drawdown", None, realised, as_of=as_of, detail={})
    cum = realised["realized_pnl"].cumsum().to_numpy()
    peak = np.maximum.accumulate(np.maximum(cum, 0.0))
    dd = peak - cum
    trough_at = int(np.argmax(dd))
    worst = float(dd[trough_at])
    peak_value = float(peak[trough_at])
    stamps = realised["datetime"]
    peak_pos = int(np.argmax(cum[: trough_at + 1])) if peak_value > 0 and worst > 0 else None
    detail = {
        "quote": "USDC",
        "peak_usdc": round(peak_value, 2) if worst > 0 else None,
        "trough_usdc": round(float(cum[trough_at]), 2) if worst > 0 else None,
        "peak_at": stamps.iloc[peak_pos].isoformat() if peak_pos is not None else None,
        "trough_at": stamps.iloc[trough_at].isoformat() if worst > 0 else None,
        "fraction_of_peak": _r(worst / peak_value, 4) if peak_value > 0 else None,
        "rule": "worst peak-to-trough of cumulative realised PnL, starting from 0",
    }
    value = round(worst, 2)
    return _attr("max_drawdown", value, realised, as_of=as_of, detail=detail, n=_orders(closing))


def _active_hours(fills: pd.DataFrame, as_of: datetime) -> PersonaAttribute:
    if fills.empty:
        return _attr("active_hours", None, fills, as_of=as_of, detail={})
    counts = fills["datetime"].dt.hour.value_counts()
    ranked = sorted(((int(h), int(n)) for h, n in counts.items()), key=lambda hn: (-hn[1], hn[0]))
    top = [h for h, _ in ranked[:_TOP_HOURS]]
    detail = {
        "counts": {f"{h:02d}": n for h, n in sorted(ranked)},
        "top_share": round(sum(n for _, n in ranked[:_TOP_HOURS]) / len(fills), 4),
        "rule": f"top {_TOP_HOURS} UTC hours by fill count",
    }
    return _attr("active_hours", top, fills, as_of=as_of, detail=detail)


def _style(holding: PersonaAttribute, rows: pd.DataFrame, as_of: datetime) -> PersonaAttribute:
    median = holding.value
    value: str | None = None
    if isinstance(median, float):
        value = next((s for bound, s in STYLE_THRESHOLDS_H if median < bound), "position")
    detail = {
        "median_holding_h": median,
        "thresholds_h": {s: bound for bound, s in STYLE_THRESHOLDS_H},
        "rule": "scalper < 1 h <= day < 24 h <= swing < 14 d <= position (median holding)",
    }
    return _attr("style", value, rows, as_of=as_of, detail=detail)

"""The ``risk_tolerance`` rule: a documented score from the trader's own numbers.

Equity and leverage are not in the Hyperliquid export, so the rule scores what is there
(see :func:`risk_tolerance`); every number and threshold goes into the attribute's detail.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from backend.memory.models import PersonaAttribute

__all__ = ["RISK_BUCKETS", "RISK_THRESHOLDS", "risk_tolerance"]

RISK_THRESHOLDS: dict[str, tuple[float, float]] = {
    "loss_depth": (0.01, 0.03),
    "drawdown_scale": (0.05, 0.20),
    "concentration": (0.50, 0.80),
    "frequency": (1.0, 10.0),
    "leverage": (2.0, 5.0),
}
"""Per risk component ``(a, b)``: score 0 below ``a``, 1 below ``b``, else 2 (see
:func:`_risk_tolerance`). ``frequency`` is in orders per active day: under one a day
is swing or position trading, ten or more is intraday scalping (it was 50 / 200 fills a
day until the value became orders: the three real traders' buckets are the same)."""
RISK_BUCKETS: tuple[tuple[float, str], ...] = ((0.75, "conservative"), (1.25, "moderate"))
"""Mean component score below the bound -> bucket; otherwise ``aggressive``."""


def _score(value: float, bounds: tuple[float, float]) -> int:
    return 0 if value < bounds[0] else 1 if value < bounds[1] else 2


def risk_tolerance(
    fills: pd.DataFrame, closing: pd.DataFrame, attrs: dict[str, PersonaAttribute]
) -> tuple[str | None, dict[str, Any]]:
    """``(bucket, detail)`` from the trader's fills, closing fills and the attributes
    already computed (``max_drawdown``, ``preferred_assets``, ``trade_frequency``,
    ``leverage``); ``(None, {})`` without closing fills.

    Mean of component scores (0 low, 1 mid, 2 high; :data:`RISK_THRESHOLDS`):

    - ``loss_depth``: median loss of losing closes / their notional (the adverse move the
      trader sits through); not scored without losing closes;
    - ``drawdown_scale``: max drawdown (USDC) / median daily traded notional (the trader's
      own scale: equity is not in the export);
    - ``concentration``: top asset's share of notional;
    - ``frequency``: orders per active day (``trade_frequency``);
    - ``leverage``: only when known (never from the Hyperliquid export).

    Bucket: mean < 0.75 conservative, < 1.25 moderate, else aggressive.
    """
    comps: dict[str, float] = {}
    pnl = closing["realized_pnl"].fillna(0.0)
    losing = closing.loc[(pnl < 0) & (closing["cost"].abs() > 0)]
    if len(losing):
        comps["loss_depth"] = float((-losing["realized_pnl"] / losing["cost"].abs()).median())
    daily = fills["cost"].abs().groupby(fills["datetime"].dt.floor("D")).sum()
    dd = attrs["max_drawdown"].value
    if isinstance(dd, float) and len(daily) and float(daily.median()) > 0:
        comps["drawdown_scale"] = dd / float(daily.median())
    shares = attrs["preferred_assets"].detail.get("shares") or {}
    if shares:
        comps["concentration"] = float(next(iter(shares.values())))
    freq = attrs["trade_frequency"].value
    if isinstance(freq, float):
        comps["frequency"] = freq
    lev = attrs["leverage"].value
    if isinstance(lev, int | float):
        comps["leverage"] = float(lev)
    if not comps or closing.empty:
        return None, {}
    scores = {k: _score(v, RISK_THRESHOLDS[k]) for k, v in comps.items()}
    mean = sum(scores.values()) / len(scores)
    value = next((b for bound, b in RISK_BUCKETS if mean < bound), "aggressive")
    detail = {
        "components": {
            k: {
                "value": round(comps[k], 6),
                "score": scores[k],
                "thresholds": list(RISK_THRESHOLDS[k]),
            }
            for k in comps
        },
        "score": round(mean, 4),
        "buckets": {"conservative": "< 0.75", "moderate": "< 1.25", "aggressive": ">= 1.25"},
        "rule": "mean of component scores (0 below first threshold, 1 below second, else 2)",
    }
    return value, detail

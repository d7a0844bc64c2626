"""Persona predictive validity: does a trader's profile predict their next 30 days?

For each trader of a fills file and each evaluation time ``t`` (the first instant of
every calendar month, UTC, strictly after the trader's first fill and before their last
one; or every ``every_days`` days from the first fill), three predictors each give a
profile built only from fills at or before ``t``:

- ``persona``: the trader's fills up to ``t`` (all of them);
- ``recent7d``: the trader's fills in ``(t - 7 days, t]`` only (none -> no prediction);
- ``prior``: the population average of the OTHER traders' profiles at ``t`` (those with
  a fill at or before ``t``): asset shares and long share averaged, median notional and
  median holding time averaged in log space (geometric mean). When no other trader has
  a fill by ``t`` (always so in a single-trader file), the prior is the profile of the
  pooled fills of the whole file up to ``t`` — the population of fills available, which
  is then the trader's own history (so there ``prior`` = ``persona``); such points are
  counted in ``prior_pooled_points``.

A profile is :func:`~backend.agents.memory.compute_persona_attributes` of those fills —
exactly the fill attributes ``PersonaManager.build_from_fills`` stores — read as four
predictions: the top-3 assets of ``preferred_assets`` (by share of traded notional,
ties by name), ``long_share`` (long share of opening notional), the median fill notional
(``position_notional``) and the holding-period bucket (``style`` thresholds on the
median FIFO holding time: scalper < 1 h <= day < 24 h <= swing < 14 d <= position).

They are scored against the trader's real fills in ``(t, t + 30 days]`` (points with no
fill there are skipped, and a time whose 30 days end after the file's last fill, of any
trader, is not scored but listed in ``cut_points``: its future is not in the file). Per
point:

- ``top3_asset_hit_rate`` = share of the future traded notional (sum of ``|cost|``)
  whose base asset is among the predicted top 3 (0..1; notional-weighted, so a trader's
  main market counts most);
- ``top3_asset_overlap`` = ``|predicted top 3 ∩ actual top 3| / min(3, actual assets)``;
- ``long_share_mae`` = ``|predicted - actual|`` long share of the future opening
  notional (undefined when the future opens nothing);
- ``median_notional_abs_log_error`` = ``|ln(predicted / actual)|`` of the median fill
  notional (``ln 2`` = 0.69 is a factor of two);
- ``holding_bucket_accuracy`` = 1 if the bucket of the median holding time of the
  closes in the horizon (FIFO lots from all the trader's fills up to ``t + 30 days``, so
  positions opened before ``t`` have known ages) equals the predicted one, else 0.

Each metric is averaged over the points where both sides define it. Strictly causal:
every predictor reads only rows with ``datetime <= t``; the future fills are only the
target (tests/eval/test_persona_validity.py mutates them and checks that no prediction
moves).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd

from backend.agents.memory import (
    STYLE_THRESHOLDS_H,
    asset_shares,
    compute_persona_attributes,
    holding_samples,
    normalize_fills_frame,
    opening_notional,
    traded_fills,
)
from backend.data.fills import fills_to_frame
from backend.data.models import Fill
from backend.eval.models import MethodScore, PersonaMethod
from backend.types import to_utc

__all__ = [
    "METHODS",
    "METRICS",
    "Outcome",
    "ProfileView",
    "evaluate_persona_validity",
    "evaluation_times",
    "holding_bucket",
    "outcome_after",
    "population_view",
    "predict",
    "profile_view",
    "score_point",
]

METHODS: tuple[PersonaMethod, ...] = ("persona", "prior", "recent7d")
METRICS: tuple[str, ...] = (
    "top3_asset_hit_rate",
    "top3_asset_overlap",
    "long_share_mae",
    "median_notional_abs_log_error",
    "holding_bucket_accuracy",
)


def holding_bucket(hours: float | None) -> str | None:
    """``style`` bucket of a median holding time in hours (module doc); None for None."""
    if hours is None or not math.isfinite(hours):
        return None
    return next((s for bound, s in STYLE_THRESHOLDS_H if hours < bound), "position")


def _top3(shares: dict[str, float]) -> list[str]:
    return [a for a, _ in sorted(shares.items(), key=lambda kv: (-kv[1], kv[0]))[:3]]


@dataclass(frozen=True)
class ProfileView:
    """What a profile predicts: asset shares of traded notional (0..1, summing to 1),
    long share of opening notional (0..1), median fill notional (quote currency) and
    median holding time (hours); None where the fills give no evidence."""

    asset_shares: dict[str, float]
    long_share: float | None
    median_notional: float | None
    holding_hours: float | None

    @property
    def top3(self) -> list[str]:
        return _top3(self.asset_shares)

    @property
    def bucket(self) -> str | None:
        return holding_bucket(self.holding_hours)


@dataclass(frozen=True)
class Outcome(ProfileView):
    """What the trader actually did in ``(t, t + horizon]``: the fields and units of
    :class:`ProfileView` over the fills they made (not dust conversions, as the profile
    reads them; ``holding_hours`` = median over the closes in the horizon), and
    ``fills``, how many."""

    fills: int


def profile_view(frame: pd.DataFrame, *, as_of: datetime) -> ProfileView | None:
    """The predictions of the profile built from the rows of ``frame`` (one trader's
    normalised fills, or a pool) with ``datetime <= as_of``; None without such rows."""
    fence = pd.Timestamp(to_utc(as_of))
    known = frame.loc[frame["datetime"] <= fence]
    if known.empty:
        return None
    attrs = compute_persona_attributes(known, as_of=to_utc(as_of))
    notional = attrs["position_notional"].value
    hours = attrs["holding_period"].value
    long_share = attrs["long_share"].value
    return ProfileView(
        asset_shares=dict(attrs["preferred_assets"].detail.get("shares", {})),
        long_share=float(long_share) if long_share is not None else None,
        median_notional=float(notional["median"]) if isinstance(notional, dict) else None,
        holding_hours=float(hours) if hours is not None else None,
    )


def _log_mean(values: list[float]) -> float | None:
    positive = [v for v in values if v > 0]
    return float(math.exp(np.mean(np.log(positive)))) if positive else None


def population_view(views: Sequence[ProfileView]) -> ProfileView:
    """The population average of ``views`` (module doc: arithmetic for shares, geometric
    for notional and holding time). Raises ValueError for no views."""
    if not views:
        raise ValueError("no profiles to average")
    assets = sorted({a for v in views for a in v.asset_shares})
    shares = {a: float(np.mean([v.asset_shares.get(a, 0.0) for v in views])) for a in assets}
    longs = [v.long_share for v in views if v.long_share is not None]
    return ProfileView(
        asset_shares=shares,
        long_share=float(np.mean(longs)) if longs else None,
        median_notional=_log_mean([v.median_notional for v in views if v.median_notional]),
        holding_hours=_log_mean([v.holding_hours for v in views if v.holding_hours]),
    )


def outcome_after(frame: pd.DataFrame, *, t: datetime, horizon: timedelta) -> Outcome | None:
    """The trader's real behaviour in ``(t, t + horizon]`` (``frame``: one trader's
    normalised fills); None when there is no fill in it."""
    start, stop = pd.Timestamp(to_utc(t)), pd.Timestamp(to_utc(t + horizon))
    window = frame.loc[(frame["datetime"] > start) & (frame["datetime"] <= stop)]
    # read as compute_persona_attributes reads them for the profile: shares, size and
    # direction of the fills the trader made, holding times of every close (a dust
    # conversion's included, as the positions move with it)
    future = traded_fills(window)
    if future.empty:
        return None
    long_, short = opening_notional(future)
    opened = float(long_.sum() + short.sum())
    upto = frame.loc[frame["datetime"] <= stop].reset_index(drop=True)
    hours, ids, _ = holding_samples(upto)
    in_horizon = set(window["id"])
    closes = [h for h, i in zip(hours, ids, strict=True) if i in in_horizon]
    return Outcome(
        asset_shares=asset_shares(future),
        long_share=float(long_.sum()) / opened if opened > 0 else None,
        median_notional=float(future["cost"].abs().median()),
        holding_hours=float(np.median(closes)) if closes else None,
        fills=len(future),
    )


def score_point(pred: ProfileView, actual: Outcome) -> dict[str, float | None]:
    """The per-point metrics of :data:`METRICS` (module doc); None where undefined."""
    out: dict[str, float | None] = dict.fromkeys(METRICS)
    if actual.asset_shares and pred.asset_shares:
        top3 = pred.top3
        out["top3_asset_hit_rate"] = sum(actual.asset_shares.get(a, 0.0) for a in top3)
        wanted = min(3, len(actual.asset_shares))
        out["top3_asset_overlap"] = len(set(top3) & set(actual.top3)) / wanted
    if pred.long_share is not None and actual.long_share is not None:
        out["long_share_mae"] = abs(pred.long_share - actual.long_share)
    if pred.median_notional and actual.median_notional:
        out["median_notional_abs_log_error"] = abs(
            math.log(pred.median_notional / actual.median_notional)
        )
    if pred.bucket is not None and actual.bucket is not None:
        out["holding_bucket_accuracy"] = float(pred.bucket == actual.bucket)
    return out


def evaluation_times(
    first: datetime, last: datetime, *, every_days: int | None = None
) -> list[datetime]:
    """Times ``t`` with ``first < t < last``: calendar month starts (UTC midnight), or
    ``first + k * every_days`` days (k >= 1) when ``every_days`` is given."""
    lo, hi = pd.Timestamp(to_utc(first)), pd.Timestamp(to_utc(last))
    if every_days is not None:
        if every_days < 1:
            raise ValueError(f"every_days must be >= 1, got {every_days}")
        stamps = pd.date_range(lo + pd.Timedelta(days=every_days), hi, freq=f"{every_days}D")
    else:
        stamps = pd.date_range(lo.floor("D"), hi, freq="MS")
    return [s.to_pydatetime() for s in stamps if lo < s < hi]


def predict(
    method: PersonaMethod,
    frames: dict[str, pd.DataFrame],
    trader_id: str,
    t: datetime,
    *,
    recent_days: int = 7,
    pooled: pd.DataFrame | None = None,
) -> tuple[ProfileView | None, bool]:
    """``(prediction, pooled_fallback)`` of ``method`` for ``trader_id`` at ``t`` from
    ``frames`` (trader -> normalised fills); only rows with ``datetime <= t`` are read.
    ``pooled``: all traders' fills in one frame (default: concatenated ``frames``)."""
    own = frames[trader_id]
    if method == "persona":
        return profile_view(own, as_of=t), False
    if method == "recent7d":
        since = pd.Timestamp(to_utc(t - timedelta(days=recent_days)))
        return profile_view(own.loc[own["datetime"] > since], as_of=t), False
    others = [profile_view(f, as_of=t) for tid, f in sorted(frames.items()) if tid != trader_id]
    views = [v for v in others if v is not None]
    if views:
        return population_view(views), False
    if pooled is None:
        pooled = _pool(frames)
    return profile_view(pooled, as_of=t), True


def _pool(frames: dict[str, pd.DataFrame]) -> pd.DataFrame:
    joined = pd.concat(list(frames.values()), ignore_index=True)
    return joined.sort_values("timestamp", kind="stable").reset_index(drop=True)


def _mean_scores(rows: list[dict[str, float | None]], n_total: int) -> MethodScore:
    means: dict[str, float | None] = {}
    counts: dict[str, int] = {}
    for metric in METRICS:
        values = [v for r in rows if (v := r[metric]) is not None]
        counts[metric] = len(values)
        means[metric] = round(float(np.mean(values)), 4) if values else None
    return MethodScore(
        **means,
        n_points=len(rows),
        coverage=round(len(rows) / n_total, 4) if n_total else 0.0,
        n_per_metric=counts,
    )


def _points(
    frames: dict[str, pd.DataFrame],
    *,
    horizon: timedelta,
    recent_days: int,
    every_days: int | None,
    cut: list[dict[str, str]],
) -> Iterator[dict[str, Any]]:
    """The scored points; a time whose horizon ends after the data's last fill (any
    trader's) goes to ``cut`` instead: its "next 30 days" would be the hours left in the
    file (a reviewer's point 97 minutes before the file's end was scored as 30 days)."""
    pooled = _pool(frames)
    data_end = max(f["datetime"].iloc[-1] for f in frames.values()).to_pydatetime()
    for trader_id, own in sorted(frames.items()):
        times = own["datetime"]
        for t in evaluation_times(
            times.iloc[0].to_pydatetime(), times.iloc[-1].to_pydatetime(), every_days=every_days
        ):
            if t + horizon > data_end:
                cut.append({"trader_id": trader_id, "t": t.isoformat()})
                continue
            actual = outcome_after(own, t=t, horizon=horizon)
            if actual is None:
                continue
            point: dict[str, Any] = {"trader_id": trader_id, "t": t.isoformat()}
            point["future_fills"] = actual.fills
            for method in METHODS:
                view, fallback = predict(
                    method, frames, trader_id, t, recent_days=recent_days, pooled=pooled
                )
                if method == "prior":
                    point["prior_pooled"] = fallback
                point[method] = score_point(view, actual) if view is not None else None
            yield point


def evaluate_persona_validity(
    fills: Sequence[Fill],
    *,
    horizon_days: int = 30,
    recent_days: int = 7,
    every_days: int | None = None,
) -> dict[str, Any]:
    """Score the three predictors on ``fills`` (any traders; module doc). Returns
    ``{"methods": {method: MethodScore dict}, "common": ... (points where all three
    predicted), "per_trader": {trader: {method: ...}}, "points": [...],
    "prior_pooled_points", "evaluation_points", "cut_points": [{trader_id, t}] (times
    whose horizon ends after the data's last fill: not scored), "config"}``. Raises ValueError for
    non-positive ``horizon_days``/``recent_days`` or no fills."""
    if horizon_days < 1 or recent_days < 1:
        raise ValueError("horizon_days and recent_days must be >= 1")
    if not fills:
        raise ValueError("no fills to evaluate")
    table = fills_to_frame(list(fills))
    frames = {
        str(tid): normalize_fills_frame(group, source=f"fills of {tid}")
        for tid, group in table.groupby("trader_id", sort=True)
    }
    cut: list[dict[str, str]] = []
    points = list(
        _points(
            frames,
            horizon=timedelta(days=horizon_days),
            recent_days=recent_days,
            every_days=every_days,
            cut=cut,
        )
    )
    common = [p for p in points if all(p[m] is not None for m in METHODS)]

    def summary(selected: list[dict[str, Any]]) -> dict[str, Any]:
        return {
            m: _mean_scores(
                [p[m] for p in selected if p[m] is not None], len(selected)
            ).model_dump()
            for m in METHODS
        }

    return {
        "methods": summary(points),
        "common": summary(common),
        "per_trader": {
            tid: summary([p for p in points if p["trader_id"] == tid]) for tid in sorted(frames)
        },
        "evaluation_points": len(points),
        "common_points": len(common),
        "prior_pooled_points": sum(1 for p in points if p["prior_pooled"]),
        "points": points,
        "cut_points": cut,
        "config": {
            "traders": sorted(frames),
            "fills": len(table),
            "horizon_days": horizon_days,
            "recent_days": recent_days,
            "every": f"{every_days} days" if every_days is not None else "calendar month",
        },
    }

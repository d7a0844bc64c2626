"""Typed results of the evaluations (defined only here). Units: returns, drawdowns and
shares are fractions; notional in the fills' quote currency (USDC for Hyperliquid); times
are aware UTC datetimes."""

from __future__ import annotations

from typing import Literal

from pydantic import AwareDatetime, Field, field_validator

from backend.backtest.models import BacktestMetrics
from backend.types import FrozenModel, to_utc

__all__ = [
    "AblationMode",
    "ChainedMetrics",
    "MethodScore",
    "PersonaMethod",
    "WindowRun",
]

PersonaMethod = Literal["persona", "prior", "recent7d"]
"""Predictors of a trader's next 30 days (see :mod:`backend.eval.persona_validity`)."""
AblationMode = Literal["off", "persona", "persona_working", "all"]
"""Memory modes of the ablation (see :mod:`backend.eval.ablation`)."""


class MethodScore(FrozenModel):
    """One predictor's mean scores over evaluation points (metrics defined in
    :mod:`backend.eval.persona_validity`); a metric is None when no point defines it."""

    top3_asset_hit_rate: float | None
    """Mean share (0..1) of the future traded notional in the predicted top-3 assets."""
    top3_asset_overlap: float | None
    """Mean ``|predicted top-3 ∩ actual top-3| / min(3, actual assets)`` (0..1)."""
    long_share_mae: float | None
    """Mean ``|predicted - actual|`` long share of opening notional (0..1)."""
    median_notional_abs_log_error: float | None
    """Mean ``|ln(predicted / actual)|`` of the median fill notional (0 = exact; ln 2 =
    off by 2x)."""
    holding_bucket_accuracy: float | None
    """Share of points whose predicted holding-period bucket is the actual one (0..1)."""
    n_points: int = Field(ge=0)
    """Points where the method made a prediction."""
    coverage: float = Field(ge=0, le=1)
    """``n_points`` / evaluation points (a method needs fills in its look-back)."""
    n_per_metric: dict[str, int] = Field(default_factory=dict)


class WindowRun(FrozenModel):
    """One backtest of the ablation: a pair, timeframe, walk-forward window and mode."""

    pair: str
    timeframe: str
    mode: AblationMode
    window_start: AwareDatetime
    window_end: AwareDatetime
    """Bars opening in ``[window_start, window_end)``."""
    metrics: BacktestMetrics
    violations: int = Field(ge=0)
    """Decisions whose proposal broke a persona hard constraint (the manager's count)."""
    prompt_tokens_mean: float = Field(ge=0)
    episodes_in_context_mean: float = Field(ge=0)
    """Mean episodes retrieved per decision (0 unless the episodic tier is on)."""
    working_in_context_mean: float = Field(ge=0)
    """Mean working-memory snapshots retrieved per decision."""
    persona_in_context_share: float = Field(ge=0, le=1)
    """Share of decisions whose context held a persona profile."""
    run_s: float = Field(ge=0)

    _tz = field_validator("window_start", "window_end")(to_utc)


class ChainedMetrics(FrozenModel):
    """A mode's windows chained end to end (each window restarts from the capital the
    previous one ended with): compounded return, Sharpe of the concatenated bar returns,
    max drawdown of the chained curve, sums of trades and violations."""

    total_return: float
    sharpe: float
    max_drawdown: float
    """<= 0."""
    n_trades: int = Field(ge=0)
    violations: int = Field(ge=0)
    windows: int = Field(ge=0)
    prompt_tokens_mean: float = Field(ge=0)
    run_s: float = Field(ge=0)

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
    "ModeComparison",
    "PersonaMethod",
    "RunBehaviour",
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
    turnover: float = Field(ge=0)
    """Sum over bars of ``|exposure change made by fills|`` (fraction of equity; price
    drift excluded): 2.0 = twice the equity traded (see :class:`RunBehaviour`)."""
    persona_alignment: float = Field(ge=0, le=1)
    """How close the run's behaviour is to the trader's reference profile, 0..1 (higher
    is closer; :func:`backend.eval.alignment.persona_alignment`)."""
    persona_alignment_parts: dict[str, float] = Field(default_factory=dict)
    """The components defined for this run (``constraints``, ``long_share``,
    ``holding_period``, ``assets``, ``risk``), each 0..1; the alignment is their mean."""
    buy_and_hold_persona_alignment: float = Field(default=1.0, ge=0, le=1)
    """Buy-and-hold's alignment on the same window against the same reference."""
    buy_and_hold_violations: int = Field(default=0, ge=0)
    """Buy-and-hold's decisions that broke a hard constraint of the reference (its buy,
    then every bar it held a position the trader's limits exclude)."""

    _tz = field_validator("window_start", "window_end")(to_utc)


class ChainedMetrics(FrozenModel):
    """A mode's windows chained end to end (each window restarts from the capital the
    previous one ended with): compounded return, Sharpe and Sortino of the concatenated
    within-window bar returns (annualised, rf 0), max drawdown of the chained curve, sums
    of trades, violations, fees and turnover, and the decision-weighted persona alignment
    (:func:`backend.eval.ablation_summary.summarize`)."""

    total_return: float
    sharpe: float
    max_drawdown: float
    """<= 0."""
    n_trades: int = Field(ge=0)
    violations: int = Field(ge=0)
    windows: int = Field(ge=0)
    prompt_tokens_mean: float = Field(ge=0)
    run_s: float = Field(ge=0)
    sortino: float
    fees_paid: float = Field(ge=0)
    """Quote currency, on the chained capital: each window's fees scaled by the chained
    capital at its start / the initial capital (0 for buy-and-hold: no costs)."""
    turnover: float = Field(ge=0)
    """Sum of the windows' :attr:`WindowRun.turnover` (fraction of equity)."""
    persona_alignment: float = Field(ge=0, le=1)
    """Mean of the windows' alignment weighted by their decisions (0..1)."""
    persona_alignment_parts: dict[str, float] = Field(default_factory=dict)
    """Each component's decision-weighted mean over the windows that define it."""
    llm_decisions: int = Field(default=0, ge=0)
    """Decisions a chat model was asked for (0 with the RulePolicy)."""
    llm_answered_share: float | None = Field(default=None, ge=0, le=1)
    """Share of those the model answered (None when none was asked): a dead endpoint
    reads 0.0 here, never as a quiet flat curve."""
    memory_error_decisions: int = Field(default=0, ge=0)
    """Decisions at which a memory read or write failed (the decision went on)."""


class ModeComparison(FrozenModel):
    """A memory mode against ``off`` on the same windows (paired by window)."""

    sharpe_diff_chained: float
    """Chained Sharpe of the mode - that of ``off`` (the ``summary`` entries' ``sharpe``:
    each from the windows' bar returns put together)."""
    sharpe_diff: float
    """Mean over windows of (mode Sharpe - off Sharpe), each the window's annualised
    Sharpe: what :attr:`ci95` is an interval of. It can differ from
    :attr:`sharpe_diff_chained` in size and even sign (windows count equally here, bars
    there)."""
    ci95: tuple[float, float] | None
    """Percentile bootstrap 95% interval of :attr:`sharpe_diff` (windows resampled with
    replacement, 2,000 resamples, fixed seed). None below
    :data:`~backend.eval.ablation_summary.MIN_BOOTSTRAP_WINDOWS` windows: with 3 the
    percentile interval is the range of the differences whatever they are (each extreme
    is drawn three times in a row with probability 1/27 > 2.5%)."""
    windows: int = Field(ge=0)
    """Windows run in both modes."""
    max_drawdown_ratio: float | None
    """Chained max drawdown of the mode / that of ``off`` (both <= 0, so > 1 = deeper);
    None when ``off`` never drew down."""


class RunBehaviour(FrozenModel):
    """What the agent did in one run, in the terms of the persona attributes (the input
    of :func:`backend.eval.alignment.persona_alignment`)."""

    decisions: int = Field(ge=0)
    """Decisions taken (one per bar)."""
    violating_decisions: int = Field(ge=0)
    """Bar closes whose executed position broke a hard constraint of the reference
    profile (:func:`backend.eval.alignment.held_violations`; buy-and-hold: also its buy)."""
    long_share: float | None = Field(ge=0, le=1)
    """Long share of the opening notional (0..1; None when nothing was opened)."""
    holding_hours_median: float | None = Field(ge=0)
    """Median hours a closing fill held the lots it closed (FIFO, the persona's rule:
    :func:`backend.eval.alignment.agent_holding_hours`; None without a closing fill)."""
    positioned_share: float = Field(ge=0, le=1)
    """Share of bars with a non-zero position."""
    mean_abs_exposure: float | None = Field(ge=0)
    """Mean ``|exposure|`` (notional / equity) over the bars with a position (None when
    never positioned)."""
    turnover: float = Field(ge=0)
    """Sum of ``|exposure change made by fills|`` (fraction of equity)."""

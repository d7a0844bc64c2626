"""The ablation's runs put together: windows chained per mode, the summary entries and the
paired mode-vs-off comparison (the JSON of ``sentinel eval ablation`` and its HTML page
both come from here, so the page's curves are the summary's).

Units: returns, drawdowns, turnover and alignment are fractions; fees in the quote
currency; Sharpe and Sortino annualised with sqrt(bars per year), rf 0.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from backend.backtest.metrics import (
    bar_returns,
    bars_per_year,
    max_drawdown,
    sharpe_ratio,
    sortino_ratio,
)
from backend.eval.models import ChainedMetrics, ModeComparison, RunBehaviour, WindowRun

__all__ = [
    "BOOTSTRAP_RESAMPLES",
    "BOOTSTRAP_SEED",
    "MIN_BOOTSTRAP_WINDOWS",
    "ChainedCurve",
    "RunOutput",
    "chain",
    "chain_curves",
    "compare_modes",
    "group_runs",
    "paired_bootstrap",
    "summarize",
]

BOOTSTRAP_RESAMPLES = 2000
BOOTSTRAP_SEED = 20240901
MIN_BOOTSTRAP_WINDOWS = 4
"""Fewest paired windows :func:`compare_modes` gives an interval for: with n windows, the
chance that all n draws of a resample are the smallest difference is (1/n)^n, above the
2.5% tail for n <= 3, so the percentile interval is then the differences' range."""


@dataclass(frozen=True)
class RunOutput:
    """One run: its record, its curves (quote currency at each bar close, indexed by bar
    close time), its behaviour and buy-and-hold's alignment on the same window."""

    run: WindowRun
    equity: pd.Series
    buy_and_hold: pd.Series
    initial_equity: float
    episode_ids: frozenset[str] = field(default_factory=frozenset)
    behaviour: RunBehaviour | None = None
    buy_and_hold_alignment: float = 1.0
    buy_and_hold_parts: dict[str, float] = field(default_factory=dict)
    buy_and_hold_violations: int = 0


@dataclass(frozen=True)
class ChainedCurve:
    """Windows chained end to end, as growth of 1 unit of initial capital."""

    path: pd.Series
    """Chained equity / initial capital at each bar close (the windows' indexes)."""
    returns: np.ndarray
    """The within-window bar returns, concatenated (no return across a window seam)."""
    window_capital: tuple[float, ...]
    """Chained capital (fraction of initial) at each window's start."""
    total_return: float


def chain_curves(curves: Sequence[pd.Series], *, initial: float) -> ChainedCurve:
    """Chain ``curves`` (quote currency, each starting from ``initial``, in time order):
    each is rescaled to start from the capital the previous one ended with. A window that
    ends with the account ruined (equity <= 0) ends the chain's returns: the later windows
    are that capital, flat, with no bar return (as in one run, :func:`bar_returns`;
    rescaled by a negative capital, their gains had read as losses)."""
    capital = 1.0
    pieces: list[pd.Series] = []
    returns: list[np.ndarray] = []
    starts: list[float] = []
    for curve in curves:
        values = np.asarray(curve, dtype=np.float64) / initial
        starts.append(capital)
        if capital <= 0:  # ruined in an earlier window
            pieces.append(pd.Series(capital, index=curve.index, dtype=np.float64))
            continue
        pieces.append(pd.Series(values * capital, index=curve.index))
        returns.append(bar_returns(values))
        capital *= float(values[-1]) if values.size else 1.0
    path = pd.concat(pieces) if pieces else pd.Series(dtype=np.float64)
    flat = np.concatenate(returns) if returns else np.zeros(0, dtype=np.float64)
    return ChainedCurve(path, flat, tuple(starts), capital - 1.0 if pieces else 0.0)


def chain(
    curves: Sequence[pd.Series], *, initial: float, timeframe: str
) -> tuple[float, float, float]:
    """``(total return, Sharpe, max drawdown)`` of :func:`chain_curves`: Sharpe from the
    concatenated within-window bar returns (annualised, rf 0,
    :func:`~backend.backtest.metrics.sharpe_ratio`), drawdown of the chained path."""
    chained = chain_curves(curves, initial=initial)
    if chained.path.empty:
        return 0.0, 0.0, 0.0
    sharpe = sharpe_ratio(chained.returns, periods_per_year=bars_per_year(timeframe))
    return chained.total_return, sharpe, max_drawdown(chained.path.to_numpy(), initial=1.0)


def group_runs(outputs: Sequence[RunOutput]) -> dict[tuple[str, str, str], list[RunOutput]]:
    """``(pair, timeframe, mode)`` -> its runs in window order, keys sorted."""
    groups: dict[tuple[str, str, str], list[RunOutput]] = {}
    for o in outputs:
        groups.setdefault((o.run.pair, o.run.timeframe, o.run.mode), []).append(o)
    return {k: sorted(v, key=lambda o: o.run.window_start) for k, v in sorted(groups.items())}


def _weighted(values: Sequence[tuple[float, float]]) -> float:
    """Mean of ``(value, weight)`` weighted (unweighted when every weight is 0)."""
    weights = np.array([w for _, w in values], dtype=np.float64)
    vals = np.array([v for v, _ in values], dtype=np.float64)
    if vals.size == 0:
        return 1.0
    return float(np.average(vals, weights=weights) if weights.sum() > 0 else vals.mean())


def _alignment(
    scored: Sequence[tuple[float, dict[str, float], float]],
) -> tuple[float, dict[str, float]]:
    """Decision-weighted alignment and parts of ``(alignment, parts, decisions)`` rows."""
    total = _weighted([(a, w) for a, _, w in scored])
    names = [n for _, parts, _ in scored for n in parts]
    parts = {
        n: round(_weighted([(p[n], w) for _, p, w in scored if n in p]), 4)
        for n in dict.fromkeys(names)
    }
    return round(min(1.0, max(0.0, total)), 4), parts


def _failures(runs: Sequence[RunOutput]) -> dict[str, Any]:
    """The windows' LLM and memory failures summed (:class:`ChainedMetrics` fields)."""
    asked = sum(o.run.metrics.llm_decisions for o in runs)
    answered = sum(
        round((o.run.metrics.llm_answered_share or 0.0) * o.run.metrics.llm_decisions) for o in runs
    )
    return {
        "llm_decisions": asked,
        "llm_answered_share": round(answered / asked, 4) if asked else None,
        "memory_error_decisions": sum(o.run.metrics.memory_error_decisions for o in runs),
    }


def _entry(
    chained: ChainedCurve,
    timeframe: str,
    *,
    alignment: tuple[float, dict[str, float]],
    **counts: Any,
) -> dict[str, Any]:
    per_year = bars_per_year(timeframe)
    empty = chained.path.empty
    return ChainedMetrics(
        total_return=round(chained.total_return, 6),
        sharpe=round(sharpe_ratio(chained.returns, periods_per_year=per_year), 4),
        sortino=round(sortino_ratio(chained.returns, periods_per_year=per_year), 4),
        max_drawdown=round(0.0 if empty else max_drawdown(chained.path.to_numpy(), initial=1.0), 6),
        persona_alignment=alignment[0],
        persona_alignment_parts=alignment[1],
        **counts,
    ).model_dump()


def summarize(outputs: Sequence[RunOutput]) -> dict[str, Any]:
    """pair -> timeframe -> mode (and ``buy_and_hold``) -> :class:`ChainedMetrics` dict.

    Each mode's windows are chained (:func:`chain_curves`); ``persona_alignment`` is the
    mean of the windows' alignment weighted by their decisions (each part: over the
    windows that define it). ``buy_and_hold`` chains the buy-and-hold curves of the first
    mode's windows (the same bars in every mode) and scores buy-and-hold's behaviour
    against the same reference profiles."""
    out: dict[str, Any] = {}
    for (pair, tf, mode), runs in group_runs(outputs).items():
        initial = runs[0].initial_equity
        chained = chain_curves([o.equity for o in runs], initial=initial)
        fees = sum(
            o.run.metrics.fees_paid * c for o, c in zip(runs, chained.window_capital, strict=True)
        )
        by_tf = out.setdefault(pair, {}).setdefault(tf, {})
        decisions = [float(o.run.metrics.n_decisions) for o in runs]
        by_tf[mode] = _entry(
            chained,
            tf,
            alignment=_alignment(
                [
                    (o.run.persona_alignment, o.run.persona_alignment_parts, d)
                    for o, d in zip(runs, decisions, strict=True)
                ]
            ),
            n_trades=sum(o.run.metrics.n_trades for o in runs),
            violations=sum(o.run.violations for o in runs),
            windows=len(runs),
            prompt_tokens_mean=round(float(np.mean([o.run.prompt_tokens_mean for o in runs])), 2),
            run_s=round(sum(o.run.run_s for o in runs), 2),
            fees_paid=round(fees, 2),
            turnover=round(sum(o.run.turnover for o in runs), 4),
            **_failures(runs),
        )
        if "buy_and_hold" not in by_tf:
            held = chain_curves([o.buy_and_hold for o in runs], initial=initial)
            by_tf["buy_and_hold"] = _entry(
                held,
                tf,
                alignment=_alignment(
                    [
                        (o.buy_and_hold_alignment, o.buy_and_hold_parts, d)
                        for o, d in zip(runs, decisions, strict=True)
                    ]
                ),
                n_trades=0,
                violations=sum(o.buy_and_hold_violations for o in runs),
                windows=len(runs),
                prompt_tokens_mean=0.0,
                run_s=0.0,
                fees_paid=0.0,
                turnover=float(len(runs)),
            )
    return out


def paired_bootstrap(
    diffs: Sequence[float], *, resamples: int = BOOTSTRAP_RESAMPLES, seed: int = BOOTSTRAP_SEED
) -> tuple[float, float]:
    """Percentile 95% interval of the mean of ``diffs`` (one per window), resampling the
    windows with replacement ``resamples`` times with a fixed ``seed`` (numpy's PCG64).
    With few windows the interval is weak (it cannot be wider than the diffs' range; one
    window gives ``(d, d)``). ``(0, 0)`` without diffs."""
    values = np.asarray(diffs, dtype=np.float64)
    if values.size == 0:
        return 0.0, 0.0
    rng = np.random.default_rng(seed)
    means = values[rng.integers(0, values.size, size=(resamples, values.size))].mean(axis=1)
    lo, hi = np.percentile(means, [2.5, 97.5])
    return float(lo), float(hi)


def compare_modes(outputs: Sequence[RunOutput], summary: dict[str, Any]) -> dict[str, Any]:
    """pair -> timeframe -> ``"<mode>_vs_off"`` -> :class:`ModeComparison` dict, for each
    memory mode run together with ``off`` (paired by window start; the per-window Sharpe
    is the engine's of that window; the chained Sharpe difference and the drawdown ratio
    use ``summary``'s chained values; no interval below :data:`MIN_BOOTSTRAP_WINDOWS`)."""
    groups = group_runs(outputs)
    out: dict[str, Any] = {}
    for (pair, tf, mode), runs in groups.items():
        off = groups.get((pair, tf, "off"))
        if mode == "off" or off is None:
            continue
        base = {o.run.window_start: o.run.metrics.sharpe for o in off}
        diffs = [o.run.metrics.sharpe - base[o.run.window_start] for o in runs
                 if o.run.window_start in base]  # fmt: skip
        lo, hi = paired_bootstrap(diffs)
        entries = summary[pair][tf]
        mdd, off_mdd = (entries[m]["max_drawdown"] for m in (mode, "off"))
        out.setdefault(pair, {}).setdefault(tf, {})[f"{mode}_vs_off"] = ModeComparison(
            sharpe_diff_chained=round(entries[mode]["sharpe"] - entries["off"]["sharpe"], 4),
            sharpe_diff=round(float(np.mean(diffs)) if diffs else 0.0, 4),
            ci95=(round(lo, 4), round(hi, 4)) if len(diffs) >= MIN_BOOTSTRAP_WINDOWS else None,
            windows=len(diffs),
            max_drawdown_ratio=round(mdd / off_mdd, 4) if off_mdd < 0 else None,
        ).model_dump(mode="json")
    return out

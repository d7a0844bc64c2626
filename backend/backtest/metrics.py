"""Backtest metrics (fractions, not percent), from the equity curve marked at bar closes.

Definitions (``E_0 .. E_{n-1}`` = equity at the n bar closes, ``E_0`` = the initial
equity since nothing is filled before the second bar's open):

* bar returns ``r_i = E_i / E_{i-1} - 1`` for ``i = 1 .. n-1`` while ``E_{i-1} > 0`` (the
  engine closes the position and stops the run once marked equity is <= 0: the account
  is ruined, a loud warning, and earns no further return);
* ``total_return = E_{n-1} / initial_equity - 1``;
* ``cagr = (1 + total_return) ** (1 / years) - 1`` with ``years`` = calendar time from the
  first bar's open to the last bar's close / 365.25 days (-1 if equity is gone; it
  saturates at the largest float when a window is too short to annualise);
* ``bars_per_year = 365.25 * 86400 / timeframe_seconds`` (crypto trades 24/7);
* ``sharpe = mean(r) / std(r, ddof=1) * sqrt(bars_per_year)``, risk-free rate 0
  (Sharpe 1994, "The Sharpe Ratio"; annualised by the square-root-of-time rule, Lo 2002);
* ``sortino = mean(r) / DD * sqrt(bars_per_year)`` with the target downside deviation
  ``DD = sqrt(mean(min(r_i, 0) ** 2))`` over ALL n-1 returns, target 0 (Sortino & Price
  1994; the mean is over every period, not only losing ones);
  both ratios are 0.0 when undefined (fewer than 2 returns, zero deviation);
* ``max_drawdown = min_i(E_i / max_{j<=i} E_j - 1)`` (<= 0; the running max includes
  ``initial_equity``), the same for buy-and-hold;
* ``n_trades`` = positions closed: rows of ``trades.csv`` with ``closes_position``; a
  position reduced in steps is one trade (freqtrade's convention), and one still open at
  the end is not counted; ``win_rate`` = those positions whose PnL (the sum of their
  rows, grouped by ``side`` and ``entry_time``) is > 0, over ``n_trades`` (0 without);
* ``exposure`` = share of bar closes with a non-zero position;
* ``constraint_violations`` = decision records with a non-empty ``violations`` list;
* ``llm_decisions`` = records whose proposal a chat model was asked for
  (``proposed.model``), ``llm_answered_share`` = the share of those with no
  ``proposed.error`` (None without any), ``llm_first_error`` = the first such error
  (:func:`llm_usage`).
"""

from __future__ import annotations

import math
import sys
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import NamedTuple

import numpy as np
import pandas as pd

from backend.backtest.models import WARMING_UP, BacktestMetrics, DecisionRecord, TradeRecord
from backend.data import timeframe_seconds

__all__ = [
    "SECONDS_PER_YEAR",
    "LLMUsage",
    "bar_returns",
    "bars_per_year",
    "below_share",
    "cagr",
    "closed_positions",
    "compute_metrics",
    "dependency_failure",
    "llm_usage",
    "max_drawdown",
    "memory_warning",
    "ruin_warning",
    "run_warning",
    "share_text",
    "sharpe_ratio",
    "sortino_ratio",
    "warmup_decisions",
]

SECONDS_PER_YEAR = 365.25 * 86_400
_MAX_LOG = math.log(sys.float_info.max)


def bars_per_year(timeframe: str) -> float:
    """Bars in a 365.25-day year of continuous trading (8766 for ``1h``)."""
    return SECONDS_PER_YEAR / timeframe_seconds(timeframe)


def bar_returns(equity: pd.Series | np.ndarray) -> np.ndarray:
    """Simple returns between consecutive points of ``equity`` (length n-1), up to the
    first point at or below 0: a ruined account earns no further return (a ratio of two
    negative equities, e.g. -990 -> -2,976 when the position is closed, is no +200%)."""
    values = np.asarray(equity, dtype=np.float64)
    if values.size < 2:
        return np.zeros(0, dtype=np.float64)
    gone = np.flatnonzero(values[:-1] <= 0)
    stop = int(gone[0]) if gone.size else values.size - 1
    return values[1 : stop + 1] / values[:stop] - 1.0


def sharpe_ratio(returns: np.ndarray, *, periods_per_year: float) -> float:
    """``mean / sample std (ddof=1) * sqrt(periods_per_year)``, rf = 0; 0.0 if undefined."""
    if returns.size < 2:
        return 0.0
    std = float(np.std(returns, ddof=1))
    if not math.isfinite(std) or std <= 0:
        return 0.0
    return float(np.mean(returns)) / std * math.sqrt(periods_per_year)


def sortino_ratio(returns: np.ndarray, *, periods_per_year: float) -> float:
    """``mean / sqrt(mean(min(r, 0)^2)) * sqrt(periods_per_year)``, target 0; 0.0 if
    undefined (fewer than 2 returns or no losing period)."""
    if returns.size < 2:
        return 0.0
    downside = math.sqrt(float(np.mean(np.minimum(returns, 0.0) ** 2)))
    if downside <= 0:
        return 0.0
    return float(np.mean(returns)) / downside * math.sqrt(periods_per_year)


def max_drawdown(equity: pd.Series | np.ndarray, *, initial: float | None = None) -> float:
    """Deepest ``equity / running max - 1`` (a fraction <= 0); ``initial`` seeds the max."""
    values = np.asarray(equity, dtype=np.float64)
    if values.size == 0:
        return 0.0
    peaks = np.maximum.accumulate(values)
    if initial is not None:
        peaks = np.maximum(peaks, initial)
    return float(min(0.0, float(np.min(values / peaks - 1.0))))


def cagr(total_return: float, *, start: datetime, end: datetime) -> float:
    """Compound annual growth over calendar time ``end - start`` (365.25-day years)."""
    years = (end - start).total_seconds() / SECONDS_PER_YEAR
    if years <= 0:
        return 0.0
    if total_return <= -1.0:
        return -1.0
    exponent = math.log1p(total_return) / years
    if exponent >= _MAX_LOG:  # too short a window to annualise: saturate, stay finite
        return sys.float_info.max
    return math.expm1(exponent)


class LLMUsage(NamedTuple):
    """How a run's chat model did: decisions asked of it, answered usably, first error."""

    asked: int
    answered: int
    first_error: str | None

    @property
    def share(self) -> float | None:
        """``answered / asked`` (0..1), None when nothing was asked."""
        return self.answered / self.asked if self.asked else None

    def merge(self, other: LLMUsage) -> LLMUsage:
        return LLMUsage(
            self.asked + other.asked,
            self.answered + other.answered,
            self.first_error if self.first_error is not None else other.first_error,
        )

    def warning(self, *, min_share: float) -> str | None:
        """One line when the model answered less than ``min_share`` of the decisions it
        was asked for (e.g. ``"the LLM answered 0 of 24 decisions (0%); first error:
        HTTP 500 from gemma"``), else None."""
        share = self.share
        if share is None or not below_share(self.answered, self.asked, min_share=min_share):
            return None
        return (
            f"the LLM answered {self.answered} of {self.asked} decisions "
            f"({share_text(share, against=min_share)}, below {min_share:.0%}); "
            f"first error: {self.first_error}"
        )


def share_text(share: float, *, against: float) -> str:
    """``share`` (0..1) as a percent with the fewest decimals (0 to 4) that do not write a
    share below ``against`` as ``against`` itself: 949 of 1000 against 0.95 is "94.9%",
    not "95%" (a reviewer's "95%, below 95%")."""
    for digits in range(4):
        text = f"{share:.{digits}%}"
        if share >= against or text != f"{against:.{digits}%}":
            return text
    return f"{share:.4%}"


def below_share(worked: int, asked: int, *, min_share: float) -> bool:
    """Whether a dependency worked at less than ``min_share`` (0..1) of the ``asked``
    calls (never when none was): the one test of the run's warnings and exit 3, compared
    as a share (``failed > (1 - 0.9) * n`` is true at exactly 10%, a float's error)."""
    return asked > 0 and worked / asked < min_share


def _llm_usage_of(metrics: BacktestMetrics) -> LLMUsage:
    """The :class:`LLMUsage` a run's metrics hold (``asked`` 0 without a chat model)."""
    share = metrics.llm_answered_share
    answered = round(share * metrics.llm_decisions) if share is not None else 0
    asked = metrics.llm_decisions if share is not None else 0
    return LLMUsage(asked, answered, metrics.llm_first_error)


def llm_usage(decisions: Iterable[DecisionRecord]) -> LLMUsage:
    """The :class:`LLMUsage` of ``decisions`` (in time order), from their proposals."""
    asked = answered = 0
    first: str | None = None
    for record in decisions:
        if record.proposed.model is None:
            continue
        asked += 1
        if record.proposed.error is None:
            answered += 1
        elif first is None:
            first = record.proposed.error
    return LLMUsage(asked, answered, first)


def closed_positions(trades: Iterable[TradeRecord]) -> list[float]:
    """The PnL (quote currency) of each position the ``trades`` rows close, in order of
    closing: the sum of the rows of one position (:attr:`TradeRecord.position_key`) up to
    its row with ``closes_position``. Rows of a position still open at the end are left
    out (module doc)."""
    open_pnl: dict[tuple[str, str, datetime], float] = {}
    closed: list[float] = []
    for trade in trades:
        key = trade.position_key
        pnl = open_pnl.pop(key, 0.0) + trade.pnl
        if trade.closes_position:
            closed.append(pnl)
        else:
            open_pnl[key] = pnl
    return closed


def compute_metrics(
    equity: pd.Series,
    *,
    buy_and_hold: pd.Series,
    exposure: pd.Series,
    trades: Sequence[TradeRecord],
    decisions: Sequence[DecisionRecord],
    timeframe: str,
    initial_equity: float,
    fees_paid: float,
    start: datetime,
    end: datetime,
    missing_candles: int = 0,
    memory_writes: tuple[int, int] = (0, 0),
) -> BacktestMetrics:
    """All :class:`BacktestMetrics` of one run (definitions in the module doc).

    ``equity``/``buy_and_hold``: quote currency at each bar close; ``exposure``: signed
    notional / equity at each bar close; ``start``/``end``: first bar open, last bar close;
    ``missing_candles``: candles absent inside the window; ``memory_writes``: the
    memory's writes ``(asked, failed)`` (``MemoryWriter.stats``).
    """
    per_year = bars_per_year(timeframe)
    returns = bar_returns(equity)
    final = float(equity.iloc[-1]) if len(equity) else initial_equity
    total = final / initial_equity - 1.0
    bh = np.asarray(buy_and_hold, dtype=np.float64)
    positions = closed_positions(trades)
    wins = sum(1 for pnl in positions if pnl > 0)
    held = np.asarray(exposure, dtype=np.float64) != 0
    usage = llm_usage(decisions)
    refused = (  # read only of a run that never traded nor held (see _refusal)
        [(r, why) for r in decisions if (why := _refusal(r)) is not None]
        if not trades and not held.any()
        else []
    )
    return BacktestMetrics(
        start=start,
        end=end,
        total_return=total,
        cagr=cagr(total, start=start, end=end),
        sharpe=sharpe_ratio(returns, periods_per_year=per_year),
        sortino=sortino_ratio(returns, periods_per_year=per_year),
        max_drawdown=max_drawdown(equity, initial=initial_equity),
        win_rate=wins / len(positions) if positions else 0.0,
        exposure=float(held.mean()) if held.size else 0.0,
        n_trades=len(positions),
        n_decisions=len(decisions),
        buy_and_hold_return=float(bh[-1] / bh[0] - 1.0) if bh.size else 0.0,
        buy_and_hold_max_drawdown=max_drawdown(bh),
        fees_paid=fees_paid,
        final_equity=final,
        constraint_violations=sum(1 for record in decisions if record.violations),
        refused_proposals=len(refused),
        first_refusal=refused[0][1] if refused else None,
        llm_decisions=usage.asked,
        llm_answered_share=usage.share,
        llm_first_error=usage.first_error,
        memory_error_decisions=sum(1 for record in decisions if record.memory_errors),
        memory_first_error=next((r.memory_errors[0] for r in decisions if r.memory_errors), None),
        missing_candles=missing_candles,
        memory_writes=memory_writes[0],
        memory_writes_failed=memory_writes[1],
        warmup_decisions=warmup_decisions(decisions),
    )


def warmup_decisions(records: Sequence[DecisionRecord]) -> int:
    """How many of ``records`` are holds because the features had too little history
    (:data:`~backend.backtest.models.WARMING_UP`)."""
    return sum(
        1
        for r in records
        if r.decision.action == "hold" and r.decision.rationale.startswith(WARMING_UP)
    )


def run_warning(metrics: BacktestMetrics, *, min_share: float) -> str | None:
    """The run's warnings on one line, or None: the LLM's (:meth:`LLMUsage.warning`), the
    memory's (failed reads or writes at any decision: :func:`memory_warning`) and a
    ruined account (:func:`ruin_warning`: marked equity reached <= 0 at a close)."""
    found = [_llm_usage_of(metrics).warning(min_share=min_share)]
    found.append(memory_warning(metrics))
    found.append(data_warning(metrics))
    found.append(constraint_warning(metrics))
    if metrics.ruined_at is not None or metrics.final_equity <= 0:
        found.append(ruin_warning(metrics))
    said = [w for w in found if w]
    return "; ".join(said) if said else None


def dependency_failure(metrics: BacktestMetrics, *, min_share: float) -> str | None:
    """Why the run did not measure what it was asked to, or None: its chat model answered
    less than ``min_share`` (0..1, ``llm.min_answered_share``) of the decisions asked of
    it, or its memory worked at less than ``min_share`` of the decisions or of its
    writes (a store that fails at every call). The same words as :func:`run_warning`'s,
    which also says what is no dependency's failure (data gaps, refused proposals, a
    ruined account).
    The CLI exits 3 on it, after writing every output."""
    found = [_llm_usage_of(metrics).warning(min_share=min_share)]
    n = metrics.n_decisions
    writes, failed = metrics.memory_writes, metrics.memory_writes_failed
    if below_share(n - metrics.memory_error_decisions, n, min_share=min_share) or below_share(
        writes - failed, writes, min_share=min_share
    ):
        found.append(memory_warning(metrics))
    said = [w for w in found if w]
    return "; ".join(said) if said else None


def ruin_warning(metrics: BacktestMetrics) -> str:
    """``"the account was ruined at 2022-05-09T03:00:00+00:00: marked equity <= 0; the
    position was closed at the next open and the agent decided no more (final equity
    8,812.90)"``: said whether or not the equity came back above 0 at that open."""
    when = metrics.ruined_at.isoformat() if metrics.ruined_at is not None else "a close"
    last = metrics.ruined_at is not None and metrics.ruined_at >= metrics.end
    how = (
        "the position was only marked (it was the last bar)"
        if last
        else "the position was closed at the next open and the agent decided no more"
    )
    return (
        f"the account was ruined at {when}: marked equity <= 0; {how} (final equity "
        f"{metrics.final_equity:,.2f} quote)"
    )


def data_warning(metrics: BacktestMetrics) -> str | None:
    """What the data kept the agent from doing, or None: ``"3 candles are missing inside
    the window ...; 720 of 744 decisions were holds while the features warmed up ..."``
    (a run that could not trade must not pass as a quiet +0.00%)."""
    said = []
    if metrics.missing_candles:
        said.append(
            f"{metrics.missing_candles} candles are missing inside the window (gaps in the "
            "data; `sentinel data check` lists them): the agent decided only at the "
            f"{metrics.n_decisions} there are"
        )
    if metrics.warmup_decisions:
        said.append(
            f"{metrics.warmup_decisions} of {metrics.n_decisions} decisions were holds while "
            "the features warmed up (they need a history of candles before the first "
            "decision): start the window later or give the data earlier candles"
        )
    return "; ".join(said) if said else None


def _refusal(record: DecisionRecord) -> str | None:
    """Why a position the policy wanted became none (from flat: with a position held, a
    hold keeps it, so this is read only of a run that never held one), or None: the
    hard-constraint check (its first violation), the policy's own cut to the same
    constraints (memory on), or memory (the first reason of its veto)."""
    if record.decision.target_exposure(0.0) != 0.0:
        return None
    wanted = record.proposed
    if record.violations and wanted.action in ("buy", "sell") and wanted.size > 0:
        return record.violations[0]
    if wanted.limits:  # the policy cut its own plan (memory on: it knows the persona)
        return "within the trader's limits: " + wanted.limits[0]
    effect = record.decision.memory_effect
    if effect is not None and effect.without_action in ("buy", "sell") and effect.without_size:
        return "memory: " + (effect.reasons[0] if effect.reasons else effect.kind)
    return None


def constraint_warning(metrics: BacktestMetrics) -> str | None:
    """``"no trade: 406 of 540 proposals of a position were cut to none (first: ...)"``,
    or None: a run that made no trade and never held a position because the hard
    constraints (or memory, reading the persona) refused its proposals (a pair the
    persona forbids, e.g. a meme coin under the demo note's ``no_memecoins``) must not
    pass as a quiet +0.00%."""
    if metrics.n_trades or metrics.exposure or not metrics.refused_proposals:
        return None  # it traded, or held a position (a hold of one is no refusal)
    return (
        f"no trade: {metrics.refused_proposals} of {metrics.n_decisions} proposals of a "
        f"position were cut to none (first: {metrics.first_refusal})"
    )


def memory_warning(metrics: BacktestMetrics) -> str | None:
    """``"the memory failed at 12 of 24 decisions (253 of 253 writes); first error:
    ..."``, or None when it never failed: a store that fails on every call must not pass
    as a quiet run."""
    if not metrics.memory_error_decisions:
        return None
    writes = (
        f" ({metrics.memory_writes_failed} of {metrics.memory_writes} writes)"
        if metrics.memory_writes_failed
        else ""
    )
    return (
        f"the memory failed at {metrics.memory_error_decisions} of {metrics.n_decisions} "
        f"decisions{writes}; first error: {metrics.memory_first_error}"
    )

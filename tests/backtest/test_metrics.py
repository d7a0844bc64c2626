"""Metrics against values computed by hand (formulas in backend/backtest/metrics.py)."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pytest

from backend.backtest.metrics import (
    LLMUsage,
    bar_returns,
    bars_per_year,
    cagr,
    compute_metrics,
    dependency_failure,
    max_drawdown,
    run_warning,
    share_text,
    sharpe_ratio,
    sortino_ratio,
)
from backend.backtest.models import Decision, DecisionRecord, MemoryEffect, TradeRecord

D0 = datetime(2024, 1, 1, tzinfo=UTC)
DAY = timedelta(days=1)
# returns +10%, -10%, +10%: mean 1/30, sample variance 1/75, downside mean square 0.01/3
EQUITY = [100.0, 110.0, 99.0, 108.9]


def trade(pnl: float) -> TradeRecord:
    return TradeRecord(
        symbol="BTC/USDT",
        side="long",
        entry_time=D0,
        exit_time=D0 + DAY,
        entry_price=1.0,
        exit_price=1.0,
        quantity=1.0,
        pnl=pnl,
        return_pct=pnl,
        fees=0.5,
    )


def decision(violations: list[str]) -> DecisionRecord:
    d = Decision.hold("x")
    return DecisionRecord(
        as_of=D0, symbol="BTC/USDT", decision=d, proposed=d, violations=violations
    )


def test_ratios_by_hand() -> None:
    r = bar_returns(np.array(EQUITY))
    assert r.tolist() == pytest.approx([0.1, -0.1, 0.1])
    per_year = bars_per_year("1d")
    assert per_year == 365.25 and bars_per_year("1h") == 8766
    # Sharpe = (1/30) / sqrt(1/75) = sqrt(3)/6 per bar
    assert sharpe_ratio(r, periods_per_year=per_year) == pytest.approx(
        math.sqrt(3) / 6 * math.sqrt(365.25)
    )
    # Sortino = (1/30) / sqrt(0.01/3) = sqrt(3)/3 per bar
    assert sortino_ratio(r, periods_per_year=per_year) == pytest.approx(
        math.sqrt(3) / 3 * math.sqrt(365.25)
    )
    assert max_drawdown(np.array(EQUITY)) == pytest.approx(99 / 110 - 1)
    assert max_drawdown(np.array([100.0, 120.0]), initial=150.0) == pytest.approx(100 / 150 - 1)
    assert max_drawdown(np.array([1.0, 2.0, 3.0])) == 0.0


def test_degenerate_ratios_are_zero() -> None:
    assert sharpe_ratio(np.array([0.01]), periods_per_year=1) == 0.0
    assert sharpe_ratio(np.array([0.01, 0.01]), periods_per_year=1) == 0.0
    assert sortino_ratio(np.array([0.01, 0.02]), periods_per_year=1) == 0.0


def test_cagr_by_calendar_time() -> None:
    year = timedelta(days=365.25)
    assert cagr(0.21, start=D0, end=D0 + 2 * year) == pytest.approx(0.1)
    assert cagr(-1.0, start=D0, end=D0 + year) == -1.0
    assert cagr(0.5, start=D0, end=D0) == 0.0
    assert math.isfinite(cagr(1.0, start=D0, end=D0 + timedelta(seconds=1)))


def test_compute_metrics_by_hand() -> None:
    index = pd.DatetimeIndex([D0 + (i + 1) * DAY for i in range(4)])
    m = compute_metrics(
        pd.Series(EQUITY, index=index),
        buy_and_hold=pd.Series([100.0, 80.0, 120.0, 90.0], index=index),
        exposure=pd.Series([0.0, 1.0, -0.5, 0.0], index=index),
        trades=[trade(5.0), trade(-3.0), trade(0.0)],
        decisions=[decision([]), decision(["max_exposure"]), decision(["a", "b"])],
        timeframe="1d",
        initial_equity=100.0,
        fees_paid=1.25,
        start=D0,
        end=D0 + 4 * DAY,
    )
    assert m.total_return == pytest.approx(0.089)
    assert m.cagr == pytest.approx(1.089 ** (365.25 / 4) - 1)
    assert m.sharpe == pytest.approx(math.sqrt(3) / 6 * math.sqrt(365.25))
    assert m.sortino == pytest.approx(math.sqrt(3) / 3 * math.sqrt(365.25))
    assert m.max_drawdown == pytest.approx(-0.1)
    assert m.win_rate == pytest.approx(1 / 3)
    assert m.exposure == 0.5
    assert (m.n_trades, m.n_decisions, m.constraint_violations) == (3, 3, 2)
    assert m.buy_and_hold_return == pytest.approx(-0.1)
    assert m.buy_and_hold_max_drawdown == pytest.approx(
        90 / 120 - 1
    )  # 120 -> 90 is deeper than 100 -> 80
    assert (m.fees_paid, m.final_equity) == (1.25, 108.9)
    assert (m.start, m.end) == (D0, D0 + 4 * DAY)
    assert (m.refused_proposals, m.first_refusal) == (0, None)  # holds: nothing refused
    assert run_warning(m, min_share=1) is None


def test_a_run_whose_every_trade_the_constraints_refused_is_said() -> None:
    """A pair the persona forbids (a meme coin under the demo note's no_memecoins) gave a
    quiet +0.00% in every mode of an ablation: refused by the manager's check (memory
    off), by memory's veto, or by the policy's own cut to the persona's limits."""
    index = pd.DatetimeIndex([D0 + (i + 1) * DAY for i in range(5)])
    flat = pd.Series(100.0, index=index)
    refused = "no_memecoins: PEPE is a meme coin"
    buy, close = Decision(action="buy", size=0.5), Decision(action="close")
    trimmed = Decision(action="buy", size=0.2)  # a cap that trims is no refusal
    records = [
        DecisionRecord(as_of=D0, symbol="PEPE/USDT", decision=close, proposed=buy,
                       violations=[refused]),
        DecisionRecord(as_of=D0, symbol="PEPE/USDT", decision=trimmed, proposed=buy,
                       violations=["max_risk_per_trade"]),
        decision([]),
        DecisionRecord(as_of=D0, symbol="PEPE/USDT", proposed=buy, decision=Decision(
            action="hold", memory_effect=MemoryEffect(kind="vetoed", without_action="buy",
            without_size=0.5, reasons=["persona: no_memecoins"]))),
        DecisionRecord(as_of=D0, symbol="PEPE/USDT", proposed=(cut := Decision(
            action="hold", limits=["no_memecoins True: buy PEPE -> hold"])), decision=cut),
    ]  # fmt: skip
    m = compute_metrics(
        flat, buy_and_hold=flat, exposure=flat * 0, trades=[], decisions=records,
        timeframe="1d", initial_equity=100.0, fees_paid=0.0, start=D0, end=D0 + 5 * DAY,
    )  # fmt: skip
    assert m.first_refusal == refused and m.refused_proposals == 3
    assert run_warning(m, min_share=1) == (
        f"no trade: 3 of 5 proposals of a position were cut to none (first: {refused})"
    )
    traded = m.model_copy(update={"n_trades": 1})
    assert run_warning(traded, min_share=1) is None
    held = compute_metrics(  # a position held all along: its holds look cut to none
        flat, buy_and_hold=flat, exposure=flat * 0 + 1.0, trades=[], decisions=records,
        timeframe="1d", initial_equity=100.0, fees_paid=0.0, start=D0, end=D0 + 5 * DAY,
    )  # fmt: skip
    assert (held.refused_proposals, held.first_refusal) == (0, None)
    assert run_warning(held, min_share=1) is None


def test_a_dependency_that_failed_is_a_failure_and_a_data_gap_is_not() -> None:
    """``dependency_failure`` (the CLI's exit 3): the LLM below ``min_share`` of its
    decisions, or the memory failed at more than ``1 - min_share`` of them; a refused
    proposal, a data gap or a ruined account is said (``run_warning``) but no failure."""
    index = pd.DatetimeIndex([D0 + (i + 1) * DAY for i in range(4)])
    m = compute_metrics(
        pd.Series(EQUITY, index=index), buy_and_hold=pd.Series(EQUITY, index=index),
        exposure=pd.Series(0.0, index=index), trades=[], decisions=[decision([])] * 40,
        timeframe="1d", initial_equity=100.0, fees_paid=0.0, start=D0, end=D0 + 4 * DAY,
    )  # fmt: skip
    assert dependency_failure(m, min_share=0.95) is None
    gap = m.model_copy(update={"missing_candles": 3, "final_equity": -1.0})
    assert run_warning(gap, min_share=0.95) is not None
    assert dependency_failure(gap, min_share=0.95) is None
    first = "HTTP 500 from m"
    llm = {"llm_decisions": 40, "llm_first_error": first}
    assert dependency_failure(m.model_copy(update={**llm, "llm_answered_share": 0.95}),
                              min_share=0.95) is None  # fmt: skip
    dead = m.model_copy(update={**llm, "llm_answered_share": 37 / 40})
    said = dependency_failure(dead, min_share=0.95)
    assert said == f"the LLM answered 37 of 40 decisions (92%, below 95%); first error: {first}"
    assert said in str(run_warning(dead, min_share=0.95))
    store = {"memory_first_error": "StoreError: gone"}
    two = m.model_copy(update={**store, "memory_error_decisions": 2})  # 5% of 40: tolerated
    assert run_warning(two, min_share=0.95) is not None
    assert dependency_failure(two, min_share=0.95) is None
    three = m.model_copy(update={**store, "memory_error_decisions": 3})
    assert dependency_failure(three, min_share=0.95) == (
        "the memory failed at 3 of 40 decisions; first error: StoreError: gone"
    )
    both = dead.model_copy(update={**store, "memory_error_decisions": 40})
    assert str(dependency_failure(both, min_share=0.95)).count("; first error") == 2
    # a write fails at one flush (every 24 bars) for all the decisions of its batch: a
    # store refusing every write had failed at 12 of 264 decisions and exited 0
    flushed = {**store, "memory_error_decisions": 1, "memory_writes": 20}
    assert dependency_failure(m.model_copy(update={**flushed, "memory_writes_failed": 1}),
                              min_share=0.95) is None  # fmt: skip
    refused = m.model_copy(update={**flushed, "memory_writes_failed": 20})
    assert dependency_failure(refused, min_share=0.95) == (
        "the memory failed at 1 of 40 decisions (20 of 20 writes); first error: StoreError: gone"
    )


def test_a_share_below_the_floor_never_reads_as_the_floor() -> None:
    """A reviewer's 949 of 1000 against 95% read "(95%, below 95%)"."""
    warning = LLMUsage(1000, 949, "HTTP 500").warning(min_share=0.95)
    assert warning is not None and "(94.9%, below 95%)" in warning
    assert share_text(0.5, against=0.95) == "50%" and share_text(1.0, against=0.95) == "100%"
    assert share_text(0.94999, against=0.95) == "94.999%"

"""SimBroker on its own (the API the paper-trading loop will use): average cost, cash."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pandas as pd
import pytest

from backend.backtest._broker import SimBroker

T = datetime(2024, 1, 1, tzinfo=UTC)
H = timedelta(hours=1)


def test_scaling_in_averages_the_cost_and_pools_entry_fees() -> None:
    b = SimBroker(symbol="ETH/USDT", initial_cash=1000.0, fee_rate=0.01, slippage=0.0)
    b.execute(2.0, reference_price=100.0, time=T, decision_id="a")  # fee 2
    b.execute(2.0, reference_price=200.0, time=T + H, decision_id="b")  # fee 4
    assert b.quantity == 4.0 and b.entry_price == pytest.approx(150.0)
    assert b.cash == pytest.approx(1000 - 200 - 2 - 400 - 4)
    assert b.entry_time == T and b.entry_decision == "a"
    fill = b.execute(-1.0, reference_price=250.0, time=T + 2 * H)  # fee 2.5
    assert fill is not None
    (trade,) = fill.trades
    # closes 1 of 4 units: gross 100, entry fees 6 / 4, exit fee 2.5
    assert trade.pnl == pytest.approx(100 - 1.5 - 2.5)
    assert trade.fees == pytest.approx(4.0)
    assert trade.return_pct == pytest.approx(96 / 150)
    assert trade.entry_decision == "a" and trade.quantity == 1.0
    assert b.entry_fees == pytest.approx(4.5) and b.entry_price == pytest.approx(150.0)
    assert b.equity(250.0) == pytest.approx(b.cash + 3 * 250)
    # realised + unrealised net of pooled fees = equity - initial cash
    assert trade.pnl + 3 * (250 - 150) - b.entry_fees == pytest.approx(b.equity(250) - 1000)
    assert b.fees_paid == pytest.approx(8.5)


def test_slippage_moves_every_fill_against_the_trader() -> None:
    b = SimBroker(symbol="X", initial_cash=100.0, slippage=0.01)
    assert b.fill_price(1.0, 100.0) == pytest.approx(101.0)
    assert b.fill_price(-1.0, 100.0) == pytest.approx(99.0)
    assert b.execute(0.0, reference_price=100.0, time=T) is None


def test_target_orders_and_state() -> None:
    b = SimBroker(symbol="X", initial_cash=1000.0)
    assert b.order_for_target(0.5, reference_price=10.0) == pytest.approx(50.0)
    b.set_target(0.5, reference_price=10.0, time=T)
    state = b.position_state(20.0)
    assert state.quantity == 50 and state.equity == pytest.approx(1500)
    assert state.exposure == pytest.approx(1000 / 1500)
    assert b.order_for_target(0.7, reference_price=20.0, min_change=0.1) == 0.0
    b.set_target(0.0, reference_price=20.0, time=T + H)
    assert b.quantity == 0 and b.entry_price is None and b.cash == pytest.approx(1500)
    with pytest.raises(ValueError):
        SimBroker(symbol="X", initial_cash=0.0)


def test_a_position_reduced_in_steps_is_one_trade_won_or_lost_as_a_whole() -> None:
    """freqtrade's convention: a position closed in three steps had counted as three
    trades, and its win rate as that of the steps (a reviewer's BTC 4h 2022-Q1 run: 73
    "trades" at 49.3%, 17 positions at 29.4%)."""
    from backend.backtest.metrics import closed_positions, compute_metrics

    b = SimBroker(symbol="ETH/USDT", initial_cash=1000.0, fee_rate=0.0)
    b.execute(4.0, reference_price=100.0, time=T)
    b.execute(-1.0, reference_price=120.0, time=T + H)  # +20
    b.execute(-1.0, reference_price=110.0, time=T + 2 * H)  # +10
    b.execute(-2.0, reference_price=80.0, time=T + 3 * H)  # -40: the position lost 10
    b.execute(-1.0, reference_price=80.0, time=T + 4 * H)  # opens a short
    b.execute(3.0, reference_price=70.0, time=T + 5 * H)  # closes it (+10), flips long
    b.execute(-1.0, reference_price=90.0, time=T + 6 * H)  # +20 of a long still open
    assert [t.closes_position for t in b.trades] == [False, False, True, True, False]
    assert closed_positions(b.trades) == pytest.approx([-10.0, 10.0])
    curve, flat = pd.Series([1000.0, 1000.0]), pd.Series([0.0, 0.0])
    m = compute_metrics(
        equity=curve, buy_and_hold=curve, exposure=flat, trades=b.trades, decisions=[],
        timeframe="1h", initial_equity=1000.0, fees_paid=0.0, start=T, end=T + 7 * H,
    )  # fmt: skip
    assert (m.n_trades, m.win_rate) == (2, 0.5)

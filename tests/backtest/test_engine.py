"""The engine on synthetic candles, every number computed by hand from the documented rules.

Rules under test (backend/backtest/_broker.py, engine.py): a decision at the close of bar t
fills at the open of bar t+1; buys fill at open * (1 + slippage), sells at
open * (1 - slippage); fee = fee_rate * notional; a target exposure T from flat with
equity E buys notional E * T / (1 + T * fee_rate) (so the target holds net of the fee).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pandas as pd
import pytest

from backend.backtest.engine import run_backtest, window_cut
from backend.backtest.metrics import bar_returns, run_warning
from backend.backtest.models import Decision
from backend.config import BacktestSettings
from tests.backtest._makers import T0, ScriptedMaker, synthetic_ohlcv

H = timedelta(hours=1)
FEE, SLIP = 0.001, 0.001
COSTS = BacktestSettings(initial_equity=10_000, fee_rate=FEE, slippage=SLIP, min_trade_fraction=0)
FREE = BacktestSettings(initial_equity=10_000, fee_rate=0, slippage=0, min_trade_fraction=0)


def buy(size: float) -> Decision:
    return Decision(action="buy", size=size)


def sell(size: float) -> Decision:
    return Decision(action="sell", size=size)


CLOSE = Decision(action="close")


def test_long_round_trip_by_hand() -> None:
    ohlcv = synthetic_ohlcv([(100, 100), (100, 110), (110, 120), (120, 120), (120, 130)])
    maker = ScriptedMaker({0: buy(1.0), 2: CLOSE, 4: buy(1.0)})
    result = run_backtest(ohlcv, maker, settings=COSTS, trader_id="t", start=None, end=None)

    entry = 100 * 1.001  # bar 1 open + slippage
    notional = 10_000 / 1.001  # E * T / (1 + T * fee)
    qty = notional / entry
    entry_fee = 0.001 * notional
    assert 10_000 - notional - entry_fee == pytest.approx(0, abs=1e-9)  # cash exactly spent
    exit_ = 120 * 0.999  # bar 3 open - slippage
    exit_fee = 0.001 * qty * exit_
    cash = qty * exit_ - exit_fee

    expected = [10_000, qty * 110, qty * 120, cash, cash]
    assert result.equity.tolist() == pytest.approx(expected, rel=1e-12)
    assert list(result.equity.index) == [T0 + (i + 1) * H for i in range(5)]  # close times
    assert result.exposure.tolist() == pytest.approx([0, 1.0, 1.0, 0, 0])

    (trade,) = result.trades
    assert trade.side == "long"
    assert trade.entry_time == T0 + H and trade.exit_time == T0 + 3 * H  # next opens
    assert trade.entry_price == pytest.approx(entry) and trade.exit_price == pytest.approx(exit_)
    assert trade.quantity == pytest.approx(qty)
    assert trade.fees == pytest.approx(entry_fee + exit_fee)
    assert trade.pnl == pytest.approx(qty * (exit_ - entry) - entry_fee - exit_fee)
    assert trade.pnl == pytest.approx(cash - 10_000)  # cash accounting agrees
    assert trade.return_pct == pytest.approx(trade.pnl / (qty * entry))
    assert trade.entry_decision == "ep-0"
    assert maker.closed == [trade]

    m = result.metrics
    assert m.fees_paid == pytest.approx(entry_fee + exit_fee)
    assert m.final_equity == pytest.approx(cash)
    assert m.total_return == pytest.approx(cash / 10_000 - 1)
    assert m.n_trades == 1 and m.n_decisions == 5 and m.win_rate == 1.0
    assert m.exposure == pytest.approx(2 / 5)
    assert m.buy_and_hold_return == pytest.approx(130 / 100 - 1)
    assert m.max_drawdown == pytest.approx(cash / (qty * 120) - 1)


def test_short_and_cover_by_hand() -> None:
    ohlcv = synthetic_ohlcv([(100, 100), (100, 90), (90, 80), (80, 85), (85, 85)])
    maker = ScriptedMaker({0: sell(0.5), 2: CLOSE})
    result = run_backtest(ohlcv, maker, settings=COSTS, trader_id="t", start=None, end=None)

    entry = 100 * 0.999  # a sell fills below the open
    notional = 0.5 * 10_000 / (1 + 0.5 * 0.001)  # x = (T E) / (1 - T fee), T = -0.5
    qty = notional / entry
    entry_fee = 0.001 * notional
    cash = 10_000 + notional - entry_fee
    # right after the fill, marked at the fill price, exposure is exactly -0.5:
    assert qty * entry / (cash - qty * entry) == pytest.approx(0.5, rel=1e-12)
    cover = 80 * 1.001
    exit_fee = 0.001 * qty * cover
    final = cash - qty * cover - exit_fee

    expected = [10_000, cash - qty * 90, cash - qty * 80, final, final]
    assert result.equity.tolist() == pytest.approx(expected, rel=1e-12)
    assert result.exposure.iloc[1] == pytest.approx(-qty * 90 / (cash - qty * 90))
    (trade,) = result.trades
    assert trade.side == "short" and trade.quantity == pytest.approx(qty)
    assert trade.pnl == pytest.approx(qty * (entry - cover) - entry_fee - exit_fee)
    assert trade.pnl == pytest.approx(final - 10_000)
    assert result.metrics.fees_paid == pytest.approx(entry_fee + exit_fee)
    assert result.metrics.buy_and_hold_return == pytest.approx(-0.15)


def test_partial_decrease_and_flip_without_costs() -> None:
    # equity stays 10 000 at the first fill; later targets are re-sized on marked equity
    ohlcv = synthetic_ohlcv([(100, 100), (100, 200), (200, 200), (200, 100), (100, 100)])
    maker = ScriptedMaker({0: buy(1.0), 1: buy(0.5), 2: sell(1.0)})
    result = run_backtest(ohlcv, maker, settings=FREE, trader_id="t", start=None, end=None)

    # bar 1 open 100: buy 100 units (cash 0). bar 2 open 200: equity 20 000, target 0.5
    # -> hold 50 units: sell 50 at 200, realised 50 * (200 - 100) = 5000, cash 10 000.
    # bar 3 open 200: equity 20 000, target -1 -> -100 units: sell 150 = close 50 (+5000),
    # open a 100-unit short at 200; cash 10 000 + 150 * 200 = 40 000.
    first, second = result.trades
    assert first.side == second.side == "long"
    assert first.quantity == second.quantity == 50
    assert [first.pnl, second.pnl] == pytest.approx([5000, 5000])
    assert first.entry_time == second.entry_time == T0 + H
    assert second.exit_time == T0 + 3 * H
    # bar 3 close 100: short 100 units gains 10 000 -> equity 40 000 - 100 * 100 = 30 000
    assert result.equity.tolist() == pytest.approx([10_000, 20_000, 20_000, 30_000, 30_000])
    assert result.exposure.iloc[3] == pytest.approx(-100 * 100 / 30_000)
    # realised + unrealised = equity change
    unrealised = 100 * (200 - 100)
    assert sum(t.pnl for t in result.trades) + unrealised == pytest.approx(30_000 - 10_000)
    # one long position closed in two steps is one trade; the open short is not a trade
    assert [first.closes_position, second.closes_position] == [False, True]
    assert result.metrics.n_trades == 1 and result.metrics.win_rate == 1.0


def test_flip_splits_the_fee_by_quantity() -> None:
    ohlcv = synthetic_ohlcv([(100, 100), (100, 100), (100, 100), (100, 100)])
    maker = ScriptedMaker({0: buy(1.0), 1: sell(1.0)})
    result = run_backtest(ohlcv, maker, settings=COSTS, trader_id="t", start=None, end=None)

    n1 = 10_000 / 1.001  # bar 1 open: buy 100% at 100.1, cash -> 0
    q1, fee1 = n1 / 100.1, 0.001 * n1
    e0 = q1 * 99.9  # bar 2 open, marked at the sell fill price 99.9
    x = (-1 * e0 - e0) / (1 + 0.001)  # (T E0 - held) / (1 - T fee), T = -1
    dq = x / 99.9
    fee2 = 0.001 * abs(x)
    closing_share = q1 / abs(dq)  # of the flip's fee, the closing part
    short = abs(dq) - q1
    cash = -x - fee2

    (trade,) = result.trades
    assert trade.quantity == pytest.approx(q1)
    assert trade.fees == pytest.approx(fee1 + fee2 * closing_share)
    assert trade.pnl == pytest.approx(q1 * (99.9 - 100.1) - fee1 - fee2 * closing_share)
    assert result.metrics.fees_paid == pytest.approx(fee1 + fee2)
    assert result.equity.iloc[-1] == pytest.approx(cash - short * 100)
    assert result.exposure.iloc[2] == pytest.approx(-short * 100 / (cash - short * 100))
    # realised + the open short's PnL net of its share of the fee = equity change
    unrealised = short * (99.9 - 100) - fee2 * (1 - closing_share)
    assert trade.pnl + unrealised == pytest.approx(result.equity.iloc[-1] - 10_000)


def test_min_trade_fraction_skips_small_changes_but_never_a_close() -> None:
    settings = BacktestSettings(
        initial_equity=10_000, fee_rate=0, slippage=0, min_trade_fraction=0.02
    )
    ohlcv = synthetic_ohlcv([(100, 100)] * 7)
    script = {0: buy(0.5), 1: buy(0.51), 2: buy(0.53), 3: Decision.hold("x"), 4: sell(0.0)}
    result = run_backtest(
        ohlcv, ScriptedMaker(script), settings=settings, trader_id="t", start=None, end=None
    )
    assert result.exposure.tolist() == pytest.approx([0, 0.5, 0.5, 0.53, 0.53, 0, 0])
    # a close of a position smaller than min_trade_fraction still executes
    tiny = ScriptedMaker({0: buy(0.03), 1: buy(0.005), 2: CLOSE})
    result = run_backtest(ohlcv, tiny, settings=settings, trader_id="t", start=None, end=None)
    assert result.exposure.tolist() == pytest.approx([0, 0.03, 0.005, 0, 0, 0, 0])
    assert len(result.trades) == 2


def test_clock_order_and_the_last_decision_is_not_filled() -> None:
    ohlcv = synthetic_ohlcv([(100, 100), (100, 110), (110, 120), (120, 120)])
    maker = ScriptedMaker({1: buy(1.0), 2: CLOSE, 3: buy(1.0)})
    result = run_backtest(ohlcv, maker, settings=FREE, trader_id="me", start=None, end=None)
    assert [c.index for c in maker.contexts] == [0, 1, 2, 3]
    assert [c.as_of for c in maker.contexts] == [T0 + (i + 1) * H for i in range(4)]
    assert [c.close for c in maker.contexts] == [100, 110, 120, 120]
    assert maker.contexts[0].trader_id == "me" and maker.contexts[0].timeframe == "1h"
    # the trade closed at bar 3's open is reported before bar 3's decision
    assert maker.calls[-2:] == [("trade", T0 + 3 * H), ("bar", T0 + 4 * H)]
    # position as seen at bar 2's close: 10 000 / 110 units marked at 120
    pos = maker.contexts[2].position
    assert pos.quantity == pytest.approx(10_000 / 110) and pos.entry_price == 110
    assert pos.equity == pytest.approx(10_000 / 110 * 120) and pos.exposure == pytest.approx(1)
    assert result.exposure.iloc[-1] == 0  # bar 3's buy has no next open
    assert len(result.decisions) == 4


def test_window_and_gaps() -> None:
    # slot 3 missing: the decision at bar 2's close fills at the open of the next row
    ohlcv = synthetic_ohlcv([(100, 100), (100, 100), (100, 100), (150, 150), (150, 150)], skip=[3])
    maker = ScriptedMaker({2: buy(1.0)})
    start, end = T0 + H, T0 + 10 * H
    result = run_backtest(ohlcv, maker, settings=FREE, trader_id="t", start=start, end=end)
    assert [c.index for c in maker.contexts] == [1, 2, 3, 4]  # row positions in the frame
    assert [c.as_of for c in maker.contexts] == [T0 + 2 * H, T0 + 3 * H, T0 + 5 * H, T0 + 6 * H]
    assert maker.contexts[2].position.entry_price == 150  # filled at the post-gap open
    assert result.metrics.start == T0 + H and result.metrics.end == T0 + 6 * H
    assert result.buy_and_hold.tolist() == pytest.approx([10_000, 10_000, 15_000, 15_000])


def test_missing_candles_at_either_edge_of_the_window_are_counted() -> None:
    """A reviewer's finding: only holes between the window's first and last candle were
    counted, so a window that began or ended inside a hole (it started 3 candles late)
    reported 0. Slots 3-6 missing (one gap: last candle before it at slot 2)."""
    import dataclasses

    from backend.data import Gap

    raw = synthetic_ohlcv([(100, 100)] * 8, skip=[3, 4, 5, 6])
    ohlcv = dataclasses.replace(raw, gaps=(Gap(start=T0 + 2 * H, end=T0 + 7 * H, missing=4),))

    def missing(start: object, end: object) -> int:
        run = run_backtest(ohlcv, ScriptedMaker({}), settings=FREE, trader_id="t",
                           start=start, end=end)  # type: ignore[arg-type]  # fmt: skip
        return run.metrics.missing_candles

    assert missing(T0 + 4 * H, T0 + 12 * H) == 3  # begins inside the hole: slots 4, 5, 6
    assert missing(T0, T0 + 5 * H) == 2  # ends inside it: slots 3, 4
    assert missing(T0, T0 + 3 * H) == 0  # ends at the hole
    assert missing(T0 + H, T0 + 9 * H) == 4  # around it
    assert missing(None, None) == 4

    # calendar months: February missing (a step of 29 days, not the 30 of "1M" seconds)
    months = [datetime(2024, m, 1, tzinfo=UTC) for m in (1, 3, 4, 5)]
    frame = pd.DataFrame(
        [(100.0, 101.0, 99.0, 100.0, 1.0)] * 4, columns=["open", "high", "low", "close", "volume"],
        index=pd.DatetimeIndex(months, name="date"),
    )  # fmt: skip
    monthly = dataclasses.replace(
        raw, timeframe="1M", frame=frame, gaps=(Gap(start=months[0], end=months[1], missing=1),)
    )
    ohlcv = monthly
    assert missing(datetime(2024, 2, 1, tzinfo=UTC), datetime(2024, 6, 1, tzinfo=UTC)) == 1
    assert missing(datetime(2024, 2, 2, tzinfo=UTC), None) == 0


def test_empty_window_is_a_data_error() -> None:
    from backend.errors import DataError

    ohlcv = synthetic_ohlcv([(100, 100)] * 3)
    with pytest.raises(DataError, match=r"synthetic\.csv.*no BTC/USDT 1h candles"):
        run_backtest(
            ohlcv, ScriptedMaker({}), settings=FREE, trader_id="t", start=T0 + 5 * H, end=None
        )


def test_ruin_stops_the_maker_and_closes_the_position() -> None:
    ohlcv = synthetic_ohlcv([(100, 100), (100, 100), (100, 130), (130, 130), (130, 130)])
    maker = ScriptedMaker({0: sell(5.0)})
    result = run_backtest(ohlcv, maker, settings=FREE, trader_id="t", start=None, end=None)
    # short 500 units at 100 with cash 60 000: at 130 equity = 60 000 - 65 000 < 0
    assert len(maker.contexts) == 2
    assert result.equity.tolist() == pytest.approx([10_000, 10_000, -5000, -5000, -5000])
    assert result.metrics.total_return == pytest.approx(-1.5)
    assert result.metrics.cagr == -1.0
    # returns end with the ruin: -5000 / -5000 (and any later ratio of debts) is no return
    assert bar_returns(result.equity).tolist() == pytest.approx([0.0, -1.5])
    assert result.metrics.ruined_at == T0 + 3 * H  # the close of the third bar
    assert result.exposure.tolist()[2] == 0.0  # undefined at equity <= 0; ruined_at says it
    assert str(run_warning(result.metrics, min_share=1)) == (
        f"the account was ruined at {T0 + 3 * H:%Y-%m-%dT%H:%M:%S+00:00}: marked equity <= 0; "
        "the position was closed at the next open and the agent decided no more (final "
        "equity -5,000.00 quote)"
    )
    assert bar_returns([100.0, -50.0, -150.0]).tolist() == [-1.5]
    assert len(result.trades) == 1 and result.trades[0].pnl == pytest.approx(-15_000)


def test_a_ruin_the_next_open_recovers_from_is_still_said() -> None:
    """A reviewer's: a 10x long marked at -1,000 at a close, closed at the next open at
    +9,000, stopped the agent with no word in the outputs (the warning read only the
    final equity)."""
    ohlcv = synthetic_ohlcv([(100, 100), (100, 89), (99, 99), (99, 99), (99, 99)])
    maker = ScriptedMaker({0: buy(10.0)})
    result = run_backtest(ohlcv, maker, settings=FREE, trader_id="t", start=None, end=None)
    assert len(maker.contexts) == 1  # no decision at or after the ruined close
    assert result.equity.tolist() == pytest.approx([10_000, -1000, 9000, 9000, 9000])
    assert result.metrics.ruined_at == T0 + 2 * H
    said = str(run_warning(result.metrics, min_share=1))
    assert said.startswith(f"the account was ruined at {T0 + 2 * H:%Y-%m-%dT%H:%M:%S+00:00}")
    assert said.endswith("decided no more (final equity 9,000.00 quote)")
    last = run_backtest(
        synthetic_ohlcv([(100, 100), (100, 89)]), ScriptedMaker({0: buy(10.0)}),
        settings=FREE, trader_id="t", start=None, end=None,
    )  # fmt: skip
    assert last.metrics.ruined_at == T0 + 2 * H and not last.fills[1:]  # no closing fill
    assert "the position was only marked (it was the last bar)" in str(
        run_warning(last.metrics, min_share=1)
    )


def test_a_failure_of_the_makers_last_writes_is_on_the_last_decision() -> None:
    """A maker's ``finish()`` runs once after the last bar, before the metrics: what it
    could not write lands on the last decision, so the run's summary says it."""

    class Finishing(ScriptedMaker):
        finished = 0

        def finish(self) -> list[str]:
            self.finished += 1
            return ["write outcomes: StoreError: the store is gone"]

        def stats(self) -> dict[str, float]:  # the DeepTraderManager's writer's counts
            return {"bars": 4, "writes": 5, "writes_failed": 5}

    maker = Finishing({})
    ohlcv = synthetic_ohlcv([(100, 100)] * 4)
    result = run_backtest(ohlcv, maker, settings=FREE, trader_id="t", start=None, end=None)
    assert maker.finished == 1
    assert [r.memory_errors for r in result.decisions] == [[], [], [], [
        "write outcomes: StoreError: the store is gone"
    ]]  # fmt: skip
    assert result.metrics.memory_error_decisions == 1
    assert "the memory failed at 1 of 4 decisions (5 of 5 writes)" in str(
        run_warning(result.metrics, min_share=1)
    )
    assert (result.metrics.memory_writes, result.metrics.memory_writes_failed) == (5, 5)


def test_progress_is_reported_for_every_bar() -> None:
    ohlcv = synthetic_ohlcv([(100, 100)] * 4)
    seen: list[tuple[int, int]] = []
    run_backtest(
        ohlcv,
        ScriptedMaker({}),
        settings=FREE,
        trader_id="t",
        start=None,
        end=None,
        progress=lambda done, total: seen.append((done, total)),
    )
    assert seen == [(1, 4), (2, 4), (3, 4), (4, 4)]


def test_a_naive_start_or_end_is_refused_not_read_as_utc() -> None:
    ohlcv = synthetic_ohlcv([(100, 100), (100, 110), (110, 120)])
    naive = T0.replace(tzinfo=None)
    for window in ({"start": naive, "end": None}, {"start": None, "end": naive + 2 * H}):
        with pytest.raises(ValueError, match="timezone-aware"):
            run_backtest(ohlcv, ScriptedMaker({}), settings=FREE, trader_id="t", **window)
    # the same instant with its zone runs
    run_backtest(ohlcv, ScriptedMaker({}), settings=FREE, trader_id="t", start=T0, end=None)


def test_a_window_outside_the_data_is_said_and_one_inside_is_not() -> None:
    """A reviewer's ``--start 2015-01-01`` on data from 2020 ran from 2020 without a word."""
    ohlcv = synthetic_ohlcv([(100.0, 100.0)] * 4)  # opens T0 .. T0+3h, last close T0+4h
    assert window_cut(ohlcv, start=T0, end=T0 + timedelta(hours=4)) is None
    assert window_cut(ohlcv, start=None, end=None) is None
    early = window_cut(ohlcv, start=T0 - timedelta(days=1), end=None)
    assert early is not None and early.startswith("--start 2023-12-31T00:00:00+00:00 is before")
    assert "begins at 2024-01-01T00:00:00+00:00" in early and "--end" not in early
    late = window_cut(ohlcv, start=T0, end=T0 + timedelta(hours=5))
    assert late is not None and late.startswith("--end")
    assert "ends at 2024-01-01T04:00:00+00:00" in late

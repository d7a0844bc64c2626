"""No look-ahead on the real BTC/USDT 1h candles: changing the future changes nothing before it.

A deterministic SMA-crossover maker (its own history of the closes it was given) runs over
2022; then every candle after bar k is altered (prices x 1.5, volume x 3) and the run is
repeated: every context, decision and equity point up to bar k must be identical.
"""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from backend.backtest.engine import BacktestResult, run_backtest
from backend.config import BacktestSettings
from backend.data import OHLCVFrame, load_ohlcv
from tests.backtest._makers import SmaCrossMaker

START, END = datetime(2022, 1, 1, tzinfo=UTC), datetime(2022, 7, 1, tzinfo=UTC)
SETTINGS = BacktestSettings()


@pytest.fixture(scope="module")
def btc(shared_data: Path) -> OHLCVFrame:
    return load_ohlcv(shared_data / "market" / "binance", "BTC/USDT", "1h")


def run(ohlcv: OHLCVFrame) -> tuple[BacktestResult, SmaCrossMaker]:
    maker = SmaCrossMaker(fast=12, slow=48)
    result = run_backtest(ohlcv, maker, settings=SETTINGS, trader_id="t", start=START, end=END)
    return result, maker


def mutate_after(ohlcv: OHLCVFrame, row: int) -> OHLCVFrame:
    frame = ohlcv.frame.copy()
    frame.iloc[row + 1 :, :4] *= 1.5
    frame.iloc[row + 1 :, 4] *= 3.0
    return dataclasses.replace(ohlcv, frame=frame)


@pytest.mark.parametrize("offset", [100, 1500, 4000])
def test_changing_future_candles_changes_nothing_up_to_bar_k(btc: OHLCVFrame, offset: int) -> None:
    base, base_maker = run(btc)
    first = base_maker.contexts[0].index
    k = first + offset  # row position of bar k in the frame
    changed, changed_maker = run(mutate_after(btc, k))

    assert base_maker.contexts[: offset + 1] == changed_maker.contexts[: offset + 1]
    assert base.decisions[: offset + 1] == changed.decisions[: offset + 1]
    assert base.equity.iloc[: offset + 1].equals(changed.equity.iloc[: offset + 1])
    before = [t for t in base.trades if t.exit_time <= base_maker.contexts[offset].as_of]
    assert list(changed.trades[: len(before)]) == before
    # the mutation is visible afterwards, so the comparison above is not vacuous
    assert base_maker.contexts[offset + 1] != changed_maker.contexts[offset + 1]
    assert base.decisions[offset + 1 :] != changed.decisions[offset + 1 :]


def test_each_context_is_the_bar_it_names(btc: OHLCVFrame) -> None:
    result, maker = run(btc)
    frame = btc.frame
    assert len(maker.contexts) == len(result.decisions) == result.metrics.n_decisions
    for ctx, record in zip(maker.contexts, result.decisions, strict=True):
        row = frame.iloc[ctx.index]
        assert ctx.as_of == frame.index[ctx.index].to_pydatetime() + timedelta(hours=1)
        assert (ctx.open, ctx.close, ctx.volume) == (row["open"], row["close"], row["volume"])
        assert record.as_of == ctx.as_of
    # every trade closed at a fill time after the decision that caused it was taken
    for trade in result.trades:
        assert trade.exit_time > trade.entry_time
    gaps_in_window = [g for g in btc.gaps if START <= g.start < END]
    assert len(maker.contexts) == 181 * 24 - sum(g.missing for g in gaps_in_window)

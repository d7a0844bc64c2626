"""The backtest engine: it owns the clock and drives a :class:`DecisionMaker` bar by bar.

For every bar ``t`` whose OPEN time is in ``[start, end)`` (consecutive rows of the
OHLCV frame), in this order:

1. the order decided at the close of the previous bar (if any) is filled at the OPEN of
   bar ``t`` by :class:`~backend.backtest._broker.SimBroker` (slippage and fee), and
   ``maker.on_trade_closed`` is called for every trade that fill closed;
2. the account is marked at the CLOSE of bar ``t`` (equity curve point);
3. ``maker.on_bar`` receives a :class:`BarContext` with ``as_of`` = the bar's close time
   (open time + timeframe), the bar's OHLCV and the marked position; nothing after bar
   ``t`` is ever passed to it (no look-ahead). ``BarContext.index`` is the bar's row
   position in ``ohlcv.frame`` (so ``frame.iloc[: index + 1]`` is exactly the history a
   maker may use, warm-up before ``start`` included);
4. the returned decision becomes a target exposure: ``buy`` -> ``+size``, ``sell`` ->
   ``-size``, ``close`` -> 0, ``hold`` -> no order. Changes smaller than
   ``settings.min_trade_fraction`` of equity are skipped (going flat never is).

The last bar's decision is recorded but not filled (there is no next open). Missing
candles (exchange outages) are not filled in: bars are consecutive rows, so a decision
taken before a gap is filled at the open of the next existing candle. Positions still
open at the end are marked to the last close (equity, total return) but are not trades.
If marked equity reaches <= 0 (a leveraged position wiped out), the maker is no longer
called, the position is closed at the next open and the curve stays at what is left.

After the last bar, a maker with a ``finish()`` method (the DeepTraderManager: it writes
what its memory still buffers) has it called once, before the metrics: the failures it
returns (``"write <what>: <error>"``) are put on the last decision's ``memory_errors``,
like every other write failure on the decision of its bar, so a store that fails only at
the end is counted and said too.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import NamedTuple

import numpy as np
import pandas as pd

from backend.backtest._broker import BrokerFill, SimBroker
from backend.backtest.metrics import compute_metrics
from backend.backtest.models import (
    BacktestMetrics,
    BarContext,
    DecisionMaker,
    DecisionRecord,
    TradeRecord,
)
from backend.config import BacktestSettings
from backend.data import OHLCVFrame, timeframe_seconds
from backend.errors import DataError
from backend.types import to_utc

__all__ = [
    "BacktestResult",
    "BarStepper",
    "ProgressCallback",
    "StepOutcome",
    "bar_close_times",
    "run_backtest",
    "select_window",
    "utc_timestamp",
    "window_cut",
]

log = logging.getLogger(__name__)

ProgressCallback = Callable[[int, int], None]
"""Called as ``progress(done_bars, total_bars)`` after every bar."""


@dataclass(frozen=True)
class BacktestResult:
    """Everything one run produced. Series are indexed by bar CLOSE time (UTC)."""

    symbol: str
    timeframe: str
    trader_id: str
    settings: BacktestSettings
    metrics: BacktestMetrics
    equity: pd.Series
    """Account equity (quote currency) marked at each bar close."""
    buy_and_hold: pd.Series
    """``initial_equity * close / first close``: buy at the first decision's close, no costs."""
    exposure: pd.Series
    """Signed position notional / equity at each bar close."""
    trades: tuple[TradeRecord, ...]
    decisions: tuple[DecisionRecord, ...]
    fills: tuple[BrokerFill, ...] = ()
    """Every executed order, in time order (a resize, a close, a flip: one fill each)."""

    @property
    def drawdown(self) -> pd.Series:
        """``equity / running max - 1`` (fractions <= 0)."""
        return self.equity / self.equity.cummax() - 1.0


def bar_close_times(open_times: pd.DatetimeIndex, timeframe: str) -> pd.DatetimeIndex:
    """Close time of each candle = open time + timeframe (calendar months/years for
    ``M``/``y`` candles, else ``timeframe_seconds``)."""
    unit = timeframe[-1:]
    if unit in ("M", "y") and timeframe[:-1].isdigit():
        n = int(timeframe[:-1])
        offset = pd.DateOffset(months=n) if unit == "M" else pd.DateOffset(years=n)
        return pd.DatetimeIndex(open_times + offset)
    return open_times + pd.Timedelta(seconds=timeframe_seconds(timeframe))


def select_window(
    ohlcv: OHLCVFrame, *, start: datetime | None, end: datetime | None
) -> tuple[int, int]:
    """Row positions ``[first, stop)`` of the bars whose open time is in ``[start, end)``.

    Raises DataError (naming the source file) when the window holds no candle."""
    index = ohlcv.frame.index
    first = 0 if start is None else int(index.searchsorted(utc_timestamp(start), side="left"))
    stop = len(index) if end is None else int(index.searchsorted(utc_timestamp(end), side="left"))
    if stop <= first:
        when = f" in [{_iso(start)}, {_iso(end)})"
        raise DataError(f"no {ohlcv.pair} {ohlcv.timeframe} candles{when}", path=ohlcv.source)
    return first, stop


def window_cut(ohlcv: OHLCVFrame, *, start: datetime | None, end: datetime | None) -> str | None:
    """One line when the requested window reaches outside the data, else None:
    ``"--start 2015-01-01T00:00:00+00:00 is before the data (BTC/USDT 1d begins at
    2020-09-20T00:00:00+00:00): the run begins there"`` (and the same for ``--end``
    after the last candle's close). The run itself is cut to the data (a reviewer's run
    from 2015 began in 2020 without a word); a window that holds no candle at all is
    :func:`select_window`'s DataError."""
    index = ohlcv.frame.index
    said = []
    if start is not None and utc_timestamp(start) < index[0]:
        said.append(
            f"--start {_iso(start)} is before the data ({ohlcv.pair} {ohlcv.timeframe} begins "
            f"at {index[0].isoformat()}): the run begins there"
        )
    last_close = bar_close_times(pd.DatetimeIndex(index[-1:]), ohlcv.timeframe)[0]
    if end is not None and utc_timestamp(end) > last_close:
        said.append(
            f"--end {_iso(end)} is after the data ({ohlcv.pair} {ohlcv.timeframe} ends at "
            f"{last_close.isoformat()}): the run ends there"
        )
    return "; ".join(said) if said else None


def _missing_in(ohlcv: OHLCVFrame, *, start: datetime, end: datetime) -> int:
    """Candles of ``ohlcv``'s gaps whose open time is in ``[start, end)``: a hole at
    either edge of a window counts too (the window then begins late or ends early; only
    holes between its first and last candle were counted, so a run that began 3 candles
    late said nothing). Holes before the file's first candle or after its last are not
    gaps (the ablation says a window cut at the data). Calendar-aware for ``M``/``y``."""
    lo, hi = utc_timestamp(start), utc_timestamp(end)
    count = 0
    for gap in ohlcv.gaps:  # the missing opens: the next ``missing`` steps after gap.start
        if gap.end <= lo or gap.start >= hi:
            continue
        if ohlcv.timeframe[-1:] in ("M", "y"):  # a few calendar steps, one at a time
            opens = [pd.Timestamp(gap.start)]
            for _ in range(gap.missing):
                opens.append(bar_close_times(pd.DatetimeIndex(opens[-1:]), ohlcv.timeframe)[0])
            count += sum(1 for t in opens[1:] if lo <= t < hi)
        else:
            steps = np.arange(1, gap.missing + 1) * timeframe_seconds(ohlcv.timeframe)
            grid = pd.Timestamp(gap.start) + pd.to_timedelta(steps, unit="s")
            count += int(((grid >= lo) & (grid < hi)).sum())
    return count


def utc_timestamp(value: datetime) -> pd.Timestamp:
    """``value`` as a UTC timestamp. Raises ``ValueError`` for a naive value (ambiguous,
    as :func:`~backend.types.to_utc`): only the CLI reads a naive time, as UTC, when it
    parses one."""
    return pd.Timestamp(to_utc(value))


def _iso(value: datetime | None) -> str:
    return "..." if value is None else value.isoformat()


class StepOutcome(NamedTuple):
    """What one bar produced: equity and signed exposure marked at its close (0 where
    equity is <= 0: undefined, and the run's ``ruined_at``), and the maker's decision
    (None once the account is ruined)."""

    equity: float
    exposure: float
    record: DecisionRecord | None


@dataclass
class BarStepper:
    """Steps 1-4 of the module doc for one bar, on ``broker``: the engine's accounting,
    shared by :func:`run_backtest` and the paper-trading loop (``backend.service.paper``),
    which differ only in their clock and data feed.

    ``pending`` is the ``(target exposure, decision episode id)`` decided at the previous
    close and filled at this bar's open; ``ruined`` is set once marked equity reached
    <= 0. Both are plain data, so a paper loop can persist and restore them."""

    maker: DecisionMaker
    broker: SimBroker
    trader_id: str
    symbol: str
    timeframe: str
    min_trade_fraction: float
    pending: tuple[float, str | None] | None = None
    ruined: bool = False

    def step(
        self,
        *,
        index: int,
        open_time: datetime,
        close_time: datetime,
        bar: tuple[float, float, float, float, float],
        has_next: bool,
    ) -> StepOutcome:
        """Fill the pending order at ``bar``'s open (prices in quote currency: ``(open,
        high, low, close, volume)``), mark at its close, ask the maker at ``close_time``
        (``index``: the bar's row in the caller's frame). The decision becomes the next
        pending order only if ``has_next`` (the engine's last bar is not filled)."""
        bar_open, high, low, close, volume = bar
        broker, maker = self.broker, self.maker
        if self.pending is not None:
            target, decision_id = self.pending
            self.pending = None
            fill = broker.set_target(
                target,
                reference_price=bar_open,
                time=open_time,
                min_change=self.min_trade_fraction,
                decision_id=decision_id,
            )
            if fill is not None:
                for trade in fill.trades:
                    maker.on_trade_closed(trade)
        marked = broker.equity(close)
        # undefined at equity <= 0 (notional over a debt): 0, and ``ruined_at`` says it (a
        # notional over |equity| flipped the sign of the position the alignment rebuilds
        # as exposure x equity / price, and was 9e13 at an equity of exactly 0)
        exposure = broker.exposure(close) if marked > 0 else 0.0
        record = None
        if not self.ruined and marked <= 0:
            log.warning("equity %.6g <= 0 at %s: position closed, run stopped", marked, close)
            self.ruined = True
            self.pending = (0.0, None)
        elif not self.ruined:
            record = maker.on_bar(
                BarContext(
                    trader_id=self.trader_id,
                    symbol=self.symbol,
                    timeframe=self.timeframe,
                    index=index,
                    as_of=close_time,
                    open=bar_open,
                    high=high,
                    low=low,
                    close=close,
                    volume=volume,
                    position=broker.position_state(close),
                )
            )
            if record.decision.action != "hold" and has_next:
                wanted = record.decision.target_exposure(exposure)
                self.pending = (wanted, record.episode_id)
        return StepOutcome(marked, exposure, record)


def run_backtest(
    ohlcv: OHLCVFrame,
    maker: DecisionMaker,
    *,
    settings: BacktestSettings,
    trader_id: str,
    start: datetime | None = None,
    end: datetime | None = None,
    progress: ProgressCallback | None = None,
) -> BacktestResult:
    """Replay the bars of ``ohlcv`` with open time in ``[start, end)`` through ``maker``
    (protocol in the module doc) on a :class:`SimBroker` with ``settings``' capital and
    costs; metrics from :func:`~backend.backtest.metrics.compute_metrics`.

    Raises DataError when the window holds no candle."""
    first, stop = select_window(ohlcv, start=start, end=end)
    frame = ohlcv.frame
    opens_idx = frame.index[first:stop]
    closes_idx = bar_close_times(pd.DatetimeIndex(opens_idx), ohlcv.timeframe)
    open_times: list[datetime] = [t.to_pydatetime() for t in opens_idx]
    close_times: list[datetime] = [t.to_pydatetime() for t in closes_idx]
    values = frame[["open", "high", "low", "close", "volume"]].to_numpy(dtype=np.float64)
    rows = values[first:stop].tolist()
    total = stop - first

    broker = SimBroker(
        symbol=ohlcv.pair,
        initial_cash=settings.initial_equity,
        fee_rate=settings.fee_rate,
        slippage=settings.slippage,
    )
    stepper = BarStepper(
        maker=maker,
        broker=broker,
        trader_id=trader_id,
        symbol=ohlcv.pair,
        timeframe=ohlcv.timeframe,
        min_trade_fraction=settings.min_trade_fraction,
    )
    equity = np.empty(total, dtype=np.float64)
    exposure = np.zeros(total, dtype=np.float64)
    decisions: list[DecisionRecord] = []
    ruined_at: datetime | None = None

    for i in range(total):
        bar_open, high, low, close, volume = rows[i]
        equity[i], exposure[i], record = stepper.step(
            index=first + i,
            open_time=open_times[i],
            close_time=close_times[i],
            bar=(bar_open, high, low, close, volume),
            has_next=i + 1 < total,
        )
        if record is not None:
            decisions.append(record)
        if stepper.ruined and ruined_at is None:
            ruined_at = close_times[i].astimezone(UTC)
        if progress is not None:
            progress(i + 1, total)

    finish = getattr(maker, "finish", None)
    late = list(finish() or []) if callable(finish) else []
    if late and decisions:
        last = decisions[-1]
        decisions[-1] = last.model_copy(update={"memory_errors": [*last.memory_errors, *late]})
    stats = getattr(maker, "stats", None)
    counted = stats() if callable(stats) else {}
    writes = (int(counted.get("writes", 0)), int(counted.get("writes_failed", 0)))
    close_prices = np.asarray([row[3] for row in rows], dtype=np.float64)
    index = pd.DatetimeIndex(closes_idx, name="time")
    equity_s = pd.Series(equity, index=index, name="equity")
    bh_s = pd.Series(
        settings.initial_equity * close_prices / close_prices[0], index=index, name="buy_and_hold"
    )
    exposure_s = pd.Series(exposure, index=index, name="exposure")
    trades = tuple(broker.trades)
    metrics = compute_metrics(
        equity_s,
        buy_and_hold=bh_s,
        exposure=exposure_s,
        trades=trades,
        decisions=decisions,
        timeframe=ohlcv.timeframe,
        initial_equity=settings.initial_equity,
        fees_paid=broker.fees_paid,
        start=open_times[0].astimezone(UTC),
        end=close_times[-1].astimezone(UTC),
        missing_candles=_missing_in(
            ohlcv, start=start or open_times[0], end=end or close_times[-1]
        ),
        memory_writes=writes,
    ).model_copy(update={"ruined_at": ruined_at})
    return BacktestResult(
        symbol=ohlcv.pair,
        timeframe=ohlcv.timeframe,
        trader_id=trader_id,
        settings=settings,
        metrics=metrics,
        equity=equity_s,
        buy_and_hold=bh_s,
        exposure=exposure_s,
        trades=trades,
        decisions=tuple(decisions),
        fills=tuple(broker.fills),
    )

"""A simulated broker for one symbol: cash, a signed position, fills with fees and slippage.

Shared by the backtest engine and (later) the paper-trading loop, so it knows nothing
about bars or clocks: every call takes the reference price and the time of the fill.

Accounting (all amounts in quote currency, quantities in base units, signed; short < 0):

* A fill of ``dq`` base units at reference price ``p`` executes at
  ``p * (1 + slippage)`` when buying (``dq > 0``) and ``p * (1 - slippage)`` when selling:
  slippage always moves the price against the trader.
* Its fee is ``fee_rate * |dq| * fill_price`` (a fraction of the traded notional).
* ``cash -= dq * fill_price + fee``, so ``equity(mark) = cash + quantity * mark`` at any
  mark price, long or short (a short's sale proceeds sit in cash).
* Cost basis is the AVERAGE COST of the open position (not FIFO): adding to a position
  re-averages ``entry_price`` (fill prices, slippage included) and pools the entry fees;
  reducing it realises ``closed * (exit - entry)`` (long) or ``closed * (entry - exit)``
  (short) minus the entry fees pro rata to the closed quantity and the exit fee of the
  closed part. Each reduction yields one :class:`TradeRecord` (the one that leaves the
  position flat has ``closes_position``: the position is one trade). An order that crosses zero
  (long -> short) closes the whole position, then opens the remainder; its fee is split by
  quantity. ``entry_time``/``entry_decision`` are those of the fill that opened the
  position from flat. Summing ``pnl`` over all trades plus the open position's unrealised
  PnL (net of its pooled entry fees) gives ``equity - initial_cash`` exactly.

Target-exposure orders (:meth:`SimBroker.order_for_target`) size the trade so that, right
after the fill and marked at the fill price, ``quantity * fill_price / equity`` equals the
target *net of that fill's fee*: with ``E0 = cash + quantity * fill_price`` and signed
order notional ``x = dq * fill_price``, ``quantity * fill_price + x = target * (E0 -
fee_rate * |x|)``, i.e. ``x = (target * E0 - quantity * fill_price) / (1 + target *
fee_rate)`` when buying and ``/ (1 - target * fee_rate)`` when selling. So buying 100%
from flat leaves cash at exactly 0, and a target of 0 closes exactly.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from backend.backtest.models import BrokerState, PositionState, TradeRecord

__all__ = ["BrokerFill", "SimBroker"]

_EPS = 1e-12


@dataclass(frozen=True)
class BrokerFill:
    """One executed order: ``quantity`` signed base units (buy > 0) at ``price`` (after
    slippage), ``fee`` in quote currency, and the trades it closed (possibly none)."""

    time: datetime
    quantity: float
    reference_price: float
    price: float
    fee: float
    trades: tuple[TradeRecord, ...] = ()


@dataclass
class SimBroker:
    """Position and equity accounting of one symbol (see the module doc for the formulas)."""

    symbol: str
    initial_cash: float
    fee_rate: float = 0.0
    slippage: float = 0.0
    cash: float = field(init=False)
    quantity: float = field(init=False, default=0.0)
    entry_price: float | None = field(init=False, default=None)
    """Average cost (quote per base unit, slippage included) of the open position."""
    entry_time: datetime | None = field(init=False, default=None)
    entry_decision: str | None = field(init=False, default=None)
    entry_fees: float = field(init=False, default=0.0)
    """Fees paid to build the open position that are not yet realised in a trade."""
    fees_paid: float = field(init=False, default=0.0)
    """All fees paid so far (quote currency)."""
    fills: list[BrokerFill] = field(init=False, default_factory=list)
    trades: list[TradeRecord] = field(init=False, default_factory=list)

    def __post_init__(self) -> None:
        if self.initial_cash <= 0:
            raise ValueError("initial_cash must be > 0")
        if not 0 <= self.fee_rate < 0.1 or not 0 <= self.slippage < 0.1:
            raise ValueError("fee_rate and slippage must be in [0, 0.1)")
        self.cash = float(self.initial_cash)

    # ------------------------------------------------------------------ state
    def state(self) -> BrokerState:
        """The scalar state (a paper run saves it between steps)."""
        return BrokerState(
            cash=self.cash, quantity=self.quantity, entry_price=self.entry_price,
            entry_time=self.entry_time, entry_decision=self.entry_decision,
            entry_fees=self.entry_fees, fees_paid=self.fees_paid,
        )  # fmt: skip

    def restore(self, state: BrokerState) -> None:
        """Continue from ``state`` (what :meth:`state` returned, maybe in another process)."""
        self.cash, self.quantity = state.cash, state.quantity
        self.entry_price, self.entry_time = state.entry_price, state.entry_time
        self.entry_decision, self.entry_fees = state.entry_decision, state.entry_fees
        self.fees_paid = state.fees_paid

    # ------------------------------------------------------------------ marks
    def equity(self, mark: float) -> float:
        """``cash + quantity * mark`` (quote currency)."""
        return self.cash + self.quantity * mark

    def exposure(self, mark: float) -> float:
        """Signed ``quantity * mark / equity`` (0 when flat; +-inf if equity <= 0)."""
        if self.quantity == 0:
            return 0.0
        equity = self.equity(mark)
        if equity <= 0:
            return float("inf") if self.quantity > 0 else float("-inf")
        return self.quantity * mark / equity

    def position_state(self, mark: float) -> PositionState:
        """The account marked at ``mark``. Raises ValueError if equity <= 0 (ruin)."""
        equity = self.equity(mark)
        if equity <= 0:
            raise ValueError(f"equity {equity:.6g} <= 0 at mark {mark:.6g}")
        return PositionState(
            quantity=self.quantity,
            entry_price=self.entry_price,
            equity=equity,
            exposure=self.exposure(mark),
        )

    def fill_price(self, quantity: float, reference_price: float) -> float:
        """The price a fill of signed ``quantity`` gets: moved against it by ``slippage``."""
        sign = 1.0 if quantity > 0 else -1.0
        return reference_price * (1.0 + sign * self.slippage)

    # ----------------------------------------------------------------- orders
    def order_for_target(
        self, target: float, *, reference_price: float, min_change: float = 0.0
    ) -> float:
        """Signed base quantity to trade at ``reference_price`` so the exposure becomes
        ``target`` right after the fill (formula in the module doc); 0.0 when no trade is
        needed or ``|target - exposure(reference_price)| < min_change``. Going flat
        (``target == 0`` with an open position) is never skipped, so no dust can stick.
        """
        if reference_price <= 0:
            raise ValueError("reference_price must be > 0")
        if target == 0.0:
            return -self.quantity
        current = self.exposure(reference_price)
        if abs(target - current) < min_change:
            return 0.0
        side = 1.0 if target > current else -1.0
        price = reference_price * (1.0 + side * self.slippage)
        equity = self.cash + self.quantity * price
        if equity <= 0:
            return 0.0
        held = self.quantity * price
        divisor = 1.0 + side * target * self.fee_rate
        notional = (target * equity - held) / divisor
        if notional * side <= 0:  # the change is within the slippage: nothing to do
            return 0.0
        return notional / price

    def execute(
        self,
        quantity: float,
        *,
        reference_price: float,
        time: datetime,
        decision_id: str | None = None,
    ) -> BrokerFill | None:
        """Fill signed ``quantity`` base units at ``reference_price`` moved by slippage, at
        ``time``. Returns the fill (with the trades it closed) or None for ``quantity == 0``.
        ``decision_id`` is remembered as ``entry_decision`` if the fill opens a position."""
        if quantity == 0.0:
            return None
        if reference_price <= 0:
            raise ValueError("reference_price must be > 0")
        price = self.fill_price(quantity, reference_price)
        fee = self.fee_rate * abs(quantity) * price
        self.cash -= quantity * price + fee
        self.fees_paid += fee
        trades: list[TradeRecord] = []
        remaining = quantity
        if self.quantity != 0 and (self.quantity > 0) != (quantity > 0):
            closed = min(abs(quantity), abs(self.quantity))
            trades.append(self._close(closed, price, fee * closed / abs(quantity), time))
            remaining = quantity + closed if quantity < 0 else quantity - closed
        if abs(remaining) > _EPS * max(1.0, abs(quantity)):
            self._open(remaining, price, fee * abs(remaining) / abs(quantity), time, decision_id)
        fill = BrokerFill(
            time=time,
            quantity=quantity,
            reference_price=reference_price,
            price=price,
            fee=fee,
            trades=tuple(trades),
        )
        self.fills.append(fill)
        self.trades.extend(trades)
        return fill

    def set_target(
        self,
        target: float,
        *,
        reference_price: float,
        time: datetime,
        min_change: float = 0.0,
        decision_id: str | None = None,
    ) -> BrokerFill | None:
        """:meth:`order_for_target` + :meth:`execute` (None when nothing was traded)."""
        quantity = self.order_for_target(
            target, reference_price=reference_price, min_change=min_change
        )
        return self.execute(
            quantity, reference_price=reference_price, time=time, decision_id=decision_id
        )

    # --------------------------------------------------------------- internals
    def _open(
        self, quantity: float, price: float, fee: float, time: datetime, decision_id: str | None
    ) -> None:
        if self.quantity == 0 or self.entry_price is None:
            self.entry_price = price
            self.entry_time = time
            self.entry_decision = decision_id
            self.entry_fees = fee
            self.quantity = quantity
            return
        total = self.quantity + quantity
        self.entry_price = (self.entry_price * self.quantity + price * quantity) / total
        self.entry_fees += fee
        self.quantity = total

    def _close(self, closed: float, price: float, exit_fee: float, time: datetime) -> TradeRecord:
        assert self.entry_price is not None and self.entry_time is not None
        long = self.quantity > 0
        share = closed / abs(self.quantity)
        entry_fee = self.entry_fees * share
        gross = closed * (price - self.entry_price) * (1.0 if long else -1.0)
        pnl = gross - entry_fee - exit_fee
        trade = TradeRecord(
            symbol=self.symbol,
            side="long" if long else "short",
            entry_time=self.entry_time,
            exit_time=time,
            entry_price=self.entry_price,
            exit_price=price,
            quantity=closed,
            pnl=pnl,
            return_pct=pnl / (closed * self.entry_price),
            fees=entry_fee + exit_fee,
            entry_decision=self.entry_decision,
        )
        self.entry_fees -= entry_fee
        remaining = self.quantity - closed if long else self.quantity + closed
        flat = abs(remaining) <= _EPS * max(1.0, abs(self.quantity))
        if not flat:
            trade = trade.model_copy(update={"closes_position": False})
        if flat:
            self.quantity = 0.0
            self.entry_price = None
            self.entry_time = None
            self.entry_decision = None
            self.entry_fees = 0.0
        else:
            self.quantity = remaining
        return trade

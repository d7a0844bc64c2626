"""Typed models shared by the decision loop and the backtest engine (defined only here).

Units: prices in quote currency; ``size`` and ``exposure`` are fractions of equity
(notional / equity, 0.5 = half the equity); returns and drawdowns are fractions; times
are aware UTC datetimes. A decision taken at the close of bar t is filled at the open of
bar t+1 (no look-ahead).
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal, Protocol

from pydantic import AwareDatetime, Field, field_validator

from backend.types import MAX_SIZE, Action, FrozenModel, to_utc

__all__ = [
    "WARMING_UP",
    "Action",
    "BacktestMetrics",
    "BarContext",
    "BrokerState",
    "Decision",
    "DecisionMaker",
    "DecisionRecord",
    "MemoryEffect",
    "MemoryEffectKind",
    "PositionState",
    "TradeRecord",
]


MemoryEffectKind = Literal["vetoed", "resized", "redirected"]
"""How memory changed a decision: ``vetoed`` (no trade or flat where the same policy
without memory traded), ``resized`` (same direction, another size), ``redirected``
(another direction: long vs short, or a trade where it would have stayed out)."""


class MemoryEffect(FrozenModel):
    """What the same policy would have decided at this bar without reading memory, and
    why memory changed it (:class:`~backend.agents.policies.RulePolicy` fills it)."""

    kind: MemoryEffectKind
    without_action: Action
    without_size: float = Field(ge=0.0, le=MAX_SIZE)
    """Target exposure without memory (fraction of equity; 0 for hold/close)."""
    reasons: list[str] = Field(default_factory=list)
    """One line per memory rule that applied (e.g. "3 similar states: -2.1% after")."""
    without_exposure: float | None = None
    """The signed exposure (fraction of equity) the answer without memory would have been
    executed at: after the same constraint check and no-trade band as the decision taken
    (the manager sets it; None in records of older releases)."""


WARMING_UP = "warming up"
"""How the rationale of a decision held while the features are not warm begins (the
rule policy's; counted in :attr:`BacktestMetrics.warmup_decisions`)."""


class Decision(FrozenModel):
    """What a policy decided at a bar close. ``error`` is set when a fault forced HOLD."""

    action: Action
    size: float = Field(default=0.0, ge=0.0, le=MAX_SIZE)
    """Target exposure as a fraction of equity (ignored for hold/close)."""
    confidence: float = Field(default=0.5, ge=0.0, le=1.0)
    rationale: str = Field(default="", max_length=4000)
    memory_ids: list[str] = Field(default_factory=list)
    error: str | None = None
    model: str | None = None
    """The chat model asked for this decision (None: the rules decided). With ``error``
    set, the model gave no usable answer and the decision is the safe default."""
    memory_effect: MemoryEffect | None = None
    """Set when memory changed the decision (None: memory off, or it changed nothing)."""
    llm_ms: float | None = Field(default=None, ge=0)
    """Wall-clock ms the chat model took for this decision, its calls summed (a re-ask
    after a refused length included; None: no model asked)."""
    llm_tokens: tuple[int, int] | None = None
    """``(prompt, completion)`` tokens the endpoint counted for this decision, its calls
    summed (None: no model asked, or the endpoint gave no counts)."""
    limits: list[str] = Field(default_factory=list)
    """The limits the policy cut its own plan to (memory on: it knows the persona's hard
    constraints; the agent's ``max_exposure`` too), as the check words them
    (``"no_memecoins True: sell PEPE -> hold"``). Not violations: nothing beyond them
    was proposed."""

    def target_exposure(self, current: float) -> float:
        """The signed exposure (fraction of equity, + long, - short) this decision asks for
        when the position's exposure is ``current``: buy -> ``+size``, sell -> ``-size``,
        close -> 0, hold -> ``current`` (unchanged). The one definition every part uses
        (the engine's orders, the constraints, the manager's trade test, the outcomes)."""
        if self.action == "buy":
            return self.size
        if self.action == "sell":
            return -self.size
        if self.action == "close":
            return 0.0
        return current

    @classmethod
    def hold(cls, reason: str, *, error: str | None = None, model: str | None = None) -> Decision:
        return cls(action="hold", rationale=reason, error=error, model=model)


class PositionState(FrozenModel):
    """The account at a bar close, marked to that close."""

    quantity: float
    """Signed base units (negative = short)."""
    entry_price: float | None
    equity: float = Field(gt=0)
    """Quote currency: cash + quantity * close."""
    exposure: float
    """Signed notional / equity."""


class BrokerState(FrozenModel):
    """The scalar state of a :class:`~backend.backtest.SimBroker` (what a paper run saves
    between steps; its fills and trades are rows of their own): cash and fees in quote
    currency, quantity in base units (negative: short), the open position's average
    entry price, time, decision id and the fees paid to build it."""

    cash: float
    quantity: float = 0.0
    entry_price: float | None = None
    entry_time: AwareDatetime | None = None
    entry_decision: str | None = None
    entry_fees: float = 0.0
    fees_paid: float = 0.0


class BarContext(FrozenModel):
    """What the decision maker may see at the close of bar ``index`` (nothing later)."""

    trader_id: str
    symbol: str
    timeframe: str
    index: int = Field(ge=0)
    as_of: AwareDatetime
    """The bar's close time."""
    open: float
    high: float
    low: float
    close: float
    volume: float
    position: PositionState

    _tz = field_validator("as_of")(to_utc)


class DecisionMaker(Protocol):
    """What the engine drives once per closed bar (the DeepTraderManager)."""

    def on_bar(self, bar: BarContext) -> DecisionRecord: ...

    def on_trade_closed(self, trade: TradeRecord) -> None: ...


class DecisionRecord(FrozenModel):
    """One decision as written to ``decisions.jsonl``: the policy's answer, what the
    constraint check made of it, and the memories it used with the prompt token count."""

    as_of: AwareDatetime
    symbol: str
    decision: Decision
    """After the hard-constraint check (what is executed)."""
    proposed: Decision
    """The policy's answer before the check."""
    violations: list[str] = Field(default_factory=list)
    """Hard constraints the proposal broke (and that the check enforced)."""
    memory_ids: list[str] = Field(default_factory=list)
    prompt_tokens: int = Field(default=0, ge=0)
    """Tokens (tiktoken cl100k_base) of the memory section rendered for this bar, within
    ``memory.token_budget`` (0 with memory off). An LLM policy that cut it to fit its
    model's window says so in the rationale (``[memory cut to N tokens ...]``), and
    ``Decision.llm_tokens`` holds what the model's endpoint counted."""
    episode_id: str | None = None
    """The ``decision`` episode recorded for it (None with memory off)."""
    retrieval_ms: float = 0.0
    memory_errors: list[str] = Field(default_factory=list)
    """The memory's failures at this bar: a tier that could not be read (``"episodic:
    StoreError: ..."``) or a write that failed (``"write: ..."``); the decision was made
    without what failed. Counted by ``BacktestMetrics.memory_error_decisions``."""

    _tz = field_validator("as_of")(to_utc)


class TradeRecord(FrozenModel):
    """A round trip (or a partial close) as written to ``trades.csv``."""

    symbol: str
    side: Literal["long", "short"]
    entry_time: AwareDatetime
    exit_time: AwareDatetime
    entry_price: float
    exit_price: float
    quantity: float = Field(gt=0)
    """Base units closed."""
    pnl: float
    """Quote currency, after fees and slippage."""
    return_pct: float
    """PnL / entry notional (a fraction, despite the name kept for freqtrade familiarity)."""
    fees: float
    entry_decision: str | None = None
    """Episode id of the decision that opened it."""
    closes_position: bool = True
    """Whether this reduction left the position flat (or flipped it): the position's last
    row. A position built and reduced in steps is one trade of ``BacktestMetrics
    .n_trades`` (freqtrade's convention), its rows share ``side`` and ``entry_time``."""

    _tz = field_validator("entry_time", "exit_time")(to_utc)

    @property
    def position_key(self) -> tuple[str, str, datetime]:
        """``(symbol, side, entry_time)``: what the rows of one position share, the one
        grouping of the metrics' trade count and the writer's trade outcomes (they had
        grouped by two different keys)."""
        return (self.symbol, self.side, self.entry_time)


class BacktestMetrics(FrozenModel):
    """Headline metrics (fractions, not percent). Sharpe/Sortino are annualised from bar
    returns with sqrt(bars per year), risk-free 0."""

    start: AwareDatetime
    end: AwareDatetime
    total_return: float
    cagr: float
    sharpe: float
    sortino: float
    max_drawdown: float
    """<= 0."""
    win_rate: float
    """Of the ``n_trades`` positions, the share whose PnL (their rows' sum) was > 0."""
    exposure: float
    """Share of bars with a position."""
    n_trades: int
    """Positions closed (flat to flat, or to a flip), each once however many steps
    reduced it; one still open at the end is not counted (it is marked to market)."""
    n_decisions: int
    buy_and_hold_return: float
    buy_and_hold_max_drawdown: float
    fees_paid: float
    final_equity: float
    constraint_violations: int = 0
    """Proposals the hard-constraint check had to change."""
    refused_proposals: int = Field(default=0, ge=0)
    """In a run that never traded nor held a position (else 0): the decisions whose
    policy wanted a position (buy or sell, size > 0) that the check, or memory, cut to
    none (a pair the persona forbids); any is said in the run's summary line."""
    first_refusal: str | None = None
    """Why the first of those was cut (None without any)."""
    llm_decisions: int = 0
    """Decisions a chat model was asked for (0 with the rule policy)."""
    llm_answered_share: float | None = Field(default=None, ge=0, le=1)
    """Of those, the share the model answered usably (0..1; None when none was asked).
    Below ``llm.min_answered_share`` the run's summary line and report say so."""
    llm_first_error: str | None = None
    """The first error of an unanswered decision (None when every one was answered)."""
    memory_error_decisions: int = 0
    """Decisions at which the memory failed to read or write (``DecisionRecord
    .memory_errors``); any is said in the run's summary line and report."""
    memory_first_error: str | None = None
    """The first of those failures (None without any)."""
    memory_writes: int = Field(default=0, ge=0)
    """Episodes and outcomes the memory was asked to write (batched every
    ``flush_every`` bars, a retry counted again; 0 with memory off)."""
    memory_writes_failed: int = Field(default=0, ge=0)
    """Of those, the writes that failed: a write fails at one flush for every decision
    of its batch, so a store refusing every write is judged by this share too (by
    decisions it had passed as 12 of 264)."""
    missing_candles: int = Field(default=0, ge=0)
    """Candles absent from the data between the window's first and last candle (gaps in
    the file, ``sentinel data check`` lists them): the agent decided only at the candles
    there are. Any is said in the run's summary line and report."""
    ruined_at: AwareDatetime | None = None
    """The close at which marked equity first reached <= 0 (None: never): the engine
    closed the position at the next open (none after the last bar) and the agent decided
    no more. Said in the run's summary line and report, whatever the final equity."""
    warmup_decisions: int = Field(default=0, ge=0)
    """Decisions held because the features were not warm yet (their rationale begins
    with :data:`WARMING_UP`): the window began without enough history before it. Any is
    said in the run's summary line and report."""

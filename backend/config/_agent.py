"""Sections of the trading agent (``agent``) and of the runs that trade it: backtests
(``backtest``) and paper trading (``paper``)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from backend.config._section import _Section
from backend.types import MAX_SIZE


class BacktestSettings(_Section):
    """Costs and capital of backtests and paper trading."""

    initial_equity: float = Field(default=10_000.0, gt=0)
    """Quote currency."""
    fee_rate: float = Field(default=0.001, ge=0, lt=0.1)
    """Fraction of traded notional per fill (0.001 = 0.1%, Binance spot taker)."""
    slippage: float = Field(default=0.0005, ge=0, lt=0.1)
    """Fraction of price moved against each fill (0.0005 = 5 bps)."""
    min_trade_fraction: float = Field(default=0.02, ge=0, le=1)
    """Exposure changes smaller than this fraction of equity are not traded."""


class AgentSettings(_Section):
    """The DeepTraderManager and its offline RulePolicy."""

    policy: Literal["rule", "llm"] = "rule"
    memory: bool = True
    """``False`` = ablation: no retrieval, no memory writes."""
    memory_tiers: tuple[Literal["persona", "working", "episodic"], ...] = Field(
        default=("persona", "working", "episodic"), min_length=1
    )
    """Tiers retrieved into the decision context when ``memory`` is on (ablation: e.g.
    ``[persona]``); memory writes are the same whatever the tiers."""
    trader_id: str = "agent"
    """Whose memory the agent uses (persona, episodes)."""
    target_vol: float = Field(default=0.5, gt=0, le=5)
    """Annualised volatility the RulePolicy sizes for (vol targeting, Moreira & Muir 2017)."""
    max_exposure: float = Field(default=1.0, gt=0, le=MAX_SIZE)
    """Cap on |exposure| (fraction of equity) before persona constraints."""
    allow_short: bool = True
    rebalance_band: float = Field(default=0.25, ge=0, le=1)
    """No trade when the position already points the decided way and its size is within
    this fraction of the decided size (applied by the manager after the constraint
    check, whatever the policy and the memory mode)."""
    episode_neighbours: int = Field(default=32, ge=1, le=100)
    """Episodes recalled by market state per decision (the episodic tier's ``top_k``).
    32 was chosen on the 2021-2023 4h windows only (mean change of chained Sharpe vs
    memory off, all tiers: 24 +0.065, 32 +0.117, 48 +0.100, 64 +0.077, 96 +0.085;
    docs/benchmarks.md)."""
    episode_min_neighbours: int = Field(default=8, ge=2, le=100)
    """Recalled episodes with an outcome needed before they may resize or veto a trade."""
    episode_veto_t: float | None = Field(default=None, gt=0)
    """t statistic of the neighbours' mean outcome against the trade that vetoes it
    (None = off: on 2021-2023 every threshold tried cost Sharpe, docs/benchmarks.md)."""
    episode_halve_t: float | None = Field(default=None, gt=0)
    """t statistic against the trade that halves it (None = off, as above)."""
    episode_risk_floor: float = Field(default=0.5, gt=0, le=1)
    """Episodic memory: lowest size multiplier when the neighbours' outcomes are more
    dispersed than the current volatility implies (1 = the rule is off)."""
    confirm_bars: int = Field(default=1, ge=1, le=1000)
    """Working memory: bars the regime must have held before a new position (1 = off,
    the default: 2 and 3 cost Sharpe on 2021-2023)."""
    shock_lookback_bars: int = Field(default=6, ge=1, le=1000)
    """Working memory: snapshots back a news shock is looked for; each snapshot holds
    the headlines of its last ``memory.detectors.news_window_bars``, so one headline cuts
    the size for ``news_window_bars + shock_lookback_bars - 1`` bars (11 by default)."""
    shock_scale: float = Field(default=0.5, ge=0, le=1)
    """Working memory: size multiplier after a news shock."""
    short_guard_drawdown: float = Field(default=0.05, ge=0, le=1)
    """Working memory: a short while the close is more than this fraction below the
    window's highest close is cut to ``short_guard_scale``."""
    short_guard_scale: float = Field(default=1.0, ge=0, le=1)
    """Working memory: size multiplier of such a short (0 = no short; 1 = the rule is
    off, the default: it did not raise the mean Sharpe on 2021-2023)."""
    drawdown_limit: float | None = Field(default=0.025, gt=0, lt=1)
    """Working memory: the account's drawdown from its high-water mark at which the size
    reaches ``drawdown_floor`` (Grossman & Zhou 1993: exposure in proportion to the
    cushion above ``(1 - limit) x peak``); None = the rule is off. 0.025 with the floor
    0.1 was chosen on the 2021-2023 4h windows only (mean change of chained Sharpe vs
    memory off, all tiers: limit 0.10 / 0.05 / 0.025 / 0.0125 at floor 0.1: +0.332 /
    +0.664 / +0.737 / +0.571; docs/benchmarks.md)."""
    drawdown_floor: float = Field(default=0.1, ge=0, le=1)
    """Working memory: the lowest size multiplier of the drawdown rule (floors under 0.1,
    an agent that all but stops trading, were not considered)."""
    offprofile_scale: float = Field(default=0.5, ge=0, le=1)
    """Persona: size multiplier for an asset or a direction the trader rarely trades."""
    bias_share: float = Field(default=0.7, gt=0.5, le=1)
    """Persona: a long share at or above this (or at or below 1 - this) is a direction
    bias."""
    outcome_horizon_bars: int = Field(default=24, ge=1)
    context_every_bars: int = Field(default=1, ge=1)
    """Retrieve memory and build the prompt context every N bars (1 = every bar); between,
    the decision reuses the last context (a cache of it: stale by up to N - 1 bars, and
    the decisions change). Measured (``scripts/bench_backtest.py --backend memory``, May
    2022 BTC/USDT 1h, warm embedding cache, 2026-12-08): 260-263 decisions/s at 1,
    447-767 at 8; total return -2.2487% at 1, -2.8033% at 8. The 10,000-step soak uses 8
    to stay within its time; every other run keeps 1."""


class PaperSettings(_Section):
    """The paper-trading loop (``sentinel paper``)."""

    warmup_bars: int = Field(default=800, ge=10, le=100_000)
    """Closed candles fetched before the first decision (features need 30 days)."""
    delay_s: float = Field(default=5.0, ge=0, le=3600)
    """Seconds after a bar's close before the loop fetches it (the exchange closes it)."""

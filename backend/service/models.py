"""Typed models of the scheduler service and the paper-trading loop (defined only here).

Units: prices, cash, equity, fees in quote currency; quantities in base units (signed,
short < 0); exposure as a fraction of equity; times are aware UTC datetimes.
"""

from __future__ import annotations

from typing import Literal

from pydantic import AwareDatetime, Field

from backend.agents import ManagerState
from backend.backtest.models import BrokerState
from backend.types import FrozenModel

__all__ = [
    "ConsolidationResult",
    "JobInfo",
    "OutcomeResolution",
    "PaperState",
    "PaperStepResult",
    "PersonaRefreshResult",
]


class JobInfo(FrozenModel):
    """One scheduled job as ``sentinel scheduler jobs --json`` prints it."""

    id: str
    name: str
    trigger: str
    """apscheduler's text of the trigger, e.g. ``interval[1:00:00]``, ``cron[minute='5']``."""
    next_run_time: AwareDatetime | None
    """``None`` for a paused job."""


class PersonaRefreshResult(FrozenModel):
    """What one persona refresh did: the trader's fills read from the source, those
    newer than the cursor (the newest fill ingested before), the profile version before
    and after (equal when nothing changed)."""

    trader_id: str
    as_of: AwareDatetime
    source: str
    fills_read: int = Field(ge=0)
    fills_new: int = Field(ge=0)
    version_before: int = Field(ge=0)
    version_after: int = Field(ge=0)
    cursor_ms: int | None = None
    """Timestamp (ms) of the newest fill ingested so far."""
    warning: str | None = None
    """Set when the source holds fills of other traders and none of this one (a mistyped
    or case-changed id had refreshed nothing at every run, as a success)."""


class ConsolidationResult(FrozenModel):
    """What one consolidation did for one trader: ``context`` episodes made from
    working-memory overflow, episodes decayed, episodes pruned (and protected ones kept)."""

    trader_id: str
    as_of: AwareDatetime
    consolidated: int = Field(ge=0)
    decayed: int = Field(ge=0)
    pruned: list[str] = Field(default_factory=list)
    protected: int = Field(ge=0, default=0)
    """Prune candidates kept because an open position or a pending outcome needs them."""
    replay_clock: AwareDatetime | None = None
    """The earliest clock of a replay paper run of this trader behind ``as_of``: episodes
    that occurred by then are not pruned (the replay reads them, and a delete hides an
    episode at every time); decay still applies, fenced by time."""


class OutcomeResolution(FrozenModel):
    """Outcomes of past decisions written by the resolution job for one trader."""

    trader_id: str
    as_of: AwareDatetime
    resolved: list[str] = Field(default_factory=list)
    already: int = Field(ge=0, default=0)
    """Decisions that already had an outcome (skipped: the job is idempotent)."""
    pending: int = Field(ge=0, default=0)
    """Decisions whose horizon has not passed, whose paper loop will resolve them, or
    without prices for the horizon."""


class PaperState(FrozenModel):
    """Everything a paper run needs to continue after a restart (besides its candles,
    decisions, fills and trades, stored as rows, and the memory store)."""

    run_id: str
    exchange: str
    pair: str
    timeframe: str
    trader_id: str
    clock: Literal["live", "replay"]
    replay_from: AwareDatetime | None = None
    """Where a replay run's clock started (None: a live run, or a state saved before
    this was kept); a resume asking for another start is refused."""
    broker: BrokerState
    pending: tuple[float, str | None] | None = None
    """Target exposure (and decision episode id) decided at the last close, filled at the
    next bar's open."""
    ruined: bool = False
    manager: ManagerState | None = None
    last_close: AwareDatetime | None = None
    """Close time of the last bar decided on."""
    last_now: AwareDatetime | None = None
    """The clock time of the last step."""
    steps: int = Field(default=0, ge=0)
    idle_steps: int = Field(default=0, ge=0)
    """Consecutive steps, up to the last, that found no new closed candle (a feed that
    returns nothing, or went stale); 0 after a step that decided a bar."""
    bars: int = Field(default=0, ge=0)
    """Bars decided on so far."""
    llm_decisions: int = Field(default=0, ge=0)
    """Of those, decisions a chat model was asked for ..."""
    llm_answered: int = Field(default=0, ge=0)
    """... and the ones it answered usably (``backend.backtest.metrics.llm_usage``)."""
    llm_first_error: str | None = None
    """The first error of an unanswered decision."""
    memory_error_decisions: int = Field(default=0, ge=0)
    """Decisions so far at which the memory failed to read or write (``DecisionRecord
    .memory_errors``; a write that failed is tried again at the next flushes)."""
    memory_first_error: str | None = None
    """The first of those failures."""
    memory_writes: int = Field(default=0, ge=0)
    """The memory's writes so far, and ... (``BacktestMetrics.memory_writes``)"""
    memory_writes_failed: int = Field(default=0, ge=0)
    """... those that failed (``BacktestMetrics.memory_writes_failed``)."""
    warmup_decisions: int = Field(default=0, ge=0)
    """Bars decided so far that were holds while the features warmed up
    (``BacktestMetrics.warmup_decisions``)."""


class PaperStepResult(FrozenModel):
    """One step of the paper loop: the clock time, the candles fetched, the bars decided
    on (their close times and actions), the account marked at the last close."""

    run_id: str
    now: AwareDatetime
    fetched: int = Field(ge=0)
    decided: list[tuple[AwareDatetime, str, float]] = Field(default_factory=list)
    """``(bar close, action, size)`` per bar decided in this step."""
    equity: float | None = None
    exposure: float | None = None
    fills: int = Field(ge=0, default=0)
    trades: int = Field(ge=0, default=0)
    """Positions closed in this step (``BacktestMetrics.n_trades``'s count: a position
    reduced in steps is one trade, at the step that left it flat)."""
    llm_asked: int = Field(ge=0, default=0)
    """Decisions of this step asked of the chat model (0 with the rule policy)."""
    llm_answered: int = Field(ge=0, default=0)
    """Of ``llm_asked``, those it answered usably."""
    warning: str | None = None
    """Said at every step while the run's model has answered less than
    ``llm.min_answered_share`` of the decisions asked of it so far (``LLMUsage.warning``):
    a dead endpoint shows in every job run's summary and a WARNING log line, not only in
    the saved state."""
    failure: str | None = None
    """What of ``warning`` is a dependency's failure (``paper_failure``: the chat model or
    the memory below ``llm.min_answered_share``); ``sentinel scheduler run-once`` exits 3
    on it, as ``sentinel paper`` does."""

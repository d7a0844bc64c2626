"""What a :class:`~backend.agents._memory_writer.MemoryWriter` holds between bars: a
scheduled outcome (:class:`DueOutcome`), the
failed writes it tries again (:func:`retry_or_drop`), and the writer's whole state as
persisted (:class:`WriterState`, for a loop that restarts: paper trading, whose every
step restores a new writer)."""

from __future__ import annotations

from collections.abc import MutableMapping, Sequence
from datetime import datetime

from pydantic import AwareDatetime, BaseModel, ConfigDict

from backend.backtest.models import TradeRecord
from backend.errors import SentinelError, UnknownRecordError
from backend.memory.models import Episode, Outcome

__all__ = [
    "WRITE_ATTEMPTS",
    "DueOutcome",
    "WriterState",
    "closed_positions",
    "position_result",
    "positions",
    "retry_or_drop",
]

WRITE_ATTEMPTS = 3
"""Flushes at which a failed episode or outcome write is tried before it is dropped
(:mod:`backend.agents._memory_writer`): with the default ``flush_every`` of 24 bars, two
days of 1h bars for a store to come back."""


def retry_or_drop(attempts: MutableMapping[str, int], key: str, err: SentinelError) -> int:
    """Count a failed flush of the write ``key`` (``err``) in ``attempts``: 0 when it is
    to be tried again at the next flush, else the flushes it failed at (it is dropped,
    and forgotten here). An episode the store does not have (:class:`UnknownRecordError`:
    the outcome of an episode that was dropped or deleted) fails the same way again: it
    is dropped at once."""
    tries = attempts.get(key, 0) + 1
    if tries < WRITE_ATTEMPTS and not isinstance(err, UnknownRecordError):
        attempts[key] = tries
        return 0
    attempts.pop(key, None)
    return tries


class DueOutcome(BaseModel):
    """A scheduled outcome, held by the writer and persisted (:class:`WriterState`): the
    episode, when its
    horizon ends, the close at the episode (quote currency), the signed exposure its
    decision targeted (None: no PnL) and the equity then (quote currency)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    due: AwareDatetime
    episode_id: str
    start_close: float
    exposure: float | None
    equity: float


class WriterState(BaseModel):
    """What a :class:`MemoryWriter` holds between bars that is not in the store yet:
    buffered episodes (detected and decisions), scheduled and queued outcomes, queued and
    absorbed closed trades,
    the flush counter and the stats (:meth:`MemoryWriter.export_state`). Detected
    episodes already added are not listed: they are every episode that occurred at or
    before the last bar processed (the manager passes that time to
    :meth:`MemoryWriter.restore_state`)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    buffer: list[Episode] = []
    bars_since_flush: int = 0
    due: list[DueOutcome] = []
    queued: list[tuple[str, Outcome]] = []
    """Outcomes resolved but not written yet: ``(episode id, outcome)``."""
    trades: list[TradeRecord] = []
    absorbed: dict[str, list[TradeRecord]] = {}
    stats: dict[str, int] = {}
    attempts: dict[str, int] = {}
    """Failed flushes so far of each write still to be tried again (episode id, or an
    outcome's key): kept, so a paper loop, which restores a new writer at every step,
    drops a write that keeps failing after :data:`WRITE_ATTEMPTS` flushes too."""


def positions(trades: Sequence[TradeRecord]) -> list[list[TradeRecord]]:
    """``trades`` grouped by position, in order of first appearance: the rows sharing
    :attr:`TradeRecord.position_key` (each reduction of one position is a row)."""
    groups: dict[tuple[object, ...], list[TradeRecord]] = {}
    for trade in trades:
        groups.setdefault(trade.position_key, []).append(trade)
    return list(groups.values())


def closed_positions(
    trades: Sequence[TradeRecord], as_of: datetime
) -> tuple[list[list[TradeRecord]], list[TradeRecord]]:
    """``(the positions whose closing row, closes_position, exited by as_of, the other
    rows)``: a position's reductions wait for the row that closes it."""
    groups = positions(trades)
    ready = [g for g in groups if any(t.closes_position and t.exit_time <= as_of for t in g)]
    done = {id(t) for rows in ready for t in rows}
    return ready, [t for t in trades if id(t) not in done]  # in their order


def position_result(rows: Sequence[TradeRecord]) -> tuple[float, float]:
    """``(market return, PnL)`` of a position's rows: the quantity-weighted exit price
    over the quantity-weighted entry price - 1 (a fraction), and the rows' PnL summed
    (quote currency)."""
    entry = sum(t.quantity * t.entry_price for t in rows)
    exit_ = sum(t.quantity * t.exit_price for t in rows)
    return exit_ / entry - 1.0, sum(t.pnl for t in rows)

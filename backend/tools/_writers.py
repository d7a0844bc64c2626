"""What the toolkit writes through, and the decision episode it writes: the writer
Protocols of the memory tiers (working, episodic, persona) a
:class:`~backend.tools.memory_toolkit.MemoryToolkit` is built with, and
:func:`decision_episode` (also the decision loop's, :mod:`backend.agents`)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, Protocol

from backend.memory.conversation import PersonaWriter
from backend.memory.models import ActionLink, Episode, MarketSnapshot, Outcome
from backend.storage.models import stable_id
from backend.types import Action

__all__ = ["EpisodicWriter", "PersonaWriter", "WorkingWriter", "decision_episode"]


class WorkingWriter(Protocol):
    def observe(self, snapshot: MarketSnapshot) -> Any: ...


class EpisodicWriter(Protocol):
    def add(self, episodes: Sequence[Episode], *, as_of: datetime) -> Any: ...

    def get(self, trader_id: str, ids: Sequence[str], *, as_of: datetime) -> list[Episode]: ...

    def record_outcome(
        self, trader_id: str, episode_id: str, outcome: Outcome, *, as_of: datetime
    ) -> Any: ...


def decision_episode(
    trader_id: str,
    *,
    symbol: str,
    action: Action,
    size: float,
    rationale: str,
    memory_ids: Sequence[str],
    as_of: datetime,
    market_state: str = "",
    importance: float = 0.3,
    state: dict[str, float] | None = None,
) -> Episode:
    """The ``decision`` episode of a decision taken at ``as_of`` (its id is stable per
    trader, symbol and time; ``size`` is a fraction of equity; ``state``: the bar's
    feature values, so the episode can be recalled by market state)."""
    decision_id = stable_id("decision", trader_id, symbol, as_of.isoformat())
    description = f"Decision {action} {size:.0%} of equity on {symbol}: {rationale}"
    if market_state:
        description = f"{market_state} | {description}"
    return Episode(
        id=decision_id,
        trader_id=trader_id,
        symbol=symbol,
        event_type="decision",
        occurred_at=as_of,
        description=description,
        importance=importance,
        actions=[ActionLink(decision_id=decision_id, action=action, size=size, at=as_of)],
        memory_ids=list(memory_ids),
        state=dict(state or {}),
    )

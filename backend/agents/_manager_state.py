"""What a :class:`~backend.agents.deep_trader_manager.DeepTraderManager` carries from one
bar to the next besides the memory store (:class:`ManagerState`), and the in-process
persona of the memory-off ablation that is part of it (:func:`seed_profile`)."""

from __future__ import annotations

from datetime import date, datetime

from pydantic import AwareDatetime, BaseModel, ConfigDict

from backend.agents._writer_state import WriterState
from backend.agents.memory import empty_profile, route_decisions, text_decisions
from backend.memory.models import MemoryContext, PersonaProfile, RenderedContext

__all__ = ["ManagerState", "seed_profile"]


class ManagerState(BaseModel):
    """What a :class:`DeepTraderManager` carries from one bar to the next besides the
    memory store (:meth:`DeepTraderManager.export_state`): the bar counter (for
    ``context_every_bars``), the first/last bar processed, the day and its start equity
    (quote currency, for the daily-loss constraint), the cached context, the in-process
    profile of the memory-off ablation, the violation count and the writer's state."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    bars: int = 0
    first: AwareDatetime | None = None
    last: AwareDatetime | None = None
    day: date | None = None
    day_equity: float | None = None
    context: tuple[MemoryContext, RenderedContext] | None = None
    static_profile: PersonaProfile | None = None
    violations: int = 0
    writer: WriterState | None = None


def seed_profile(trader_id: str, note: str, as_of: datetime) -> PersonaProfile | None:
    """The profile the seed ``note`` makes of an empty persona at ``as_of``, built in
    process with the rules (memory off: nothing is stored); None if it changes nothing."""
    decisions = text_decisions(note)
    start = empty_profile(trader_id, as_of)
    routed = route_decisions(start, decisions, as_of=as_of, source="rules", evidence_id="seed-note")
    return routed.profile if routed.profile.version else None

"""The candidate event of the detectors and their severity scale (shared by detector modules)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime

from backend.memory.models import EpisodeType
from backend.storage.models import stable_id
from backend.types import to_utc

__all__ = ["DetectedEvent", "severity"]


@dataclass(frozen=True)
class DetectedEvent:
    """A candidate episode: what fired, when it became known (UTC) and how severe (0..1)."""

    event_type: EpisodeType
    symbol: str
    at: datetime
    severity: float
    reason: str
    state: dict[str, float] = field(default_factory=dict)
    sources: tuple[str, ...] = ()
    key: str = ""
    """Extra identity (the topic of a news shock), part of the episode id."""

    def episode_id(self, trader_id: str) -> str:
        """Stable id: the same event of the same trader always gets the same id."""
        at = to_utc(self.at).isoformat()
        return stable_id("episode", trader_id, self.symbol, self.event_type, at, self.key)


def severity(excess: float) -> float:
    """``1 - 0.5 / excess`` clipped to [0, 1]: 0.5 at the threshold (``excess = 1``)."""
    if not math.isfinite(excess) or excess <= 0:
        return 0.0
    return min(1.0, max(0.0, 1.0 - 0.5 / excess))

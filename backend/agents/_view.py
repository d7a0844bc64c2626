"""What a policy sees at one bar close (:class:`DecisionView`) and what it is
(:class:`Policy`); shared by the rule and LLM policies and the manager."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol

from backend.backtest.models import BarContext, Decision
from backend.memory import FeatureRow
from backend.memory.memory_ids import account_id, constraints_id, persona_id, snapshot_id
from backend.memory.models import MemoryContext

__all__ = ["DecisionView", "Policy", "daily_vol"]

_YEAR_DAYS = 365.0


def daily_vol(row: FeatureRow) -> float | None:
    """Daily return standard deviation (fraction) from the 1-day realised vol
    (annualised over a 365-day year), None when unknown."""
    rv = row.values.get("rv_short", math.nan)
    return rv / math.sqrt(_YEAR_DAYS) if math.isfinite(rv) and rv > 0 else None


@dataclass(frozen=True)
class DecisionView:
    """Everything a policy may see at the close of one bar (nothing later).

    ``features``: the bar's row of :func:`backend.memory.compute_features` (the same bar
    as ``bar``); ``context``: the retrieved memory (None with memory off); ``prompt``:
    its rendered section (None with memory off); ``prompt_ids``: ids of the memories in
    ``prompt`` (``RenderedContext.memory_ids``).
    """

    bar: BarContext
    features: FeatureRow
    context: MemoryContext | None = None
    prompt: str | None = None
    prompt_ids: tuple[str, ...] = ()

    def known_ids(self) -> set[str]:
        """Ids of every memory this view holds (a cited id must be one of them)."""
        ids = set(self.prompt_ids)
        ctx = self.context
        if ctx is not None:
            if ctx.persona is not None:
                ids.update({persona_id(ctx.persona), constraints_id(ctx.persona)})
            ids.update(snapshot_id(s) for s in ctx.working)
            if ctx.account is not None:
                ids.add(account_id(ctx.account))
            ids.update(s.episode.id for s in ctx.episodes)
        return ids


class Policy(Protocol):
    """Decides at one bar close. Must not raise for market or memory content."""

    def decide(self, view: DecisionView) -> Decision: ...

"""The agent's persona memory (O-Mem, arXiv 2511.13593): who the trader is, versioned in Khala.

Public API::

    from backend.agents.memory import PersonaManager, render_profile
    personas = PersonaManager(store, llm=build_llm(settings.llm))
    personas.build_from_fills(trader_id, fills, as_of=now)
    personas.update_from_text(trader_id, "never more than 2% per trade", as_of=now)
    profile = personas.get_profile(trader_id, now)

The pure parts work without a store: the fill features (:mod:`._persona_features`),
the text rules (:mod:`._persona_text`) and the router (:mod:`._persona_router`). Names
are imported lazily on first use.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from backend.agents.memory._persona_features import (
        STYLE_THRESHOLDS_H,
        compute_persona_attributes,
        holding_samples,
        normalize_fills_frame,
    )
    from backend.agents.memory._persona_positions import (
        asset_shares,
        opening_notional,
        traded_fills,
    )
    from backend.agents.memory._persona_render import render_profile
    from backend.agents.memory._persona_router import (
        RouteResult,
        empty_profile,
        route_decisions,
        route_failure,
        route_fill_attributes,
    )
    from backend.agents.memory._persona_text import text_decisions
    from backend.agents.memory.persona_manager import PersonaManager, timeline_to_frame

__all__ = [
    "STYLE_THRESHOLDS_H",
    "PersonaManager",
    "RouteResult",
    "asset_shares",
    "compute_persona_attributes",
    "empty_profile",
    "holding_samples",
    "normalize_fills_frame",
    "opening_notional",
    "render_profile",
    "route_decisions",
    "route_failure",
    "route_fill_attributes",
    "text_decisions",
    "timeline_to_frame",
    "traded_fills",
]

_WHERE = {
    "STYLE_THRESHOLDS_H": "_persona_features",
    "holding_samples": "_persona_features",
    "normalize_fills_frame": "_persona_features",
    "asset_shares": "_persona_positions",
    "opening_notional": "_persona_positions",
    "traded_fills": "_persona_positions",
    "compute_persona_attributes": "_persona_features",
    "render_profile": "_persona_render",
    "RouteResult": "_persona_router",
    "empty_profile": "_persona_router",
    "route_decisions": "_persona_router",
    "route_failure": "_persona_router",
    "route_fill_attributes": "_persona_router",
    "text_decisions": "_persona_text",
    "PersonaManager": "persona_manager",
    "timeline_to_frame": "persona_manager",
}


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)

"""The trading agent: the :class:`DeepTraderManager` decision loop, its policies and the
memory system it runs on; :mod:`backend.agents.memory` is its persona memory.

Built by :mod:`backend.compose` (the composition root), which this package never imports.
"""

from backend.agents._manager import ManagerState
from backend.agents._outcomes import horizon_label
from backend.agents.deep_trader_manager import (
    DEFAULT_CONSTRAINTS_NOTE,
    DeepTraderManager,
    situation_query,
)
from backend.agents.system import MemorySystem

__all__ = [
    "DEFAULT_CONSTRAINTS_NOTE",
    "DeepTraderManager",
    "ManagerState",
    "MemorySystem",
    "horizon_label",
    "situation_query",
]

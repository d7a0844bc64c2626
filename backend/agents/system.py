"""The built memory system the agent runs on (built by :mod:`backend.compose`)."""

from __future__ import annotations

from dataclasses import dataclass

from backend.agents.memory import PersonaManager
from backend.llm import LLMClient
from backend.memory import EpisodicMemory, WorkingMemory
from backend.memory.hierarchical import HierarchicalMemory
from backend.storage import KhalaStore
from backend.tools.memory_toolkit import MemoryToolkit

__all__ = ["MemorySystem"]


@dataclass(frozen=True)
class MemorySystem:
    """Every part of the hierarchical memory, wired together."""

    store: KhalaStore
    persona: PersonaManager
    working: WorkingMemory
    episodic: EpisodicMemory
    memory: HierarchicalMemory
    toolkit: MemoryToolkit
    llm: LLMClient | None

    def close(self) -> None:
        """Stop the retrieval threads and close the working-memory state and audit trail."""
        self.memory.close()
        self.working.close()
        self.store.close()

    def __enter__(self) -> MemorySystem:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

"""Composition root helpers: build the whole memory system from :class:`Settings`.

Only entry points (the CLI, scripts, the scheduler) call this; library code receives the
built parts. Nothing here reads the clock.
"""

from __future__ import annotations

from dataclasses import dataclass

from backend.agents.memory import PersonaManager
from backend.config import Settings
from backend.embeddings import Embedder, build_embedder
from backend.llm import LLMClient, build_llm
from backend.memory import EpisodicMemory, WorkingMemory
from backend.storage import KhalaStore, open_store
from backend.storage.hierarchical_memory import HierarchicalMemory
from backend.tools.memory_toolkit import MemoryToolkit

__all__ = ["MemorySystem", "build_memory_system"]


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


def build_memory_system(
    settings: Settings,
    *,
    embedder: Embedder | None = None,
    store: KhalaStore | None = None,
    llm: LLMClient | None = None,
) -> MemorySystem:
    """Build store, tiers, orchestrator and toolkit as configured.

    ``embedder``/``store``/``llm`` override what the settings would build (tests, sharing
    one store between systems). The LLM is used for persona text when configured; the
    offline default is the deterministic rules. Raises the errors of the parts it builds
    (:class:`~backend.errors.EmbeddingModelError`, :class:`~backend.errors.StoreError`, ...).
    """
    if store is None:
        store = open_store(
            settings.store, embedder if embedder is not None else build_embedder(settings.embedding)
        )
    llm = llm if llm is not None else build_llm(settings.llm)
    persona = PersonaManager(store, llm=llm)
    episodic = EpisodicMemory(store, settings=settings.memory)
    # a throwaway (ephemeral) store cannot be resumed: its working windows stay in memory
    ephemeral = settings.store.mode == "ephemeral"
    working = WorkingMemory(
        store,
        settings=settings.memory,
        episodic=episodic,
        state_path=None if ephemeral else settings.working_state_file,
    )
    memory = HierarchicalMemory(
        persona=persona, working=working, episodic=episodic, settings=settings.memory
    )
    toolkit = MemoryToolkit(memory, working=working, episodic=episodic, persona=persona)
    return MemorySystem(store, persona, working, episodic, memory, toolkit, llm)

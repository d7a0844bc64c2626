"""What :class:`~backend.memory.conversation.ConversationMemory` writes the trader's words
into, as protocols: the persona (:class:`PersonaWriter`, the ``PersonaManager``) and the
episodic memory (:class:`EpisodeWriter`, for the conversation events)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, Protocol

from backend.memory.models import Episode, PersonaChange, PersonaProfile

__all__ = ["EpisodeWriter", "PersonaWriter"]


class PersonaWriter(Protocol):
    """What reads a trader's words into the persona (``PersonaManager``): the changes
    made, each with the version it made (one protocol: the MCP toolkit uses it too)."""

    def update_from_text(
        self,
        trader_id: str,
        text: str,
        *,
        as_of: datetime,
        note_id: str | None = None,
        lift_note: str | None = None,
    ) -> Sequence[PersonaChange]: ...

    def get_profile(self, trader_id: str, as_of: datetime) -> PersonaProfile | None: ...


class EpisodeWriter(Protocol):
    def add(self, episodes: Sequence[Episode], *, as_of: datetime) -> Any: ...

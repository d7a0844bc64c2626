"""How a decision context (and ``recall``) names the memories it holds, and how such an
id is read back (:func:`parse_memory_id`): ``persona:v3``, ``persona:v3:constraints``,
``working:BTC/USDT@<ISO>``, ``working:account:BTC/USDT:1h@<ISO>``, ``message:<id>``; any
other id is an episode's."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from backend.memory.models import AccountState, MarketSnapshot, PersonaProfile

__all__ = [
    "MemoryRef",
    "account_id",
    "constraints_id",
    "memory_kind",
    "memory_label",
    "message_memory_id",
    "parse_memory_id",
    "persona_id",
    "snapshot_id",
]


def persona_id(profile: PersonaProfile) -> str:
    return f"persona:v{profile.version}"


def constraints_id(profile: PersonaProfile) -> str:
    """The id of the block of the profile's hard constraints."""
    return persona_id(profile) + _CONSTRAINTS


def snapshot_id(snapshot: MarketSnapshot) -> str:
    return f"working:{snapshot.symbol}@{snapshot.as_of.isoformat()}"


def account_id(account: AccountState) -> str:
    return f"working:account:{account.symbol}:{account.timeframe}@{account.as_of.isoformat()}"


def message_memory_id(message_key: str) -> str:
    """The memory id of the stored message whose own id is ``message_key``."""
    return _MESSAGE + message_key


_CONSTRAINTS, _WORKING, _MESSAGE = ":constraints", "working:", "message:"
_PERSONA_RE = re.compile(r"persona:v([1-9][0-9]*)(?::constraints)?")
"""ASCII digits only (``str.isdigit`` also takes "²", which ``int`` refuses)."""


@dataclass(frozen=True)
class MemoryRef:
    """What a memory id names: a persona ``version``, a working snapshot or account
    stamped ``at`` (aware UTC), a message (``key``: its own id) or an episode (``key``:
    the episode id)."""

    tier: Literal["persona", "working", "conversation", "episodic"]
    key: str = ""
    version: int = 0
    at: datetime | None = None


def parse_memory_id(memory_id: str) -> MemoryRef | None:
    """The :class:`MemoryRef` of an id made by the builders above (``persona:v3``,
    ``persona:v3:constraints``, ``working:BTC/USDT@<ISO>``, ``working:account:...@<ISO>``,
    ``message:<id>``); any other id is an episode's. None for a malformed persona or
    working id (a version not a positive integer, a time that is not ISO-8601 with a
    zone)."""
    if memory_id.startswith("persona:"):
        found = _PERSONA_RE.fullmatch(memory_id)
        return MemoryRef("persona", version=int(found.group(1))) if found else None
    if memory_id.startswith(_WORKING):
        try:
            at = datetime.fromisoformat(memory_id.rpartition("@")[2])
        except ValueError:
            return None
        return MemoryRef("working", at=at) if at.utcoffset() is not None else None
    if memory_id.startswith(_MESSAGE):
        return MemoryRef("conversation", key=memory_id.removeprefix(_MESSAGE))
    return MemoryRef("episodic", key=memory_id)


def memory_kind(
    memory_id: str,
) -> Literal["constraints", "persona", "account", "snapshot", "message", "episode"]:
    """What a memory id of the builders above names, by its prefix alone (no parsing)."""
    if memory_id.startswith("persona:"):
        return "constraints" if memory_id.endswith(_CONSTRAINTS) else "persona"
    if memory_id.startswith(_WORKING + "account:"):
        return "account"
    if memory_id.startswith(_WORKING):
        return "snapshot"
    return "message" if memory_id.startswith(_MESSAGE) else "episode"


def memory_label(memory_id: str) -> str:
    """A short name of what ``memory_id`` holds, in the words a decision context uses:
    ``hard constraints``, ``profile``, ``BTC/USDT 2022-05-09 03:00Z`` (a market
    snapshot), ``account 2022-05-09 12:00Z``; a message or an episode (or a malformed
    working id) by the id itself. For the LLM policy's citation keys."""
    kind = memory_kind(memory_id)
    if kind == "constraints":
        return "hard constraints"
    if kind == "persona":
        return "profile"
    ref = parse_memory_id(memory_id) if kind in ("snapshot", "account") else None
    if ref is None or ref.at is None:
        return memory_id
    at = f"{ref.at:%Y-%m-%d %H:%M}Z"
    if kind == "account":
        return f"account {at}"
    return f"{memory_id.removeprefix(_WORKING).rpartition('@')[0]} {at}"

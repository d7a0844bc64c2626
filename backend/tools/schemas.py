"""Argument models of the memory tools: one definition for every protocol.

Each model is the input of one :class:`~backend.tools.memory_toolkit.MemoryToolkit` tool.
The OpenAI function-calling schemas (``openai.pydantic_function_tool``) and the MCP tool
input schemas (``model_json_schema()``, :mod:`backend.tools.mcp_server`) are both
generated from these classes, and both protocols validate a call against them.

Scope and time are never arguments: the trader id and ``as_of`` come from the caller
(the decision loop, or the MCP server's fixed trader and clock). Every model forbids
extra keys, so a call that names ``trader_id`` or ``as_of`` is refused, not ignored.
"""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from backend.memory.hierarchical import ALL_TIERS
from backend.memory.models import EventType, Tier
from backend.types import MAX_SIZE, Action, normalize_pair

_COIN = re.compile(r"(?=.*[A-Za-z0-9])[A-Za-z0-9@._-]+")
"""A bare coin or an exchange's market id (Hyperliquid's spot ``@107``): at least one
letter or digit (``.`` alone had been stored as a coin)."""


def _symbol(value: str) -> str:
    """A pair in any spelling as its ccxt symbol (``BTCUSDT`` -> ``BTC/USDT``, as the
    decision loop stores it); a bare coin or market id (letters, digits, ``@._-``) as
    given, stripped. Anything else (``a/b/c``, spaces, control characters) raises
    ``ValueError``: a filter no memory can match would answer nothing, quietly."""
    try:
        return normalize_pair(value)
    except ValueError:
        coin = value.strip()
        if _COIN.fullmatch(coin) is None:  # said without the value (it may be a secret)
            raise ValueError(
                "not a pair (expected BASE/QUOTE, e.g. BTC/USDT) nor a coin (letters, "
                "digits and @._- only)"
            ) from None
        return coin


Symbol = Annotated[str, Field(min_length=1, max_length=40), AfterValidator(_symbol)]
"""A symbol argument: a ccxt symbol (or any spelling of a pair, normalised)."""

__all__ = [
    "BuildContextArgs",
    "ProfileArgs",
    "RecallArgs",
    "RecordDecisionArgs",
    "RecordEventArgs",
    "RecordMessageArgs",
    "RecordNoteArgs",
    "RecordOutcomeArgs",
    "ToolArgs",
]


class ToolArgs(BaseModel):
    """Base of every tool's arguments: unknown keys are an error, strings are stripped
    (a blank text is as missing), numbers are finite (no NaN or infinity), and types are
    strict, as the published schemas say (``true`` or ``"2"`` for an integer had run as
    1 and 2, and ``importance: true`` was stored as 1.0; an integer for a number is
    fine)."""

    model_config = ConfigDict(
        extra="forbid", str_strip_whitespace=True, allow_inf_nan=False, strict=True
    )


class RecallArgs(ToolArgs):
    """Recall memories relevant to a query: the trader's profile, the current market of
    a symbol, what the trader said that answers it (with the working tier) and similar
    past episodes, as a list of hits with their ids."""

    query: str = Field(min_length=1, max_length=2000)
    symbol: Symbol | None = Field(
        default=None,
        description="ccxt symbol, e.g. BTC/USDT; omitted: episodes of every symbol and no "
        "current-market snapshot",
    )
    tiers: list[Tier] = Field(
        default_factory=lambda: list(ALL_TIERS),
        min_length=1,
        description="persona, working (the market now and the conversation), episodic",
    )
    top_k: int = Field(
        default=5, ge=1, le=50,
        description="at most this many episodes, messages and (newest) market snapshots",
    )  # fmt: skip


class ProfileArgs(ToolArgs):
    """Get the trader's profile (risk tolerance, preferred assets, hard constraints, ...)."""


class RecordNoteArgs(ToolArgs):
    """Record something the trader said about themselves (risk, assets, limits, plans);
    it updates the trader's profile where it states a preference or a constraint."""

    text: str = Field(min_length=1, max_length=4000)
    note_id: str | None = Field(
        default=None, min_length=1, max_length=120, description="the message's own id"
    )


class RecordMessageArgs(ToolArgs):
    """Record one message of the conversation with the trader (theirs or the agent's) at
    the current time: it becomes recallable with its id, the trader's words update their
    profile, and a liquidation, life change or plan it tells of becomes an episode."""

    text: str = Field(min_length=1, max_length=20_000)
    speaker: str = Field(
        default="trader", min_length=1, max_length=200,
        description="who said it; 'assistant' or 'agent' for the agent's own words",
    )  # fmt: skip
    session: str = Field(default="default", min_length=1, max_length=200)
    message_id: str | None = Field(
        default=None, min_length=1, max_length=200,
        description=(
            "the message's own id (default: derived from time and text); give it to make"
            " a retry safe: the same id, speaker, session and text again is answered as"
            " already recorded"
        ),
    )  # fmt: skip
    image_caption: str | None = Field(default=None, max_length=10_000)


class RecordEventArgs(ToolArgs):
    """Remember a salient market event as an episode."""

    symbol: Symbol
    event_type: EventType
    description: str = Field(min_length=1, max_length=2000)
    importance: float = Field(ge=0.0, le=1.0)
    event_id: str | None = Field(
        default=None, min_length=1, max_length=200,
        description=(
            "the event's own id (default: derived from time and text); give it to make a"
            " retry safe: the same id and event again is answered as already recorded"
        ),
    )  # fmt: skip


class RecordDecisionArgs(ToolArgs):
    """Record a trading decision with the ids of the memories it was based on."""

    symbol: Symbol
    action: Action
    size: float = Field(ge=0.0, le=MAX_SIZE, description="fraction of equity")
    rationale: str = Field(min_length=1, max_length=2000)
    memory_ids: list[str] = Field(
        default_factory=list,
        max_length=50,
        description="ids of the memories it used, as recall returned them (hits[].id)",
    )
    decision_id: str | None = Field(
        default=None, min_length=1, max_length=200,
        description=(
            "the decision's own id (default: one decision per symbol and time); give it"
            " to make a retry safe: the same id and decision again is answered as already"
            " recorded"
        ),
    )  # fmt: skip


class RecordOutcomeArgs(ToolArgs):
    """Record what happened after a decision or event; updates its importance."""

    episode_id: str = Field(min_length=1, max_length=256)
    horizon: str = Field(
        pattern=r"^(?:\d{1,6}[mhdwMy]|trade)$",
        description="the horizon it is measured over: 24h, 4d, 1w, or trade (a closed trade)",
    )  # a label, never free text: it is rendered in the decision context unquoted
    market_return: float = Field(ge=-1.0, le=100.0, description="fraction, 0.05 = +5%")
    pnl: float | None = Field(default=None, description="quote currency")


class BuildContextArgs(ToolArgs):
    """Build the memory section of the decision prompt within a token budget."""

    symbol: Symbol
    query: str | None = Field(default=None, max_length=2000)
    budget: int | None = Field(default=None, ge=100, le=100_000)

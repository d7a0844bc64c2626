"""MemoryToolkit: the high-level memory interface agents use, and its tools.

Python callers use the methods; an agent uses the same operations as tools whose JSON
schemas are generated from the pydantic argument models of :mod:`backend.tools.schemas`:
OpenAI function calling through :meth:`MemoryToolkit.tool_schemas` and
:meth:`MemoryToolkit.dispatch`, MCP through :mod:`backend.tools.mcp_server`; both run
:meth:`MemoryToolkit.call`.

Scope and time are never tool arguments: the trader id and ``as_of`` come from the caller
(the decision loop, or the MCP server's fixed trader and clock), so a tool call cannot
read another trader's memory or the future. Argument models forbid extra keys.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import ValidationError

from backend.errors import ToolError
from backend.tools._operations import MemoryOperations
from backend.tools._tool_io import (
    ToolSpec,
    ToolTable,
    dispatch_json,
    openai_schemas,
    parse_args,
    profile_json,
    tool_specs,
)
from backend.tools._writers import (
    DECISION_IMPORTANCE,
    WRITE_TOOLS,
    EpisodicWriter,
    WorkingWriter,
    decision_episode,
    record_message_once,
    refuse_replay_write,
)
from backend.tools.schemas import (
    BuildContextArgs,
    ProfileArgs,
    RecallArgs,
    RecordDecisionArgs,
    RecordEventArgs,
    RecordMessageArgs,
    RecordNoteArgs,
    RecordOutcomeArgs,
)
from backend.types import first_problem, to_utc

__all__ = [
    "DECISION_IMPORTANCE",
    "WRITE_TOOLS",
    "BuildContextArgs",
    "EpisodicWriter",
    "MemoryToolkit",
    "RecallArgs",
    "RecordDecisionArgs",
    "RecordEventArgs",
    "RecordNoteArgs",
    "RecordOutcomeArgs",
    "ToolSpec",
    "WorkingWriter",
    "decision_episode",
]


class MemoryToolkit(MemoryOperations):
    """The memory's operations (:class:`~backend.tools._operations.MemoryOperations`) and
    the same operations as tools; every call names the trader and ``as_of``."""

    @property
    def _tools(self) -> ToolTable:
        """Tool name -> (argument model, run): built at each use (eight lambdas, a few
        microseconds against a tool call's store work)."""
        return {
            "recall": (
                RecallArgs,
                lambda t, at, a: self.recall(
                    t, a.query, symbol=a.symbol, as_of=at, tiers=a.tiers, top_k=a.top_k
                ),
            ),
            "get_trader_profile": (
                ProfileArgs,
                lambda t, at, a: profile_json(self.get_trader_profile(t, as_of=at)),
            ),
            "record_note": (
                RecordNoteArgs,
                lambda t, at, a: {
                    "changes": [
                        c.model_dump(mode="json")
                        for c in self.record_note(t, a.text, as_of=at, note_id=a.note_id)
                    ]
                },
            ),
            "record_message": (
                RecordMessageArgs,
                lambda t, at, a: self._record_message_tool(t, at, a),
            ),
            "record_event": (
                RecordEventArgs,
                lambda t, at, a: {
                    "episode_id": self.record_event(
                        t,
                        symbol=a.symbol,
                        event_type=a.event_type,
                        description=a.description,
                        importance=a.importance,
                        as_of=at,
                        event_id=a.event_id,
                    )
                },
            ),
            "record_decision": (
                RecordDecisionArgs,
                lambda t, at, a: {
                    "episode_id": self.record_decision(
                        t,
                        symbol=a.symbol,
                        action=a.action,
                        size=a.size,
                        rationale=a.rationale,
                        memory_ids=a.memory_ids,
                        as_of=at,
                        decision_id=a.decision_id,
                    )
                },
            ),
            "record_outcome": (
                RecordOutcomeArgs,
                lambda t, at, a: self.record_outcome(
                    t,
                    a.episode_id,
                    horizon=a.horizon,
                    market_return=a.market_return,
                    pnl=a.pnl,
                    as_of=at,
                ).model_dump(mode="json"),
            ),
            "build_decision_context": (
                BuildContextArgs,
                lambda t, at, a: self.build_decision_context(
                    t, a.symbol, as_of=at, query=a.query, budget=a.budget
                ).model_dump(mode="json"),
            ),
        }

    def _record_message_tool(
        self, trader_id: str, as_of: datetime, args: RecordMessageArgs
    ) -> dict[str, Any]:
        """The ``record_message`` tool (:func:`~backend.tools._writers.record_message_once`)."""
        return record_message_once(
            trader_id, args, as_of=as_of, stored=self._stored_messages,
            conflicts=self.message_conflicts, record=self.record_message,
        )  # fmt: skip

    # ----------------------------------------------------------------- tools

    def tools(self) -> list[ToolSpec]:
        """Every tool, in a fixed order (the source of both the OpenAI and MCP schemas)."""
        return tool_specs(self._tools)

    def tool_schemas(self) -> list[dict[str, Any]]:
        """OpenAI function-calling tool definitions, generated from the argument models."""
        return openai_schemas(self.tools())

    def call(
        self,
        name: str,
        arguments: str | dict[str, Any],
        *,
        trader_id: str,
        as_of: datetime,
        replay: bool = False,
    ) -> Any:
        """Execute one tool call for ``trader_id`` at ``as_of``; returns JSON-ready data.

        ``arguments`` is the call's JSON text or its parsed object. ``replay``: the
        caller serves a fixed past time (``sentinel mcp --as-of``); a write tool
        (:data:`WRITE_TOOLS`) is then refused if the trader's memory was written as of a
        later time (:func:`refuse_replay_write`), saying no more than that: a replay
        must not write into a past the store has moved beyond, nor learn from a conflict
        error what came later (the id, session, time or text of a later message, a later
        persona version). Raises :class:`~backend.errors.ToolError` for an unknown tool,
        arguments the tool's model rejects (nothing is written then; the message names
        the first bad field, never its value) or that refusal, and the memory's own
        :class:`~backend.errors.SentinelError` subclasses (e.g. an unknown episode id).
        """
        table = self._tools
        if name not in table:
            raise ToolError(f"unknown tool {name!r}")
        try:  # one instant, one form: "+02:00" and "Z" had made two ids of one decision
            as_of = to_utc(as_of)
        except ValueError:
            raise ToolError(f"{name}: as_of must be timezone-aware (UTC)") from None
        model, run = table[name]
        args = parse_args(name, model, arguments)
        if replay:
            refuse_replay_write(name, self._episodic.store, trader_id, as_of=as_of)
        try:
            return run(trader_id, as_of, args)
        except ValidationError as exc:  # a value the memory's own models refuse
            where, problem = first_problem(exc)
            raise ToolError(f"{name}: {where}: {problem}") from None

    def dispatch(
        self,
        name: str,
        arguments: str | dict[str, Any],
        *,
        trader_id: str,
        as_of: datetime,
        replay: bool = False,
    ) -> str:
        """:meth:`call` for an OpenAI tool call: returns JSON, and an error as
        ``{"error": "..."}`` (the agent can read and correct it). An agent replaying a
        past time on a store that may hold later memory passes ``replay=True``, as
        ``sentinel mcp --as-of`` does: its write tools are then refused rather than
        answered with what a conflict would tell of later memory (:meth:`call`)."""
        return dispatch_json(
            lambda: self.call(name, arguments, trader_id=trader_id, as_of=as_of, replay=replay)
        )

"""The memory as a Model Context Protocol server (the official ``mcp`` SDK, low-level API).

Any MCP client (Claude Desktop, Cursor, the OpenAI Agents SDK, LangGraph) gets the
:class:`~backend.tools.memory_toolkit.MemoryToolkit` operations as MCP tools, and the
trader's profile and recent episodes as MCP resources.

Design:
- **One definition, two protocols.** Tool names, descriptions and input schemas come from
  :meth:`MemoryToolkit.tools` (the pydantic models of :mod:`backend.tools.schemas`), the
  same source as the OpenAI function-calling schemas; a call runs through
  :meth:`MemoryToolkit.call`, which validates it against the same model.
- **Scope and time never come from the client.** The server is built for one trader;
  every call's ``as_of`` is ``clock()`` (the server's UTC clock, or a fixed time to replay
  the past) read when the call starts; the write tools (``WRITE_TOOLS``) take turns,
  each read when its turn comes, so a conversation's messages and the persona's notes
  land in the order of their times (persona writes only move forward in time).
  The argument models forbid extra keys, so a call naming ``trader_id`` or ``as_of`` is
  refused before anything runs.
- **Errors are MCP errors.** An unknown tool or resource is a JSON-RPC error
  (``INVALID_PARAMS``); bad arguments and memory errors (an unknown episode id, ...) are a
  tool result with ``isError`` and the one-line domain message, never a traceback. A call
  whose arguments are refused writes nothing.
- The toolkit is synchronous (chroma, the embedding model): each call runs in a worker
  thread, so the event loop keeps serving the transport.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from datetime import datetime
from functools import partial
from typing import Any

import anyio.to_thread
from mcp import types
from mcp.server.context import ServerRequestContext
from mcp.server.lowlevel import Server
from mcp.shared.exceptions import MCPError

from backend.errors import SentinelError, ToolError
from backend.memory.models import Episode
from backend.tools.memory_toolkit import WRITE_TOOLS, MemoryToolkit

__all__ = ["PROFILE_URI", "RECENT_EPISODES", "RECENT_URI", "build_mcp_server"]

log = logging.getLogger(__name__)

PROFILE_URI = "sentinel://trader/profile"
RECENT_URI = "sentinel://trader/episodes/recent"
RECENT_EPISODES = 20
"""Episodes listed by the recent-episodes resource, newest first."""

Scanner = Callable[[str, datetime], list[Episode]]
"""``(trader_id, as_of) -> every episode known at as_of``, oldest first
(:meth:`backend.memory.EpisodicMemory.scan`)."""


def _text(data: Any) -> list[types.TextContent]:
    return [types.TextContent(type="text", text=json.dumps(data, default=str))]


def build_mcp_server(
    toolkit: MemoryToolkit,
    *,
    trader_id: str,
    clock: Callable[[], datetime],
    episodes: Scanner,
    replay: bool = False,
    write_lock: Callable[[], AbstractContextManager[None]] = nullcontext,
    name: str = "cryptosentinel-memory",
    version: str = "",
) -> Server[Any]:
    """An MCP server of ``trader_id``'s memory; transports run it (:mod:`backend.cli.mcp`).

    ``clock`` returns the UTC ``as_of`` of each request; ``replay``: it is a fixed past
    time (writes into a past the store has moved beyond are refused:
    :meth:`MemoryToolkit.call`); ``episodes`` lists the trader's episodes for the
    recent-episodes resource; ``write_lock`` (the store's
    :meth:`~backend.storage.KhalaStore.writer_lock`) is held by each write from its
    stamp to its end, so that servers of one store in several processes stamp their
    writes in the order they land. Tools: every :meth:`MemoryToolkit.tools`
    entry (``recall``, ``get_trader_profile``, ``record_note``, ``record_message``,
    ``record_event``, ``record_decision``, ``record_outcome``, ``build_decision_context``);
    each result is
    one text content holding the tool's JSON (and the same object as structured content).
    Resources: :data:`PROFILE_URI` (the profile's JSON, ``null`` before the first
    version) and :data:`RECENT_URI` (the :data:`RECENT_EPISODES` newest episodes' JSON).
    """
    specs = {spec.name: spec for spec in toolkit.tools()}
    tools = [
        types.Tool(
            name=spec.name,
            description=spec.description,
            input_schema=spec.args.model_json_schema(),
        )
        for spec in specs.values()
    ]

    write_turn = anyio.Lock()

    def _stamped(call: Callable[..., Any]) -> Any:
        with write_lock():
            return call(as_of=clock())

    async def list_tools(
        ctx: ServerRequestContext[Any], params: types.PaginatedRequestParams | None
    ) -> types.ListToolsResult:
        return types.ListToolsResult(tools=tools)

    async def call_tool(
        ctx: ServerRequestContext[Any], params: types.CallToolRequestParams
    ) -> types.CallToolResult:
        if params.name not in specs:
            raise MCPError(types.INVALID_PARAMS, f"unknown tool {params.name!r}")

        call = partial(
            toolkit.call, params.name, params.arguments or {}, trader_id=trader_id, replay=replay
        )
        try:
            if params.name in WRITE_TOOLS:
                # writes are taken in turn, each stamped when its turn comes: stamped on
                # arrival, a message written after a later one was refused as out of
                # order, a retry racing its first call was another message with that id,
                # and of 8 notes sent at once 5 were refused (persona writes move forward
                # in time), their hard constraints lost. Waiting holds no worker thread;
                # reads never wait for it.
                # and stamped under the store's writer lock: two processes serving one
                # store (two agents' clients) had stamped on arrival, and the later stamp
                # that landed first refused the other (2 of 8 notes at once, a reviewer's)
                async with write_turn:
                    data = await anyio.to_thread.run_sync(partial(_stamped, call))
            else:
                data = await anyio.to_thread.run_sync(partial(call, as_of=clock()))
        except ToolError as exc:
            return types.CallToolResult(content=_text({"error": str(exc)}), is_error=True)
        except SentinelError as exc:
            message = f"{type(exc).__name__}: {' '.join(str(exc).split())}"
            log.info("tool %s failed: %s", params.name, message)
            return types.CallToolResult(content=_text({"error": message}), is_error=True)
        structured = data if isinstance(data, dict) else None
        return types.CallToolResult(content=_text(data), structured_content=structured)

    async def list_resources(
        ctx: ServerRequestContext[Any], params: types.PaginatedRequestParams | None
    ) -> types.ListResourcesResult:
        return types.ListResourcesResult(
            resources=[
                types.Resource(
                    uri=PROFILE_URI,
                    name="trader-profile",
                    description=f"The profile of trader {trader_id} as of the server's "
                    "clock (now, or the fixed time it replays).",
                    mime_type="application/json",
                ),
                types.Resource(
                    uri=RECENT_URI,
                    name="recent-episodes",
                    description=f"The {RECENT_EPISODES} newest episodes of trader {trader_id}.",
                    mime_type="application/json",
                ),
            ]
        )

    def read(uri: str, as_of: datetime) -> Any:
        if uri == PROFILE_URI:
            return toolkit.call("get_trader_profile", {}, trader_id=trader_id, as_of=as_of)
        recent = episodes(trader_id, as_of)[-RECENT_EPISODES:]
        return [episode.model_dump(mode="json") for episode in reversed(recent)]

    async def read_resource(
        ctx: ServerRequestContext[Any], params: types.ReadResourceRequestParams
    ) -> types.ReadResourceResult:
        uri = str(params.uri)
        if uri not in (PROFILE_URI, RECENT_URI):
            raise MCPError(types.INVALID_PARAMS, f"unknown resource {uri!r}")
        try:
            data = await anyio.to_thread.run_sync(read, uri, clock())
        except SentinelError as exc:
            one_line = " ".join(str(exc).split())
            raise MCPError(types.INTERNAL_ERROR, f"{type(exc).__name__}: {one_line}") from None
        return types.ReadResourceResult(
            contents=[
                types.TextResourceContents(
                    uri=uri, mime_type="application/json", text=json.dumps(data, default=str)
                )
            ]
        )

    return Server(
        name,
        version=version,
        instructions=(
            f"Memory of trader {trader_id}: who they are (get_trader_profile), the market "
            "now and what happened the last time things looked like this (recall)."
        ),
        on_list_tools=list_tools,
        on_call_tool=call_tool,
        on_list_resources=list_resources,
        on_read_resource=read_resource,
    )

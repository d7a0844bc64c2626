"""The memory tools' input and output: :class:`ToolSpec` and the tool table of a
:class:`~backend.tools.memory_toolkit.MemoryToolkit` (its specs and OpenAI schemas), a
call's arguments validated against the tool's model, a call's JSON for an OpenAI tool
call, and the JSON-ready payloads of the profile and of a recall."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import openai
from pydantic import ValidationError

from backend.config import MemorySettings
from backend.errors import SentinelError, ToolError
from backend.memory.context import episode_line
from backend.memory.conversation import render_messages
from backend.memory.memory_ids import message_memory_id, persona_id, snapshot_id
from backend.memory.models import MemoryContext, PersonaProfile
from backend.tools.schemas import ToolArgs
from backend.types import first_problem

__all__ = [
    "HIT_TEXT_CHARS",
    "ToolSpec",
    "ToolTable",
    "dispatch_json",
    "openai_schemas",
    "parse_args",
    "profile_json",
    "recall_payload",
    "tool_specs",
]

ToolTable = dict[str, tuple[type[ToolArgs], Callable[[str, datetime, Any], Any]]]
"""Tool name -> (argument model, run(trader id, as_of, arguments))."""


@dataclass(frozen=True)
class ToolSpec:
    """One tool: its name, its description (the argument model's docstring) and the
    pydantic model its arguments are validated with and its JSON schema comes from."""

    name: str
    description: str
    args: type[ToolArgs]


def tool_specs(table: ToolTable) -> list[ToolSpec]:
    """The spec of every tool of ``table``, in its order."""
    return [
        ToolSpec(name, " ".join((model.__doc__ or "").split()), model)
        for name, (model, _) in table.items()
    ]


def openai_schemas(specs: list[ToolSpec]) -> list[dict[str, Any]]:
    """OpenAI function-calling tool definitions of ``specs``."""
    return [
        dict(openai.pydantic_function_tool(t.args, name=t.name, description=t.description))
        for t in specs
    ]


def parse_args(name: str, model: type[ToolArgs], arguments: str | dict[str, Any]) -> ToolArgs:
    """The arguments of a call of tool ``name`` (JSON text or its parsed object) as its
    ``model``. Raises :class:`ToolError` naming the first bad field, never its value."""
    try:
        return (
            model.model_validate_json(arguments or "{}")
            if isinstance(arguments, str)
            else model.model_validate(arguments)
        )
    except ValidationError as exc:
        where, problem = first_problem(exc, whole="arguments")
        raise ToolError(f"invalid arguments for {name}: {where}: {problem}") from None


def dispatch_json(call: Callable[[], Any]) -> str:
    """``call()``'s result as JSON, and an error as ``{"error": "..."}``."""
    try:
        return json.dumps(call(), default=str)
    except ToolError as exc:
        return json.dumps({"error": str(exc)})
    except SentinelError as exc:
        return json.dumps({"error": f"{type(exc).__name__}: {exc}"})


def profile_json(profile: PersonaProfile | None) -> dict[str, Any] | None:
    """The profile's version, ``as_of`` and attributes (value, confidence), or None."""
    if profile is None:
        return None
    return {
        "version": profile.version,
        "as_of": profile.as_of.isoformat(),
        "attributes": {
            name: {"value": a.value, "confidence": round(a.confidence, 3)}
            for name, a in profile.attributes.items()
        },
    }


HIT_TEXT_CHARS = 2_000
"""A message or episode hit's text in a recall reply is cut to this many characters (a
message may hold 20,000 and its caption 10,000: 50 of them made a 1.5 MB reply, and the
conversation events quoting them another 1.1 MB). The whole memory stays in the store;
the ``context`` is bounded by the token budget."""


def _bounded(text: str) -> dict[str, Any]:
    """``{"text": text}``, or its first :data:`HIT_TEXT_CHARS` characters with
    ``"text_truncated": True`` and ``"text_chars"`` (the whole length)."""
    if len(text) <= HIT_TEXT_CHARS:
        return {"text": text}
    return {"text": text[:HIT_TEXT_CHARS], "text_truncated": True, "text_chars": len(text)}


def recall_payload(
    ctx: MemoryContext,
    persona: PersonaProfile | None,
    persona_text: str | None,
    settings: MemorySettings,
    *,
    top_k: int,
) -> dict[str, Any]:
    """The JSON-ready data of a recall (:meth:`MemoryToolkit.recall`) of ``ctx``, with
    the ``persona`` returned (None when not asked for) rendered as ``persona_text``; of
    the market snapshots only the ``top_k`` newest (a window holds 48 with their
    headlines: ~19,000 tokens of JSON), of the recalled messages the ``top_k`` best in
    ``hits`` and the context's. Each memory is in ``hits`` once (per-tier copies of the
    lists had tripled the reply an agent reads: ~3,300 tokens for a 700-token context)."""
    hits: list[dict[str, Any]] = []
    if persona is not None:
        hits.append(
            {"id": persona_id(persona), "tier": "persona", "text": persona_text, "score": None}
        )
    kept = sorted(ctx.working, key=lambda s: s.as_of)[-top_k:] if top_k > 0 else []
    hits += [
        {"id": snapshot_id(s), "tier": "working", "text": s.describe(), "score": None}
        for s in reversed(kept)
    ]
    said = [
        {
            "id": message_memory_id(r.message.id),
            "tier": "conversation",
            "message_id": r.message.id,
            "speaker": r.message.speaker,
            "session": r.message.session,
            "time": r.message.time.isoformat(),
            **_bounded(r.message.render()),
            "score": round(r.score, 4),
        }
        for r in ctx.messages[:top_k]
    ]
    hits += said
    text, message_ids, tokens = render_messages(
        ctx.messages,
        budget=settings.token_budget,
        max_messages=settings.conversation.context_messages,
    )
    hits += [
        {
            "id": s.episode.id,
            "tier": "episodic",
            "score": round(s.score, 4),
            **_bounded(episode_line(s)),  # a conversation event quotes its messages whole
        }
        for s in ctx.episodes
    ]
    return {
        "as_of": ctx.as_of.isoformat(),
        "hits": hits,
        "persona": profile_json(persona),
        "context": {"text": text, "tokens": tokens, "message_ids": message_ids},
        "errors": ctx.errors,
    }

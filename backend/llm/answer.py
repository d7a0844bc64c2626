"""The base of every schema a chat model answers (:class:`LLMAnswer`).

Small local models damage JSON in ways a grammar does not always prevent (seen with
Gemma 3 270M on llama.cpp: a raw newline inside a string, which strict JSON forbids).
:meth:`LLMAnswer.model_validate_json` — what instructor calls on the answer text —
parses strictly first and, only when the text is not valid JSON, repairs it with
**json-repair** and validates the repaired object: the schema still decides. Text that
repairs to something other than an object (prose, an empty answer) fails as before.
"""

from __future__ import annotations

from typing import Any, Self

import json_repair
from pydantic import BaseModel, ConfigDict, ValidationError

__all__ = ["LLMAnswer"]


class LLMAnswer(BaseModel):
    """A structured answer: unknown fields are refused; damaged JSON is repaired once."""

    model_config = ConfigDict(extra="forbid")

    @classmethod
    def model_validate_json(
        cls, json_data: str | bytes | bytearray, *, strict: bool | None = None, **kwargs: Any
    ) -> Self:
        """Validate ``json_data``; if it is not valid JSON, validate its json-repair
        reading instead (an object only). Raises :class:`pydantic.ValidationError`."""
        try:
            return super().model_validate_json(json_data, strict=strict, **kwargs)
        except ValidationError as exc:
            if not any(error["type"] == "json_invalid" for error in exc.errors()):
                raise
            text = json_data if isinstance(json_data, str) else bytes(json_data).decode("utf-8")
            repaired = json_repair.loads(text)
            if not isinstance(repaired, dict):
                raise
            kwargs.pop("by_alias", None), kwargs.pop("by_name", None)
            return cls.model_validate(repaired, strict=strict, **kwargs)

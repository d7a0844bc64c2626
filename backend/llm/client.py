"""Structured outputs from an OpenAI-compatible chat-completions endpoint, failing safe.

Every call goes through ``client.chat.completions.parse(response_format=Schema)``
(openai-python's structured outputs). Retries are the openai client's own: bounded
(``max_retries``), exponential backoff with jitter, honouring ``Retry-After`` on 429 and
retrying 408/409/5xx and connection errors (openai-python README, "Retries"). Whatever
still fails — timeout, refused connection, HTTP error, truncated or invalid JSON, JSON
that breaks the schema, a refusal — ends as :class:`LLMResult` with ``value=None`` and a
one-line ``error`` (never the API key), so callers take their safe default.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from typing import Generic, TypeVar

import openai
from pydantic import BaseModel, ValidationError

from backend.config import LLMSettings

__all__ = ["LLMClient", "LLMResult", "build_llm"]

log = logging.getLogger("backend.llm")
T = TypeVar("T", bound=BaseModel)


@dataclass(frozen=True)
class LLMResult(Generic[T]):
    """``value`` is the parsed answer, or ``None`` with ``error`` saying why."""

    value: T | None
    error: str | None
    latency_ms: float
    prompt_tokens: int | None = None
    completion_tokens: int | None = None


class LLMClient:
    """A model name plus a configured ``openai.OpenAI`` client (built at the composition root)."""

    def __init__(self, client: openai.OpenAI, *, model: str) -> None:
        self._client = client
        self.model = model

    def parse(
        self, *, system: str, user: str, schema: type[T], max_tokens: int = 1024
    ) -> LLMResult[T]:
        """Ask for one ``schema`` object. Never raises for endpoint or answer faults."""
        started = time.perf_counter()
        try:
            completion = self._client.chat.completions.parse(
                model=self.model,
                messages=[{"role": "system", "content": system}, {"role": "user", "content": user}],
                response_format=schema,
                temperature=0,
                max_tokens=max_tokens,
            )
        except openai.APIStatusError as exc:
            return self._fail(started, f"HTTP {exc.status_code} from {self.model}")
        except openai.APITimeoutError:
            return self._fail(started, f"timeout waiting for {self.model}")
        except openai.APIConnectionError:
            return self._fail(started, f"cannot connect to the {self.model} endpoint")
        except openai.LengthFinishReasonError:
            return self._fail(started, "answer truncated (max_tokens reached)")
        except openai.ContentFilterFinishReasonError:
            return self._fail(started, "answer withheld by the content filter")
        except (ValidationError, json.JSONDecodeError, ValueError) as exc:
            return self._fail(
                started, f"answer does not fit {schema.__name__}: {type(exc).__name__}"
            )
        except openai.OpenAIError as exc:
            return self._fail(started, f"{type(exc).__name__} from {self.model}")
        choice = completion.choices[0] if completion.choices else None
        if choice is None or choice.message.parsed is None:
            refusal = choice.message.refusal if choice is not None else None
            return self._fail(started, "refused" if refusal else "empty answer")
        usage = completion.usage
        return LLMResult(
            value=choice.message.parsed,
            error=None,
            latency_ms=(time.perf_counter() - started) * 1000,
            prompt_tokens=usage.prompt_tokens if usage else None,
            completion_tokens=usage.completion_tokens if usage else None,
        )

    @staticmethod
    def _fail(started: float, error: str) -> LLMResult[T]:
        log.warning("LLM call failed: %s", error)
        return LLMResult(value=None, error=error, latency_ms=(time.perf_counter() - started) * 1000)


def build_llm(settings: LLMSettings) -> LLMClient | None:
    """The configured LLM, or ``None`` when ``llm.base_url``/``llm.model`` are unset
    (the offline default: deterministic rules)."""
    if not settings.base_url or not settings.model:
        return None
    key = settings.api_key.get_secret_value() if settings.api_key else "not-needed"
    client = openai.OpenAI(
        api_key=key,
        base_url=settings.base_url,
        timeout=settings.timeout_s,
        max_retries=settings.max_retries,
    )
    return LLMClient(client, model=settings.model)

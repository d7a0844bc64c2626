"""Structured outputs from any OpenAI-compatible chat-completions endpoint, failing safe.

Requests are shaped, parsed and validated by **instructor** (one library for the three
ways servers take a schema), over a configured ``openai.OpenAI`` client. The mode
(``llm.structured_output``, :data:`StructuredMode`):

- ``json_schema``: ``response_format = {"type": "json_schema", "json_schema": {name,
  schema}}`` (OpenAI structured outputs; vLLM, Ollama and llama.cpp's C++ server take it);
- ``json_object``: ``{"type": "json_object", "schema": schema}`` — llama-cpp-python's
  server compiles the ``schema`` key to a grammar (constrained decoding) and answers HTTP
  500 to ``json_schema``; the schema is in the system message too, for servers that only
  promise *some* JSON object;
- ``prompt``: the schema in the system message, the JSON taken from the answer (a
  fenced ````json`` block or the bare object), for servers that take neither;
- ``auto`` (default): :func:`detect_mode` probes the endpoint once per process, in that
  order, and the first mode whose answer parses is used (logged at INFO).

Whatever the mode, the answer is validated by the pydantic schema (lax: ``"0.5"`` is a
float); one that does not parse or fit is re-asked with the validation error shown to
the model, at most ``llm.parse_retries`` times (instructor's re-ask). HTTP retries are
the openai client's own: bounded (``llm.max_retries``), exponential backoff with jitter,
honouring ``Retry-After`` on 429 and retrying 408/409/5xx and connection errors
(openai-python README, "Retries"). Whatever still fails — timeout, refused connection,
HTTP error, truncated or invalid JSON, JSON that breaks the schema, a refusal — ends as
:class:`LLMResult` with ``value=None`` and a one-line ``error`` (never the API key), so
callers take their safe default.

A **circuit breaker** (pybreaker) guards the endpoint: after ``llm.breaker_failures``
calls in a row failed *at the endpoint* (unreachable, timed out, HTTP 408/429/5xx, or a
structured-output probe that could not reach it), calls fail at once with ``skipped: ...``
for ``llm.breaker_cooldown_s``, then one call tries the endpoint again. An answer that
does not fit the schema is the model's fault, not the endpoint's: it does not count.
The breaker runs one call at a time per client (pybreaker holds its lock during a call).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from dataclasses import dataclass, field, replace
from typing import Any, Generic, Literal, NoReturn, TypeVar, cast

import openai
from instructor.core.exceptions import IncompleteOutputException, InstructorRetryException
from instructor.core.hooks import Hooks
from pydantic import BaseModel, ValidationError

from backend.config import LLMSettings
from backend.endpoint import BreakerOpen, breaker, endpoint_fault
from backend.llm._wire import (
    STRUCTURED_MODES,
    StructuredMode,
    api_error,
    check_served,
    context_overflow,
    detect_mode,
    first_problem,
    forget_mode,
    log_answer,
    mode_worked,
    request_extra,
    structured,
    usage,
    warn_once,
)

__all__ = [
    "STRUCTURED_MODES",
    "LLMClient",
    "LLMResult",
    "LLMStats",
    "StructuredMode",
    "build_llm",
    "detect_mode",
]

# instructor logs every failed attempt at ERROR; this client reports each failure once.
logging.getLogger("instructor").setLevel(logging.CRITICAL)
T = TypeVar("T", bound=BaseModel)


@dataclass(frozen=True)
class LLMResult(Generic[T]):
    """``value`` is the parsed answer, or ``None`` with ``error`` saying why.

    ``attempts``: chat completions made for it (1 = parsed on the first try; re-asks
    add one each); ``mode``: the structured-output mode used (None if none could be
    chosen); token counts are summed over the attempts (None when the server gave none);
    ``cached_tokens``: prompt tokens the server said it served from its prompt cache
    (``usage.prompt_tokens_details.cached_tokens``; None when it does not say)."""

    value: T | None
    error: str | None
    latency_ms: float
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    attempts: int = 1
    mode: StructuredMode | None = None
    cached_tokens: int | None = None
    context_overflow: tuple[int, int, int] | None = None
    """``(window, message tokens, completion tokens)``, the model's tokens, when the
    endpoint refused the request as longer than its context window (a caller may ask
    again shorter: :class:`~backend.agents.policies.LLMPolicy` does)."""


@dataclass
class LLMStats:
    """Running totals of one :class:`LLMClient`'s calls (for benchmarks and run
    summaries): ``calls``, ``parsed`` (a validated answer), ``by_attempts`` (parsed
    calls by the try that parsed: ``{1: n, 2: m}``), token sums as the server reported
    them (``cached_tokens``: only servers that report it), ``latency_ms`` summed."""

    calls: int = 0
    parsed: int = 0
    by_attempts: dict[int, int] = field(default_factory=dict)
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0
    latency_ms: float = 0.0

    def add(self, result: LLMResult[Any]) -> None:
        self.calls += 1
        self.latency_ms += result.latency_ms
        self.prompt_tokens += result.prompt_tokens or 0
        self.completion_tokens += result.completion_tokens or 0
        self.cached_tokens += result.cached_tokens or 0
        if result.value is not None:
            self.parsed += 1
            self.by_attempts[result.attempts] = self.by_attempts.get(result.attempts, 0) + 1


class LLMClient:
    """A model name plus a configured ``openai.OpenAI`` client (built at the composition
    root), asking in ``structured_output`` mode (``auto``: :func:`detect_mode`)."""

    def __init__(
        self,
        client: openai.OpenAI,
        *,
        model: str,
        structured_output: StructuredMode | Literal["auto"] = "auto",
        parse_retries: int = 1,
        breaker_failures: int = 3,
        breaker_cooldown_s: float = 300.0,
    ) -> None:
        """``breaker_failures`` (0 = no breaker) and ``breaker_cooldown_s``: the module
        doc's circuit breaker."""
        self._client = client
        self.model = model
        self.structured_output = structured_output
        self.parse_retries = parse_retries
        self.stats = LLMStats()
        self._stats_lock = threading.Lock()
        self._breaker = breaker(
            model, failures=breaker_failures, cooldown_s=breaker_cooldown_s, counts=_EndpointFault
        )
        self._last_fault = ""

    def mode(self) -> tuple[StructuredMode | None, str | None]:
        """``(mode, None)``: the mode calls use now (probing the endpoint first under
        ``auto``), or ``(None, error)`` when the probe could not tell (see
        :func:`detect_mode`)."""
        if self.structured_output != "auto":
            return self.structured_output, None
        return detect_mode(self._client, self.model)

    def parse(
        self, *, system: str, user: str, schema: type[T], max_tokens: int = 1024
    ) -> LLMResult[T]:
        """Ask for one ``schema`` object (``system`` first, then ``user``: keep what does
        not change between calls at the start, for servers that cache prompt prefixes).
        Never raises for endpoint or answer faults; every call is added to ``stats``."""
        result = self._parse(system=system, user=user, schema=schema, max_tokens=max_tokens)
        with self._stats_lock:
            self.stats.add(result)
        return result

    def _parse(self, *, system: str, user: str, schema: type[T], max_tokens: int) -> LLMResult[T]:
        started = time.perf_counter()
        guard = self._breaker
        try:
            if guard is None:
                return self._attempt(started, system, user, schema, max_tokens)
            return guard.call(self._attempt, started, system, user, schema, max_tokens)
        except _EndpointFault as fault:
            return cast(LLMResult[T], fault.result)
        except BreakerOpen:
            assert guard is not None
            n = guard.fail_max
            return self._fail(
                started,
                f"skipped: {n} call{'s' if n != 1 else ''} in a row failed at {self.model}'s "
                f"endpoint (last: {self._last_fault}); it is tried again "
                f"{guard.reset_timeout:g} s after the last (llm.breaker_cooldown_s)",
                0,
                None,
            )

    def _attempt(
        self, started: float, system: str, user: str, schema: type[T], max_tokens: int
    ) -> LLMResult[T]:
        """One call; raises :class:`_EndpointFault` (carrying its result) when it failed
        at the endpoint, so the breaker counts it."""
        mode, error = self.mode()
        if mode is None:
            failed: LLMResult[T] = self._fail(
                started, error or "no structured-output mode", 1, None
            )
            if getattr(error, "endpoint", True):  # not a refusal (a wrong key or URL)
                self._fault(failed)
            return failed
        # built per call (~7 ms, measured 2026-12-07) against seconds of generation
        patched = structured(self._client, mode)
        responses: list[object] = []
        hooks = Hooks()
        hooks.on("completion:response", responses.append)
        try:
            value, completion = patched.chat.completions.create_with_completion(
                model=self.model,
                messages=[
                    {"role": "system", "content": system},
                    {"role": "user", "content": user},
                ],
                response_model=schema,
                max_retries=self.parse_retries,
                strict=False,
                hooks=hooks,
                temperature=0,
                max_tokens=max_tokens,
                **request_extra(mode, schema),
            )
        except IncompleteOutputException as exc:
            log_answer(exc.last_completion)
            cut = "answer truncated: the model stopped at a length limit (max_tokens or its window)"
            return self._fail(started, cut, responses, mode)
        except InstructorRetryException as exc:
            log_answer(exc.last_completion)
            failed = self._fail(started, self._describe(exc, schema), responses, mode)
            failed = replace(failed, context_overflow=context_overflow(exc.__cause__))
            if self.structured_output == "auto":  # the server may have changed: probe again
                forget_mode(self._client, self.model, exc.__cause__)
            if endpoint_fault(exc.__cause__):
                self._fault(failed)
            return failed
        if self.structured_output == "auto":
            mode_worked(self._client, self.model)
        # instructor sets the final answer's usage to the total over the attempts
        prompt, generated, cached = usage([completion])
        return LLMResult(
            value=value,
            error=None,
            latency_ms=(time.perf_counter() - started) * 1000,
            prompt_tokens=prompt,
            completion_tokens=generated,
            attempts=max(1, len(responses)),
            mode=mode,
            cached_tokens=cached,
        )

    def _fault(self, failed: LLMResult[Any]) -> NoReturn:
        """Raise ``failed`` as the endpoint's fault (the breaker counts it), noting it for
        the message of the calls the breaker then skips (inside the breaker's lock)."""
        self._last_fault = failed.error or ""
        raise _EndpointFault(failed)

    def _describe(self, exc: InstructorRetryException, schema: type[BaseModel]) -> str:
        """One line for a failed call, from the last attempt's exception and answer."""
        cause = exc.__cause__
        if isinstance(cause, openai.OpenAIError):
            return api_error(cause, self.model)
        if isinstance(cause, ValidationError | json.JSONDecodeError | ValueError):
            choices = getattr(exc.last_completion, "choices", None) or [None]
            message = getattr(choices[0], "message", None)
            if getattr(choices[0], "finish_reason", None) == "content_filter":
                return "answer withheld by the content filter"
            if getattr(message, "refusal", None):
                return "refused"
            if message is None or not (getattr(message, "content", None) or "").strip():
                return "empty answer"
            tries = exc.n_attempts
            return (
                f"answer does not fit {schema.__name__} after {tries} "
                f"tr{'y' if tries == 1 else 'ies'}: {first_problem(cause)}"
            )
        return f"{type(cause or exc).__name__} from {self.model}"

    @staticmethod
    def _fail(
        started: float,
        error: str,
        responses: list[object] | int,
        mode: StructuredMode | None,
    ) -> LLMResult[T]:
        warn_once(f"LLM call failed: {error}")
        answers = [] if isinstance(responses, int) else responses
        attempts = responses if isinstance(responses, int) else max(1, len(responses))
        prompt, generated, cached = usage(answers)
        return LLMResult(
            value=None,
            error=error,
            latency_ms=(time.perf_counter() - started) * 1000,
            prompt_tokens=prompt,
            completion_tokens=generated,
            attempts=attempts,
            mode=mode,
            cached_tokens=cached,
        )


class _EndpointFault(Exception):
    """A call that failed at the endpoint (counted by the breaker), with its result."""

    def __init__(self, result: LLMResult[Any]) -> None:
        super().__init__(result.error)
        self.result = result


def build_llm(settings: LLMSettings) -> LLMClient | None:
    """The configured LLM, or ``None`` when ``llm.base_url``/``llm.model`` are unset
    (the offline default: deterministic rules). Raises :class:`ConfigError` when the
    endpoint lists its models and ``llm.model`` is not one (:func:`check_served`)."""
    if not settings.base_url or not settings.model:
        return None
    key = settings.api_key.get_secret_value() if settings.api_key else "not-needed"
    client = openai.OpenAI(
        api_key=key,
        base_url=settings.base_url,
        timeout=settings.timeout_s,
        max_retries=settings.max_retries,
    )
    check_served(client, settings.model)
    return LLMClient(
        client,
        model=settings.model,
        structured_output=settings.structured_output,
        parse_retries=settings.parse_retries,
        breaker_failures=settings.breaker_failures,
        breaker_cooldown_s=settings.breaker_cooldown_s,
    )

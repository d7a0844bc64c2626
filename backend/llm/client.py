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
"""

from __future__ import annotations

import json
import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Generic, Literal, TypeVar

import instructor
import openai
from instructor.core.exceptions import IncompleteOutputException, InstructorRetryException
from instructor.core.hooks import Hooks
from pydantic import BaseModel, ValidationError

from backend.config import LLMSettings

__all__ = [
    "STRUCTURED_MODES",
    "LLMClient",
    "LLMResult",
    "LLMStats",
    "StructuredMode",
    "build_llm",
    "detect_mode",
]

log = logging.getLogger("backend.llm")
# instructor logs every failed attempt at ERROR; this client reports each failure once.
logging.getLogger("instructor").setLevel(logging.CRITICAL)
T = TypeVar("T", bound=BaseModel)

StructuredMode = Literal["json_schema", "json_object", "prompt"]
STRUCTURED_MODES: tuple[StructuredMode, ...] = ("json_schema", "json_object", "prompt")
"""The modes, in the order :func:`detect_mode` tries them (most to least enforced)."""
_INSTRUCTOR_MODE: dict[StructuredMode, instructor.Mode] = {
    "json_schema": instructor.Mode.JSON_SCHEMA,
    "json_object": instructor.Mode.JSON,
    "prompt": instructor.Mode.MD_JSON,
}


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


class _Probe(BaseModel):
    ok: bool


_PROBE_MESSAGES = [
    {"role": "system", "content": "You answer with JSON only."},
    {"role": "user", "content": 'Reply with the JSON object {"ok": true}.'},
]
_detected: dict[tuple[str, str], StructuredMode] = {}
"""``(base_url, model) -> mode`` found by :func:`detect_mode`: the issue's "once per
process" (each probe is a chat completion, ~1 s on the local model)."""
_detect_lock = threading.Lock()
_warned: set[str] = set()
"""Warnings already logged at WARNING in this process (:func:`_warn_once`)."""
_warned_lock = threading.Lock()  # not _detect_lock: the probe warns while holding it


def _warn_once(text: str) -> None:
    """Log ``text`` at WARNING the first time in this process, at DEBUG after: a dead
    endpoint fails at every bar (two lines a bar flooded stderr), and the run's summary,
    metrics and report count every failure anyway."""
    with _warned_lock:
        first = text not in _warned
        if first and len(_warned) < 1024:
            _warned.add(text)
    log.log(logging.WARNING if first else logging.DEBUG, "%s", text)


def detect_mode(client: openai.OpenAI, model: str) -> tuple[StructuredMode | None, str | None]:
    """``(mode, None)``: the first of :data:`STRUCTURED_MODES` this endpoint answers
    correctly, probed with a one-field schema (``{"ok": bool}``; no re-asks, no HTTP
    retries), remembered per ``(base_url, model)`` for the life of the process. A mode is
    passed over when the server refuses it (an HTTP error) or answers it wrongly; an
    endpoint that answers even ``prompt``, but wrongly, gets ``prompt``.

    ``(None, error)`` when nothing can be learnt now — unreachable, timed out, rate
    limited, or failing even without a ``response_format`` — and nothing is remembered:
    the next call probes again."""
    key = (str(client.base_url), model)
    with _detect_lock:
        if key in _detected:
            return _detected[key], None
        probe_client = client.with_options(max_retries=0)
        for mode in STRUCTURED_MODES:
            try:
                _structured(probe_client, mode).chat.completions.create(
                    model=model,
                    messages=_PROBE_MESSAGES,  # type: ignore[arg-type]
                    response_model=_Probe,
                    max_retries=0,
                    strict=False,
                    temperature=0,
                    max_tokens=32,
                    **_extra(mode, _Probe),
                )
            except InstructorRetryException as exc:
                cause = exc.__cause__
                transient = isinstance(cause, openai.APIConnectionError) or (
                    isinstance(cause, openai.APIStatusError)
                    and cause.status_code in (408, 409, 429)
                )
                refused = isinstance(cause, openai.APIStatusError)
                if transient or (refused and mode == "prompt"):
                    error = _api_error(cause, model)
                    _warn_once(f"cannot probe {key[0]} for structured outputs: {error}")
                    return None, error
                why = _api_error(cause, model) if refused else "wrong answer"
                log.info("structured output %s: not taken by %s (%s)", mode, key[0], why)
                if mode != "prompt":
                    continue
            except IncompleteOutputException:
                log.info("structured output %s: truncated answer from %s", mode, key[0])
                if mode != "prompt":
                    continue
            _detected[key] = mode
            log.info("structured output: %s chosen for %s (%s)", mode, model, key[0])
            _check_model(probe_client, model)
            return mode, None
        raise AssertionError("unreachable: the prompt mode always ends the loop")


def _check_model(client: openai.OpenAI, model: str) -> None:
    """Warn when ``model`` is not among the endpoint's models (``GET /models``): a
    single-model server (llama.cpp) answers any name, so a mistyped model would run, and
    be recorded as the author of every answer, without a word. Silent when the endpoint
    does not list its models."""
    try:
        served = [m.id for m in client.models.list()]
    except (openai.APIError, ValueError, TypeError):
        return
    if served and model not in served:
        log.warning(
            "llm.model %r is not among the endpoint's models (%s): it answers anyway, and "
            "its answers are recorded under %r",
            model, ", ".join(served[:5]), model,
        )  # fmt: skip


def _api_error(cause: BaseException | None, model: str) -> str:
    """One line for an endpoint fault (never the request, never the key)."""
    if isinstance(cause, openai.APIStatusError):
        return f"HTTP {cause.status_code} from {model}"
    if isinstance(cause, openai.APITimeoutError):
        return f"timeout waiting for {model}"
    if isinstance(cause, openai.APIConnectionError):
        url = cause.request.url  # the endpoint's address, never its path, query or a key
        where = f"{url.scheme}://{url.host}" + (f":{url.port}" if url.port else "")
        return f"cannot connect to the {model} endpoint at {where}"
    return f"{type(cause).__name__} from {model}"


def _log_answer(completion: object) -> None:
    """The text of an answer that failed, at DEBUG (``sentinel --debug``): untrusted
    model output, so only for whoever asked for debug logs."""
    if log.isEnabledFor(logging.DEBUG):
        choices = getattr(completion, "choices", None) or [None]
        content = getattr(getattr(choices[0], "message", None), "content", None)
        log.debug("the failed answer was: %r", (content or "")[:4000])


def _usage(completions: list[object]) -> tuple[int | None, int | None, int | None]:
    """``(prompt, completion, cached)`` tokens summed over ``completions`` (the answers
    of a failed call: a truncated answer cost its tokens too); None where none says."""
    sums: list[int | None] = [None, None, None]
    for completion in completions:
        usage = getattr(completion, "usage", None)
        details = getattr(usage, "prompt_tokens_details", None)
        values = (
            getattr(usage, "prompt_tokens", None),
            getattr(usage, "completion_tokens", None),
            getattr(details, "cached_tokens", None),
        )
        for i, value in enumerate(values):
            if isinstance(value, int):
                sums[i] = (sums[i] or 0) + value
    return sums[0], sums[1], sums[2]


def _first_problem(exc: BaseException) -> str:
    """``"ValidationError at memory_ids: List should have at most 5 items ..."``: where
    and why the answer broke the schema (never the answer itself)."""
    if isinstance(exc, ValidationError):
        errors = exc.errors(include_input=False, include_url=False)
        if errors:
            where = ".".join(str(p) for p in errors[0]["loc"]) or "<root>"
            more = f" (+{len(errors) - 1} more)" if len(errors) > 1 else ""
            return f"ValidationError at {where}: {errors[0]['msg']}{more}"[:300]
    return type(exc).__name__


def _structured(client: openai.OpenAI, mode: StructuredMode) -> instructor.Instructor:
    return instructor.from_openai(client, mode=_INSTRUCTOR_MODE[mode])


def _extra(mode: StructuredMode, schema: type[BaseModel]) -> dict[str, Any]:
    """``json_object``: llama.cpp's ``schema`` key (it overrides the bare
    ``{"type": "json_object"}`` instructor sends; openai merges ``extra_body`` last)."""
    if mode != "json_object":
        return {}
    return {
        "extra_body": {
            "response_format": {"type": "json_object", "schema": schema.model_json_schema()}
        }
    }


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
    ) -> None:
        self._client = client
        self.model = model
        self.structured_output = structured_output
        self.parse_retries = parse_retries
        self._instructors: dict[StructuredMode, instructor.Instructor] = {}
        self.stats = LLMStats()
        self._stats_lock = threading.Lock()

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
        mode, error = self.mode()
        if mode is None:
            return self._fail(started, error or "no structured-output mode", 1, None)
        if mode not in self._instructors:
            self._instructors[mode] = _structured(self._client, mode)
        responses: list[object] = []
        hooks = Hooks()
        hooks.on("completion:response", responses.append)
        try:
            value, completion = self._instructors[mode].chat.completions.create_with_completion(
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
                **_extra(mode, schema),
            )
        except IncompleteOutputException as exc:
            _log_answer(exc.last_completion)
            return self._fail(started, "answer truncated (max_tokens reached)", responses, mode)
        except InstructorRetryException as exc:
            _log_answer(exc.last_completion)
            return self._fail(started, self._describe(exc, schema), responses, mode)
        # instructor sets the final answer's usage to the total over the attempts
        prompt, generated, cached = _usage([completion])
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

    def _describe(self, exc: InstructorRetryException, schema: type[BaseModel]) -> str:
        """One line for a failed call, from the last attempt's exception and answer."""
        cause = exc.__cause__
        if isinstance(cause, openai.OpenAIError):
            return _api_error(cause, self.model)
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
                f"tr{'y' if tries == 1 else 'ies'}: {_first_problem(cause)}"
            )
        return f"{type(cause or exc).__name__} from {self.model}"

    @staticmethod
    def _fail(
        started: float,
        error: str,
        responses: list[object] | int,
        mode: StructuredMode | None,
    ) -> LLMResult[T]:
        _warn_once(f"LLM call failed: {error}")
        answers = [] if isinstance(responses, int) else responses
        attempts = responses if isinstance(responses, int) else max(1, len(responses))
        prompt, generated, cached = _usage(answers)
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
    return LLMClient(
        client,
        model=settings.model,
        structured_output=settings.structured_output,
        parse_retries=settings.parse_retries,
    )

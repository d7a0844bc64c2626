"""The real local model: ``sentinel llm serve`` and structured outputs against it.

llama-cpp-python's server with Gemma 3 270M (the session's ``local_llm`` fixture, or
the CLI itself): it refuses ``json_schema`` (HTTP 500), so ``auto`` must choose
``json_object`` with the schema key; every mode's answer is validated by pydantic.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from backend.config import LLMSettings
from backend.errors import ConfigError
from backend.eval.locomo_answer import LocomoAnswer
from backend.llm import build_llm
from backend.llm.client import LLMClient, detect_mode
from backend.llm.local import LocalServer, free_port
from backend.llm.prompts import TopicExtraction, topic_prompt
from tests.sentinel_cli import sentinel

pytestmark = pytest.mark.llm
REPO = Path(__file__).resolve().parents[2]
SENTINEL = sentinel()
HEADLINES = [
    "Terra's UST stablecoin loses its dollar peg as LUNA plunges 50%",
    "Bitcoin falls below $30,000 for the first time since July 2021",
]


def client(server: LocalServer, **overrides: object) -> LLMClient:
    llm = build_llm(LLMSettings(base_url=server.base_url, model=server.model, **overrides))  # type: ignore[arg-type]
    assert llm is not None
    return llm


@pytest.mark.slow
def test_auto_chooses_json_object_on_llama_cpp(local_llm: LocalServer) -> None:
    llm = client(local_llm)
    assert detect_mode(llm._client, llm.model) == ("json_object", None)
    system, user = topic_prompt("BTC/USDT 1h closed 2022-05-09 12:00Z at 31,000", HEADLINES)
    result = llm.parse(system=system, user=user, schema=TopicExtraction, max_tokens=300)
    assert result.error is None and result.mode == "json_object"
    assert result.value is not None and 1 <= len(result.value.topics) <= 8
    assert result.prompt_tokens and result.completion_tokens  # the server's own counts


def test_a_model_the_server_does_not_serve_is_refused(local_llm: LocalServer) -> None:
    """llama.cpp answers under any model name and echoes it back: a mistyped
    ``llm.model`` authored every decision of a reviewer's run, which exited 0 with one
    warning on stderr. It is a configuration error when the client is built."""
    with pytest.raises(ConfigError, match=r"llm.model 'gpt-4o-typo' is not among the models"):
        build_llm(LLMSettings(base_url=local_llm.base_url, model="gpt-4o-typo"))
    with pytest.raises(ConfigError, match=local_llm.model):  # the names it does serve
        build_llm(LLMSettings(base_url=local_llm.base_url, model="gpt-4o-typo"))
    assert build_llm(LLMSettings(base_url=local_llm.base_url, model=local_llm.model))


def test_json_schema_is_refused_by_this_server_and_said_so(local_llm: LocalServer) -> None:
    """The fault of the issue: forcing ``json_schema`` here gives a one-line error, not
    a silent default (HTTP retries off: a 500 is retried otherwise)."""
    llm = client(local_llm, structured_output="json_schema", max_retries=0)
    system, user = topic_prompt("BTC/USDT", HEADLINES)
    result = llm.parse(system=system, user=user, schema=TopicExtraction, max_tokens=64)
    assert result.value is None and result.error is not None
    # the server's own words are kept: what it accepts instead
    assert result.error.startswith(f"HTTP 500 from {local_llm.model}: ")
    assert "json_object" in result.error


@pytest.mark.slow
def test_prompt_mode_is_not_for_this_model_and_fails_cleanly(local_llm: LocalServer) -> None:
    """Forced to the schema-in-the-prompt mode (no ``response_format``), Gemma 3 270M
    echoes the prompt instead of answering (seen here at every max_tokens tried), so
    ``auto`` must not pick that mode on this server (the first test) — and when a user
    forces it, each call ends in the safe default with a one-line reason, counted."""
    llm = client(local_llm, structured_output="prompt", parse_retries=1)
    system = "You answer questions about a conversation in a few words."
    user = "Conversation: Caroline: I went to the LGBTQ support group yesterday.\n\n" + (
        "Question: Where did Caroline go yesterday?"
    )
    result = llm.parse(system=system, user=user, schema=LocomoAnswer, max_tokens=64)
    assert result.mode == "prompt"
    if result.value is None:  # what this model does
        assert result.error is not None and "\n" not in result.error
        assert result.error.startswith(("answer truncated", "answer does not fit", "empty"))
    assert llm.stats.calls == 1 and llm.stats.parsed == (result.value is not None)


@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM])
def test_sentinel_llm_serve_answers_and_stops_on_a_signal(stop: int, tmp_path: Path) -> None:
    port = free_port()
    proc = subprocess.Popen(
        [SENTINEL, "llm", "serve", "--port", str(port),
         "--log", str(tmp_path / "server.log")],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line == f"serving gemma-3-270m at http://127.0.0.1:{port}/v1\n"
        models = httpx.get(f"http://127.0.0.1:{port}/v1/models", timeout=5).json()
        assert [m["id"] for m in models["data"]] == ["gemma-3-270m"]
        proc.send_signal(stop)
        assert proc.wait(timeout=20) == 0
        time.sleep(0.2)
        with pytest.raises(httpx.ConnectError):  # the model server went with it
            httpx.get(f"http://127.0.0.1:{port}/v1/models", timeout=2)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_serve_without_the_model_is_one_line_and_exit_2(tmp_path: Path) -> None:
    bad = tmp_path / "model.gguf"
    bad.write_bytes(b"not a model")
    proc = subprocess.run(
        [SENTINEL, "llm", "serve", "--port", str(free_port())],
        cwd=REPO, capture_output=True, text=True, timeout=60,
        env={**os.environ, "SENTINEL_LLM__LOCAL__MODEL_PATH": str(bad)},
    )  # fmt: skip
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr == f"sentinel: error: {bad}: not the bundled model (SHA-256 differs)\n"


def test_serve_on_a_port_in_use_is_one_line_and_exit_2() -> None:
    """Something (here a bare socket; another OpenAI-compatible server alike) listens on
    the port: refused before the server starts. The readiness check had taken the other
    server's answer for this one's: "serving ...", then "exited with status 3"."""
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc = subprocess.run(
            [SENTINEL, "llm", "serve", "--port", str(port)],
            cwd=REPO, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.startswith(f"sentinel: error: port {port} on 127.0.0.1 is in use")
    assert len(proc.stderr.splitlines()) == 1


def test_the_port_check_tries_every_address_of_the_host(tmp_path: Path) -> None:
    """``localhost`` may name ``::1`` first: a listener on 127.0.0.1 alone must still be
    found (the server binds every address the name resolves to)."""
    import socket

    from backend.config import LocalLLMSettings
    from backend.errors import ConfigError

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        server = LocalServer(
            LocalLLMSettings(host="localhost"), log_path=tmp_path / "log", port=port
        )
        with pytest.raises(ConfigError, match=f"port {port} on localhost is in use"):
            server._check_port()


def test_a_bad_host_or_log_path_is_one_line_and_exit_2(tmp_path: Path) -> None:
    """A reviewer's runs: a host that does not resolve and a ``--log`` under a file or on a
    directory ended as ``internal error`` (exit 1); refused before a server starts."""
    (tmp_path / "afile").write_text("x")
    cases = [
        (["--host", "999.1.1.1", "--log", str(tmp_path / "x.log")], "host '999.1.1.1'"),
        (["--log", str(tmp_path / "afile" / "x.log")], "is not a directory"),
        (["--log", str(tmp_path)], "the server log would replace a directory"),
    ]
    for extra, said in cases:
        proc = subprocess.run(
            [SENTINEL, "llm", "serve", "--port", "0", *extra],
            cwd=REPO, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert proc.returncode == 2, proc.stderr
        (line,) = proc.stderr.splitlines()
        assert line.startswith("sentinel: error: ") and said in line, line

"""Issue 7.7 — secrets: a fake API key is used but never written anywhere.

``sentinel --debug backtest --policy llm`` runs as a real subprocess with
``SENTINEL_LLM__API_KEY`` set, against a loopback chat-completions server that answers
well, fails with 401/500 error bodies that echo the key back (as real APIs echo request
details), or sends invalid JSON. ``--debug`` turns every logger (openai, httpx, httpcore,
chromadb, the package's own) to DEBUG on stderr. Then the key must be nowhere: stdout,
stderr (logs and error messages), ``metrics.json``, ``trades.csv``, ``decisions.jsonl``,
``equity.csv``, ``report.html`` — while the server proves it was sent as the bearer token.
The same for the one-line errors of a bad option and of an unreachable endpoint.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.llm.chat_server import ChatServer, Reply, start_chat_server
from tests.sentinel_cli import sentinel as warm_sentinel

KEY = "sk-proj-FAKE7kq2ZrV9xW4mN8pL1tY6uH3bC0dE5fG"
SENTINEL = warm_sentinel()
GOOD = {"action": "buy", "size": 0.3, "confidence": 0.6, "rationale": "trend", "memory_ids": []}


@pytest.fixture()
def server() -> Iterator[ChatServer]:
    srv = start_chat_server()
    yield srv
    srv.shutdown()
    srv.server_close()


def sentinel(*args: str, base_url: str) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "SENTINEL_LLM__API_KEY": KEY,
        "SENTINEL_LLM__BASE_URL": base_url,
        "SENTINEL_LLM__MODEL": "m",
        "SENTINEL_LLM__MAX_RETRIES": "0",
        "SENTINEL_EMBEDDING__PROVIDER": "hashing",
    }
    return subprocess.run(
        [str(SENTINEL), *args], capture_output=True, text=True, timeout=600, env=env
    )


def backtest_args(shared_data: Path, out: Path, *extra: str) -> list[str]:
    return [
        "backtest",
        "--pair",
        "BTC/USDT",
        "--timeframe",
        "1h",
        "--start",
        "2022-05-09",
        "--end",
        "2022-05-10",
        "--data-dir",
        str(shared_data / "market" / "binance"),
        "--data-root",
        str(shared_data),
        "--out",
        str(out),
        "--memory",
        "on",
        "--policy",
        "llm",
        *extra,
    ]


def assert_no_key(*texts: str, where: str) -> None:
    for text in texts:
        assert KEY not in text, f"the API key leaked into {where}"
        assert KEY[8:24] not in text, f"part of the API key leaked into {where}"


def test_backtest_on_the_llm_path_writes_the_key_nowhere(
    server: ChatServer, shared_data: Path, tmp_path: Path
) -> None:
    echo = f"Incorrect API key provided: {KEY}. You can find your API key at ..."
    server.script = [
        Reply.json(GOOD),
        Reply(status=401, error_message=echo),
        Reply(status=500, error_message=f"upstream failed for key {KEY}"),
        Reply(content="not json"),
        Reply.json({**GOOD, "action": "close", "size": 0.0}),
    ] * 6
    out = tmp_path / "run"
    result = sentinel(
        "--debug", *backtest_args(shared_data, out, "--json"), base_url=server.base_url
    )
    # every call refused (401, 500): written, and exit 3 (the LLM failed)
    assert result.returncode == 3, result.stderr[-3000:]
    assert server.requests and all(r["auth"] == f"Bearer {KEY}" for r in server.requests)
    assert len(result.stderr.splitlines()) > 50  # --debug: the loggers did write
    assert_no_key(result.stdout, result.stderr, where="stdout/stderr")
    written = sorted(p for p in out.rglob("*") if p.is_file())
    assert {p.name for p in written} >= {"decisions.jsonl", "metrics.json", "report.html"}
    for path in written:
        assert_no_key(path.read_bytes().decode("utf-8", "replace"), where=path.name)
    decisions = [json.loads(line) for line in (out / "decisions.jsonl").read_text().splitlines()]
    errors = [d["proposed"]["error"] for d in decisions if d["proposed"].get("error")]
    assert any("HTTP 401" in e for e in errors) and any("HTTP 500" in e for e in errors)


def test_error_lines_never_carry_the_key(shared_data: Path, tmp_path: Path) -> None:
    bad_option = sentinel(
        *backtest_args(shared_data, tmp_path / "a", "--start", "not-a-date"),
        base_url="http://127.0.0.1:9/v1",
    )
    assert bad_option.returncode == 2 and len(bad_option.stderr.strip().splitlines()) == 1
    unreachable = sentinel(
        "--debug", *backtest_args(shared_data, tmp_path / "b"), base_url="http://127.0.0.1:9/v1"
    )
    assert unreachable.returncode == 3, unreachable.stderr[-3000:]  # the LLM failed
    decisions = (tmp_path / "b" / "decisions.jsonl").read_text()
    assert "cannot connect" in decisions
    bad_config = tmp_path / "bad.yaml"
    bad_config.write_text(f"llm:\n  api_key: {KEY}\n")
    in_yaml = sentinel(
        "--config",
        str(bad_config),
        "memory",
        "search",
        "--trader",
        "t",
        "--query",
        "q",
        base_url="http://127.0.0.1:9/v1",
    )
    assert in_yaml.returncode == 2 and "llm.api_key" in in_yaml.stderr
    for result in (bad_option, unreachable, in_yaml):
        assert_no_key(result.stdout, result.stderr, where="an error message")
    assert_no_key(decisions, where="decisions.jsonl")

"""``sentinel backtest --policy llm``: the LLM's share of answered decisions is in the
run's summary line, ``metrics.json`` (``llm_answered_share``) and the report; a model
that never answers is loud, never a quiet "+0.00%", and the command exits 3.

The dead endpoint is the loopback fake chat server (a fault the real server cannot
produce on demand: HTTP 500 to every request); the answering one is the real local
model (``local_llm``).
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from backend.backtest.metrics import LLMUsage, llm_usage
from backend.backtest.models import Decision, DecisionRecord
from backend.llm.local import LocalServer
from tests.llm.chat_server import ChatServer, start_chat_server
from tests.sentinel_cli import sentinel

SENTINEL = sentinel()
WINDOW = ["--pair", "BTC/USDT", "--timeframe", "1h", "--start", "2022-05-09"]


@pytest.fixture()
def dead_llm() -> Iterator[ChatServer]:
    srv = start_chat_server()
    srv.reject_formats = {"json_schema", "json_object", None}  # HTTP 500 to everything
    yield srv
    srv.shutdown()
    srv.server_close()


def backtest(
    shared_data: Path,
    out: Path,
    *,
    base_url: str,
    model: str,
    end: str,
    json_out: bool = False,
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "SENTINEL_LLM__BASE_URL": base_url,
        "SENTINEL_LLM__MODEL": model,
        "SENTINEL_LLM__MAX_RETRIES": "0",
        **(env or {}),
    }
    args = [SENTINEL, "backtest", "--policy", "llm", *WINDOW, "--end", end,
            "--data-dir", str(shared_data / "market" / "binance"), "--out", str(out)]  # fmt: skip
    return subprocess.run(
        [*args, *(["--json"] if json_out else [])],
        capture_output=True, text=True, timeout=900, env=env,
    )  # fmt: skip


def decisions(out: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in (out / "decisions.jsonl").read_text().splitlines()]


@pytest.mark.slow
@pytest.mark.parametrize("json_out", [False, True])
def test_an_llm_that_never_answers_is_loud(
    json_out: bool, dead_llm: ChatServer, shared_data: Path, tmp_path: Path
) -> None:
    out = tmp_path / "run"
    proc = backtest(
        shared_data, out, base_url=dead_llm.base_url, model="m", end="2022-05-09T06:00",
        json_out=json_out,
    )  # fmt: skip
    assert proc.returncode == 3, proc.stderr  # written, and no run: a script must not go on
    warning = "WARNING: the LLM answered 0 of 6 decisions (0%, below 95%); first error: "
    warning += "HTTP 500 from m: response_format None not supported"
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["llm_decisions"] == 6 and metrics["llm_answered_share"] == 0.0
    assert metrics["llm_first_error"] == "HTTP 500 from m: response_format None not supported"
    if json_out:
        assert json.loads(proc.stdout.splitlines()[-1]) == metrics
        assert warning in proc.stderr
    else:
        assert warning in proc.stdout.splitlines()
    errors = [r["proposed"]["error"] for r in decisions(out)]
    # three failures at the endpoint open the breaker (llm.breaker_failures): the rest
    # are not asked, and say so
    assert errors[:3] == ["HTTP 500 from m: response_format None not supported"] * 3
    skipped = "skipped: 3 calls in a row failed at m's endpoint (last: HTTP 500 from m: "
    assert all(e.startswith(skipped) for e in errors[3:]) and len(errors) == 6
    for record in decisions(out):
        assert record["decision"]["error"] == record["proposed"]["error"]
        assert record["decision"]["model"] == "m" and record["decision"]["action"] == "hold"
    page = (out / "report.html").read_text()
    assert warning.removeprefix("WARNING: ") in page
    assert "what it learned in training may include this window's events" in page


@pytest.mark.slow
@pytest.mark.llm
def test_the_contract_run_with_the_local_model(
    local_llm: LocalServer, shared_data: Path, tmp_path: Path
) -> None:
    """The issue's contract command (a one-bar window: the policy's parsing and limits
    are the business of ``tests/agents/test_llm_local.py``): metrics.json has
    ``llm_answered_share`` and every decision keeps ``decision.error``, null when the
    model answered."""
    out = tmp_path / "run"
    proc = backtest(
        shared_data, out, base_url=local_llm.base_url, model=local_llm.model,
        end="2022-05-09T01:00",
        # a smaller memory section than the 1,500-token default: the prompt is most of
        # the time here (~90 prompt tokens/s); the keys checked are the same
        env={"SENTINEL_MEMORY__TOKEN_BUDGET": "600"},
    )  # fmt: skip
    metrics = json.loads((out / "metrics.json").read_text())
    assert proc.returncode == (3 if metrics["llm_answered_share"] < 0.95 else 0), proc.stderr
    records = decisions(out)
    assert metrics["llm_decisions"] == len(records) == 1
    answered = [r for r in records if r["proposed"]["error"] is None]  # type: ignore[index]
    assert metrics["llm_answered_share"] == pytest.approx(len(answered) / 1)
    for record in records:
        decision = record["decision"]
        assert isinstance(decision, dict) and "error" in decision
        assert decision["model"] == local_llm.model
    for record in answered:
        assert record["decision"]["error"] is None  # type: ignore[index]
    assert ("LLM answered" in proc.stdout) and (
        ("WARNING:" in proc.stdout) == (metrics["llm_answered_share"] < 0.95)
    )


def test_llm_usage_counts_only_what_a_model_was_asked() -> None:
    from datetime import UTC, datetime

    def record(decision: Decision) -> DecisionRecord:
        at = datetime(2022, 5, 9, tzinfo=UTC)
        return DecisionRecord(as_of=at, symbol="BTC/USDT", decision=decision, proposed=decision)

    rule = Decision.hold("rules")
    good = Decision(action="buy", size=0.5, model="m")
    bad = Decision.hold("no answer", error="timeout waiting for m", model="m")
    worse = Decision.hold("no answer", error="HTTP 500 from m", model="m")
    usage = llm_usage([record(d) for d in (rule, good, bad, worse, good)])
    assert usage == LLMUsage(asked=4, answered=2, first_error="timeout waiting for m")
    assert usage.share == 0.5
    assert usage.warning(min_share=0.95) == (
        "the LLM answered 2 of 4 decisions (50%, below 95%); first error: timeout waiting for m"
    )
    assert usage.warning(min_share=0.5) is None
    assert llm_usage([record(rule)]).share is None and llm_usage([]).warning(min_share=1) is None
    assert usage.merge(LLMUsage(2, 2, None)) == LLMUsage(6, 4, "timeout waiting for m")

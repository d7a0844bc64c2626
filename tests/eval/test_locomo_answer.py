from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import SecretStr

from backend.compose import MemorySystem
from backend.config import LLMSettings
from backend.eval.locomo_answer import answer_question, locomo_f1, normalize_answer, token_f1
from backend.eval.locomo_data import load_locomo
from backend.eval.locomo_run import run_locomo
from backend.llm import LLMClient, build_llm
from backend.llm.local import LocalServer
from tests.llm.chat_server import ChatServer, Reply, start_chat_server
from tests.sentinel_cli import sentinel


def test_normalize_and_token_f1_by_hand() -> None:
    assert normalize_answer("The Pottery, and a Class!") == "pottery class"
    assert token_f1("pottery", "pottery") == 1.0
    # pred {went, to, pottery, class}, gold {pottery}: P = 1/4, R = 1 -> F1 = 0.4
    assert token_f1("went to pottery class", "Pottery") == pytest.approx(0.4)
    assert token_f1("paintings", "painting") == 1.0  # stemmed
    assert token_f1("violin", "guitar") == 0.0
    assert token_f1("", "guitar") == 0.0


def test_category_rules() -> None:
    # multi-hop: mean over gold parts of the best predicted part
    assert locomo_f1("Biscuit, fetch", "Biscuit, fetch", 1) == 1.0
    assert locomo_f1("Biscuit", "Biscuit, fetch", 1) == pytest.approx(0.5)
    # open-domain: the gold answer up to the first ';'
    assert locomo_f1("likely yes", "Likely yes; she collects books", 3) == 1.0
    assert locomo_f1("7 May 2023", "7 May 2023", 2) == 1.0
    with pytest.raises(ValueError, match="category 5"):
        locomo_f1("x", "y", 5)


@pytest.fixture
def server() -> Iterator[ChatServer]:
    srv = start_chat_server()
    yield srv
    srv.shutdown()
    srv.server_close()


def _llm(srv: ChatServer) -> LLMClient:
    llm = build_llm(
        LLMSettings(
            base_url=srv.base_url,
            model="test-model",
            max_retries=0,
            timeout_s=5,
            api_key=SecretStr("sk-test"),
        )
    )
    assert llm is not None
    return llm


def test_answer_question_on_a_loopback_endpoint(server: ChatServer) -> None:
    server.script = [Reply.json({"answer": "pottery"}), Reply(status=500)]
    llm = _llm(server)
    assert answer_question(llm, "## Memory ...", "What class did Ana take?") == ("pottery", None)
    body = server.requests[0]["body"]
    assert "What class did Ana take?" in body["messages"][1]["content"]
    answer, error = answer_question(llm, "## Memory ...", "What class did Ana take?")
    assert answer is None and error is not None and "500" in error


def test_run_scores_answers_of_categories_1_to_4(
    server: ChatServer, locomo_file: Path, locomo_system: MemorySystem
) -> None:
    dataset = load_locomo(locomo_file)
    # questions with evidence, in order: cat 4, 1, 2, 4, (5 is not answered), 2
    server.script = [
        Reply.json({"answer": "pottery"}),  # F1 1
        Reply.json({"answer": "Biscuit"}),  # multi-hop: 0.5
        Reply(status=500),  # failed: 0
        Reply.json({"answer": "on Main Street"}),  # P 2/3, R 1: 0.8
        Reply.json({"answer": "2023"}),  # 1
    ]
    report = run_locomo(
        dataset, locomo_system.toolkit, locomo_system.store, methods=["bm25"], llm=_llm(server)
    )
    assert len(server.requests) == 5  # category 5 is not asked
    assert report.answer_model == _llm(server).model  # which model the F1 is of
    bm25 = report.methods["bm25"]
    assert bm25.answer_f1 is not None and bm25.answer_f1_per_category is not None
    assert bm25.answer_f1.n == 5 and bm25.answer_f1.failed == 1
    assert bm25.answer_f1.first_error is not None and "500" in bm25.answer_f1.first_error
    assert bm25.answer_f1.f1 == pytest.approx((1 + 0.5 + 0 + 0.8 + 1) / 5)
    cats = bm25.answer_f1_per_category
    assert cats["4"].f1 == pytest.approx(0.9) and cats["2"].f1 == pytest.approx(0.5)
    assert cats["1"].f1 == pytest.approx(0.5) and "5" not in cats
    # the context the model got is the rendered memory
    assert "[D1:1 | 8 May 2023] Ana:" in server.requests[0]["body"]["messages"][1]["content"]


@pytest.mark.slow
@pytest.mark.llm
def test_sentinel_eval_locomo_answers_with_the_local_model(
    local_llm: LocalServer, shared_data: Path, tmp_path: Path
) -> None:
    """``sentinel eval locomo`` with the LLM configured, on a small subset of the real
    LoCoMo data (first conversation, first question: ~14 s here): every
    category 1-4 question is answered by the real model and scored; none is left
    unanswered."""
    out = tmp_path / "locomo.json"
    env = {
        **os.environ,
        "SENTINEL_LLM__BASE_URL": local_llm.base_url,
        "SENTINEL_LLM__MODEL": local_llm.model,
    }
    proc = subprocess.run(
        [sentinel(), "eval", "locomo",
         "--data", str(shared_data / "locomo" / "locomo_dev.json"), "--out", str(out),
         "--limit", "1", "--questions", "1", "--methods", "bm25", "--quiet"],
        capture_output=True, text=True, timeout=900, env=env,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    report = json.loads(out.read_text())
    assert report["n_conversations"] == 1 and report["n_questions"] <= 1
    dataset = load_locomo(shared_data / "locomo" / "locomo_dev.json", limit=1)
    asked = [
        q
        for q in dataset.conversations[0].questions[:1]
        if q.evidence and q.category in (1, 2, 3, 4)
    ]
    scored = report["methods"]["bm25"]["answer_f1"]
    assert scored["n"] == len(asked) > 0 and scored["failed"] == 0
    assert 0.0 <= scored["f1"] <= 1.0
    assert f"answer F1 {scored['f1']:.3f} over {len(asked)} questions" in proc.stdout


@pytest.mark.slow
def test_sentinel_eval_locomo_exits_3_when_the_llm_answers_too_few(
    shared_data: Path, tmp_path: Path
) -> None:
    """A chat model that fails at every question (HTTP 500 at the loopback fake: a fault
    the real server cannot produce on demand): the report is written with every question
    unanswered, the line is said in red, and the command exits 3, not 0."""
    from typer.testing import CliRunner

    from backend.cli import app

    dead = start_chat_server()
    dead.reject_formats = {"json_schema", "json_object", None}  # HTTP 500 to everything
    out = tmp_path / "locomo.json"
    env = {
        "SENTINEL_LLM__BASE_URL": dead.base_url,
        "SENTINEL_LLM__MODEL": "m",
        "SENTINEL_LLM__MAX_RETRIES": "0",
    }
    args = ["eval", "locomo", "--data", str(shared_data / "locomo" / "locomo_dev.json"),
            "--out", str(out), "--limit", "1", "--questions", "2", "--methods", "bm25",
            "--quiet"]  # fmt: skip
    try:
        result = CliRunner().invoke(app, args, env=env)
    finally:
        dead.shutdown()
        dead.server_close()
    assert result.exit_code == 3, result.output
    scored = json.loads(out.read_text())["methods"]["bm25"]["answer_f1"]
    assert scored["n"] == scored["failed"] > 0 and "500" in scored["first_error"]
    assert f"{scored['failed']} unanswered by the LLM" in result.output

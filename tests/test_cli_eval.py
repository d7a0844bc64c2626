"""``sentinel eval locomo``: the JSON contract, and bad input as one line with exit 2;
``sentinel eval ablation``: ``--trader``/``--fills`` misuse as one line with exit 2."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from typer.testing import CliRunner

from backend.cli import app
from tests.eval.conftest import fixture_sample
from tests.sentinel_cli import sentinel

SENTINEL = sentinel()
METHODS = {"dense", "bm25", "hybrid", "hierarchical"}
KEYS = {
    "recall@1", "recall@5", "recall@10", "recall@25",
    "latency_ms_p50", "latency_ms_p95", "tokens_per_query", "per_category",
}  # fmt: skip


def test_locomo_writes_the_contract_json(tmp_path: Path) -> None:
    data = tmp_path / "fx.json"
    data.write_text(json.dumps([fixture_sample()]), encoding="utf-8")
    out = tmp_path / "runs" / "locomo.json"
    result = CliRunner().invoke(
        app, ["eval", "locomo", "--data", str(data), "--out", str(out), "--quiet"]
    )
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    assert report["n_questions"] == 6  # one of the 7 has no evidence
    assert report["n_questions_without_evidence"] == 1
    assert [r["action"] for r in report["evidence_repairs"]] == [
        "split", "fixed", "dropped", "dropped",
    ]  # fmt: skip
    assert set(report["methods"]) == METHODS
    for name, m in report["methods"].items():
        assert set(m) >= KEYS, name
        for k in ("recall@1", "recall@5", "recall@10", "recall@25"):
            assert 0.0 <= m[k] <= 1.0
        assert m["recall@1"] <= m["recall@5"] <= m["recall@10"] <= m["recall@25"]
        assert set(m["per_category"]) == {"1", "2", "4", "5"}
        assert m["per_category"]["1"]["n"] == 1 and m["per_category"]["4"]["n"] == 2
        assert 0 < m["tokens_per_query"] <= 1500 and m["latency_ms_p95"] >= m["latency_ms_p50"]
        assert m["answer_f1"] is None  # no LLM configured
    # every turn of this tiny conversation is within the top 25
    assert report["methods"]["hierarchical"]["recall@25"] == 1.0
    assert "hierarchical" in result.stdout and str(out) in result.stdout.replace("\n", "")


def test_locomo_bad_input_is_one_line_exit_2(tmp_path: Path) -> None:
    missing = tmp_path / "nope.json"
    res = subprocess.run(
        [str(SENTINEL), "eval", "locomo", "--data", str(missing), "--out", str(tmp_path / "o")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert res.returncode == 2
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and "nope.json" in lines[0] and "file not found" in lines[0]
    assert not (tmp_path / "o").exists()
    bad = tmp_path / "bad.json"
    sample = fixture_sample()
    sample["conversation"]["session_1_date_time"] = "soon"
    bad.write_text(json.dumps([sample]), encoding="utf-8")
    res = subprocess.run(
        [str(SENTINEL), "eval", "locomo", "--data", str(bad), "--out", str(tmp_path / "o"),
         "--methods", "dense"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert res.returncode == 2 and "session_1_date_time" in res.stderr
    res = subprocess.run(
        [str(SENTINEL), "eval", "locomo", "--data", str(bad), "--out", str(tmp_path / "o"),
         "--methods", "dense,magic"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert res.returncode == 2 and "--methods" in res.stderr


def test_an_eval_out_is_checked_before_the_evaluation(tmp_path: Path, shared_data: Path) -> None:
    good = tmp_path / "good.json"
    good.write_text(json.dumps([fixture_sample()]), encoding="utf-8")
    for command in (
        ["locomo", "--data", str(good), "--methods", "bm25"],
        ["persona", "--fills", str(shared_data / "trades" / "hyperliquid_fills.csv")],
    ):
        res = subprocess.run(
            [str(SENTINEL), "eval", *command, "--out", str(tmp_path)],  # a directory
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert res.returncode == 2 and "would replace a directory" in res.stderr, res.stderr
        assert "questions done" not in res.stderr  # refused before the evaluation ran


def test_persona_eval_of_fills_too_short_to_score_is_one_line_exit_2(
    tmp_path: Path, shared_data: Path
) -> None:
    lines = (shared_data / "trades" / "hyperliquid_fills.csv").read_text().splitlines()
    fills = tmp_path / "fills.csv"
    fills.write_text("\n".join(lines[:50]) + "\n")  # two days of one trader: no point
    out = tmp_path / "persona.json"
    res = subprocess.run(
        [str(SENTINEL), "eval", "persona", "--fills", str(fills), "--out", str(out)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert res.returncode == 2, res.stderr
    assert res.stderr.count("\n") == 1 and "no evaluation point" in res.stderr, res.stderr
    assert str(fills) in res.stderr and not out.exists()


def _ablation(*extra: str, out: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(SENTINEL), "eval", "ablation", "--pairs", "BTC/USDT", "--timeframes", "4h",
         "--out", str(out), *extra],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip


def test_ablation_trader_without_fills_is_one_line_exit_2(tmp_path: Path) -> None:
    out = tmp_path / "never.json"
    for extra in (["--trader", "0xabc"], ["--fills", str(tmp_path / "fills.csv")]):
        res = _ablation(*extra, out=out)
        lines = res.stderr.strip().splitlines()
        assert res.returncode == 2 and len(lines) == 1, res.stderr
        assert "--trader and --fills" in lines[0] and not out.exists()


def test_ablation_unknown_trader_is_a_data_error_naming_the_file(
    shared_data: Path, tmp_path: Path
) -> None:
    fills = shared_data / "trades" / "hyperliquid_fills.csv"
    out = tmp_path / "never.json"
    res = _ablation("--trader", "0xnobody", "--fills", str(fills), out=out)
    lines = res.stderr.strip().splitlines()
    assert res.returncode == 2 and len(lines) == 1, res.stderr
    assert str(fills) in lines[0] and "0xnobody" in lines[0] and not out.exists()

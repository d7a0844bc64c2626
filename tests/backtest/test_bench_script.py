"""scripts/bench_backtest.py runs end to end against the builder interface (test builder)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from tests.backtest.test_cli_backtest import Factory

REPO = Path(__file__).resolve().parents[2]


def test_bench_prints_the_json_summary(
    shared_data: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    spec = importlib.util.spec_from_file_location(
        "bench_backtest", REPO / "scripts" / "bench_backtest.py"
    )
    assert spec is not None and spec.loader is not None
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    factory = Factory()
    argv = ["--data-dir", str(shared_data / "market" / "binance"), "--start", "2022-05-01",
            "--end", "2022-05-05", "--json"]  # fmt: skip
    summary = bench.main(argv, builder=factory)
    last = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert last == summary
    assert [c["memory"] for c in factory.calls] == [True, False] and factory.closed == 2
    # the default is the throwaway memory backend of `sentinel backtest` (no store path)
    assert [c["store_path"] for c in factory.calls] == [None, None]
    assert last["backend"] == "memory"
    durable = Factory()
    chroma = bench.main([*argv, "--backend", "chroma"], builder=durable)
    paths = [c["store_path"] for c in durable.calls]
    assert None not in paths and paths[0] != paths[1]
    assert chroma["backend"] == "chroma"
    for mode in ("on", "off"):
        # the test maker holds without a prompt for its first 48 bars, then 100..106 tokens
        assert last[mode]["bars"] == 96 and last[mode]["decisions_per_s"] > 0
        assert last[mode]["retrieval_p95_ms"] == 1.5
        assert 0 < last[mode]["prompt_tokens_mean"] < 100 <= last[mode]["prompt_tokens_max"] <= 106
    assert last["full_history_tokens"] > 96 * 20
    assert last["full_history_over_memory_prompt"] > 1

"""scripts/bench_backtest.py runs end to end against the builder interface (test builder)."""

from __future__ import annotations

import importlib.util
import json
import os
import socket
import subprocess
import sys
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
        # decisions_per_s excludes building the maker; the _with_build rate includes it
        assert 0 < last[mode]["decisions_per_s_with_build"] <= last[mode]["decisions_per_s"]
        # the test maker embeds nothing: no cache counts to report
        assert last[mode]["embedding_cache_hits"] is None
        assert last[mode]["embedding_cache_misses"] is None
        assert last[mode]["embedding_cache_new"] is None
        assert last[mode]["retrieval_p95_ms"] == 1.5
        assert last[mode]["failure"] is None and last[mode]["llm_answered_share"] is None
        assert last[mode]["first_bar"] is not None and "warning" in last[mode]
        assert 0 < last[mode]["prompt_tokens_mean"] < 100 <= last[mode]["prompt_tokens_max"] <= 106
    assert last["full_history_tokens"] > 96 * 20
    assert last["full_history_over_memory_prompt"] > 1


def test_cache_counts_are_the_makers_embedder(tmp_path: Path) -> None:
    """The hits and misses are the counters of the embedder behind the maker's memory;
    new entries are counted in the configured cache directory."""
    spec = importlib.util.spec_from_file_location(
        "bench_backtest", REPO / "scripts" / "bench_backtest.py"
    )
    assert spec is not None and spec.loader is not None
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    from types import SimpleNamespace

    import diskcache

    from backend.config import load_settings

    embedder = SimpleNamespace(hits=7, misses=2)
    maker = SimpleNamespace(system=SimpleNamespace(store=SimpleNamespace(embedder=embedder)))
    assert bench.embedder_counts(maker) == (7, 2)
    assert bench.embedder_counts(SimpleNamespace()) is None
    base = load_settings()
    cfg = base.model_copy(
        update={"embedding": base.embedding.model_copy(update={"cache_dir": tmp_path / "c"})}
    )
    assert bench.cache_entries(cfg) == 0
    with diskcache.Cache(str(tmp_path / "c")) as cache:
        cache.set("k", b"v")
    assert bench.cache_entries(cfg) == 1
    off = base.model_copy(
        update={"embedding": base.embedding.model_copy(update={"cache_dir": None})}
    )
    assert bench.cache_entries(off) is None


@pytest.mark.slow
def test_a_dead_chat_model_is_said_and_exits_3(shared_data: Path) -> None:
    """A reviewer's run: with ``--policy llm`` and an endpoint that refuses every call the
    JSON had ``total_return`` 0.0 and nothing else, and the script exited 0."""
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {**os.environ, "SENTINEL_LLM__BASE_URL": f"http://127.0.0.1:{port}/v1",
           "SENTINEL_LLM__MODEL": "m", "SENTINEL_LLM__MAX_RETRIES": "0"}  # fmt: skip
    done = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "bench_backtest.py"), "--data-dir",
         str(shared_data / "market" / "binance"), "--policy", "llm", "--start", "2022-05-01",
         "--end", "2022-05-02", "--json"],
        capture_output=True, text=True, timeout=600, env=env, cwd=REPO,
    )  # fmt: skip
    assert done.returncode == 3, done.stderr
    last = json.loads(done.stdout.strip().splitlines()[-1])
    for mode in ("on", "off"):
        assert last[mode]["llm_answered_share"] == 0.0
        assert last[mode]["failure"].startswith("the LLM answered 0 of ")
    assert "bench_backtest: memory on: the LLM answered 0 of " in done.stderr

"""``backend.entry.run_script``: a benchmark script's bad settings or data are one line."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(
    ("script", "env", "args", "said"),
    [
        ("bench_memory.py", {"SENTINEL_STORE__BACKEND": "foo"}, ["--json"], "store.backend"),
        ("bench_store.py", {}, ["--data-dir", "/nonexistent", "--n", "100"], "file not found"),
        (
            "bench_state_index.py",  # its data directory came from a path it made up
            {"SENTINEL_DATA__DATA_DIR": "/nonexistent"},
            ["--sizes", "100", "--queries", "5", "--json"],
            "/nonexistent/market/binance: no OHLCV file",
        ),
    ],
)
def test_a_benchmark_with_bad_settings_or_data_says_one_line_and_exits_2(
    script: str, env: dict[str, str], args: list[str], said: str
) -> None:
    """A reviewer's: every script but ``bench_backtest.py`` ended such a run with a
    traceback and exit 1."""
    done = subprocess.run(
        [sys.executable, str(REPO / "scripts" / script), *args],
        capture_output=True, text=True, timeout=120, env={**os.environ, **env},
    )  # fmt: skip
    name = script.removesuffix(".py")
    assert done.returncode == 2, done.stderr[-2000:]
    assert done.stderr.startswith(f"{name}: error: ") and said in done.stderr, done.stderr
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr

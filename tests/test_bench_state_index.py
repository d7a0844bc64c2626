"""scripts/bench_state_index.py on the real candles: the numbers it reports."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_the_state_index_is_measured_on_real_bars(shared_data: Path) -> None:
    spec = importlib.util.spec_from_file_location(
        "bench_state_index", REPO / "scripts" / "bench_state_index.py"
    )
    assert spec is not None and spec.loader is not None
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    data = bench.pool(shared_data / "market" / "binance")
    assert len(data) > 100_000 and [t for t, _, _ in data] == sorted(t for t, _, _ in data)
    result = bench.measure(data, 17000, 12, 24)  # scales from a sample above 16,384 rows
    assert result["n"] == 17000 and result["queries"] == 12 and result["k"] == 24
    assert 0.9 <= result["sample_top_k_agreement"] <= 1.0
    for key in ("build_ms", "nearest_p50_ms", "nearest_p95_ms", "change_p50_ms"):
        assert result[key] > 0
    assert result["nearest_p50_ms"] <= result["nearest_p95_ms"]

"""Benchmark the state index of episodic memory (``backend.memory.StateIndex``):
the nearest-market-state recall the decision loop makes at every bar, at 1k, 10k and
100k episodes with an outcome.

The rows are real: every 1h bar of BTC/USDT, ETH/USDT and SOL/USDT (2020-2025, the
shared Binance candles) whose features are warm is one episode, its state the bar's
:data:`~backend.memory.STATE_FEATURES` (``compute_features``) and its outcome
the market's 24h forward return, known 24h after the bar. The three pairs are pooled
in time order to reach 100k (one symbol has ~50k 1h bars in these years); for each size
``n`` (``--sizes``) the first ``n`` rows are the index. A component benchmark: it times
the code ``EpisodicMemory.recall_by_state`` runs (the index lookup), not the store read
of the returned episodes.

Timed, ``--queries`` times each (states of bars spread over the pool, ``as_of`` after
the last outcome, k = ``agent.episode_neighbours``, horizon ``"24h"``):

- ``nearest_*``: one recall;
- ``change_*``: ``with_changes`` for what one decision bar writes (a new decision
  episode and a new outcome of an earlier one), what keeps the index current;
- ``build_ms``: the index built from scratch (the first recall of a process).

``sample_top_k_agreement``: above ``2 * SCALE_SAMPLE`` live rows the feature scales are
estimated on a sample (the rows with the smallest hash of id and outcome time); the
mean share of the k neighbours that are the same with the scales of every row (1.0 =
identical).

Last line: one JSON object ``{"sizes": {n: {...}}, ...}``; times in ms::

    .venv/bin/python scripts/bench_state_index.py --json
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path
from typing import Any

import numpy as np

from backend.config import load_settings
from backend.data import load_ohlcv
from backend.memory import SCALE_SAMPLE, STATE_FEATURES, StateIndex, compute_features

PAIRS = ("BTC/USDT", "ETH/USDT", "SOL/USDT")
DAY = 86_400.0


def pool(data_dir: Path) -> list[tuple[float, dict[str, float], float]]:
    """``(close epoch s, state, 24h forward return)`` of every warm 1h bar, time order."""
    out = []
    for pair in PAIRS:
        f = compute_features(load_ohlcv(data_dir, pair, "1h"))
        close = f.column("close")
        times = f.close_times.asi8 / 1e9
        cols = {name: f.column(name) for name in STATE_FEATURES}
        for i in range(len(f) - 24):
            state = {name: float(col[i]) for name, col in cols.items()}
            if all(math.isfinite(v) for v in state.values()):
                out.append((float(times[i]), state, float(close[i + 24] / close[i] - 1)))
    out.sort(key=lambda r: r[0])
    return out


def rows(data: list[tuple[float, dict[str, float], float]], start: int, end: int) -> list[Any]:
    return [
        row
        for n in range(start, end)
        for row in StateIndex.row(
            f"ep-{n:07d}",
            created_ts=data[n][0],
            state=data[n][1],
            outcomes=[(data[n][0] + DAY, data[n][2], "24h")],
        )
    ]


def pct(values: list[float], q: float) -> float:
    return round(float(np.percentile(values, q)) * 1000, 3)


def measure(data: list[Any], n: int, queries: int, k: int) -> dict[str, Any]:
    points = rows(data, 0, n)
    built = time.perf_counter()
    index = StateIndex.from_rows(points)
    build_s = time.perf_counter() - built
    as_of = data[n - 1][0] + 2 * DAY
    picks = np.linspace(0, n - 1, queries).round().astype(int)
    near: list[float] = []
    answers = []
    for i in picks:
        t = time.perf_counter()
        answers.append(index.nearest(data[i][1], as_of_ts=as_of, k=k, horizon="24h"))
        near.append(time.perf_counter() - t)
    exact = [  # the same queries with the scales of every live row
        index.nearest(data[i][1], as_of_ts=as_of, k=k, horizon="24h", scale_sample=10**9)
        for i in picks
    ]
    agree = [
        len({a.episode_id for a in got} & {b.episode_id for b in full}) / max(1, len(full))
        for got, full in zip(answers, exact, strict=True)
    ]
    change: list[float] = []
    extra = len(data) - n
    for j in range(min(queries, extra)):
        old = f"ep-{picks[j]:07d}"
        new_rows = rows(data, n + j, n + j + 1)
        replaced = StateIndex.row(
            old,
            created_ts=data[picks[j]][0],
            state=data[picks[j]][1],
            outcomes=[(data[picks[j]][0] + DAY, data[picks[j]][2], "24h"), (as_of, 0.0, "4d")],
        )
        t = time.perf_counter()
        index = index.with_changes({f"ep-{n + j:07d}": new_rows, old: replaced})
        change.append(time.perf_counter() - t)
    return {
        "n": n,
        "build_ms": round(build_s * 1000, 1),
        "nearest_p50_ms": pct(near, 50),
        "nearest_p95_ms": pct(near, 95),
        "change_p50_ms": pct(change, 50) if change else None,
        "change_p95_ms": pct(change, 95) if change else None,
        "sample_top_k_agreement": round(float(np.mean(agree)), 4),
        "queries": len(picks),
        "k": k,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--sizes", default="1000,10000,100000")
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument(
        "--data-dir", type=Path, default=None, help="OHLCV directory (default: data.market_dir)"
    )
    parser.add_argument("--json", action="store_true", help="only the JSON line")
    args = parser.parse_args()
    settings = load_settings()
    k = settings.agent.episode_neighbours
    data = pool(args.data_dir or settings.data.market_dir)
    sizes = [int(s) for s in args.sizes.split(",")]
    if max(sizes) > len(data):
        parser.error(f"--sizes: the pool has {len(data)} bars")
    out: dict[str, Any] = {"pool_rows": len(data), "scale_sample": SCALE_SAMPLE}
    out["sizes"] = {str(n): measure(data, n, args.queries, k) for n in sizes}
    if not args.json:
        for n, result in out["sizes"].items():
            print(n, result)
    print(json.dumps(out))


if __name__ == "__main__":
    from backend.entry import run_script

    run_script("bench_state_index", main)

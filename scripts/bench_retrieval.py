"""Benchmark three-tier retrieval at scale: per-trader stores of 1k, 10k and 100k episodes.

For each size ``n`` (``--sizes``, default ``1000,10000,100000``) a child process (so the
peak RSS is per size) opens or builds an embedded Khala store of exactly ``n`` episodes
of one trader, made from the real shared data:

- the market events detected on real Binance 1h candles of BTC, ETH and SOL (2020-2025,
  ``detect_market_events`` -> ``events_to_episodes``, headlines and Fear & Greed attached);
- ``context`` episodes consolidated (``backend.memory._consolidate.consolidate``, what
  working memory writes on overflow) from 4 consecutive real 1h market snapshots, one
  window ending at every bar (stride 1 bar: windows overlap);

``n`` of them evenly spaced over the time-sorted pool. Ingest is ``EpisodicMemory.add``
in batches of 1,000 with the default MiniLM embedder, its cache off (embedding, upsert and audit
included). The store also holds the persona of the real trader ``0x513b8629…`` (fills to
2025-01-01 plus a note with hard constraints). Stores live under ``--store-root``
(default ``.bench/retrieval/n<N>``); with ``--reuse`` a complete one (``manifest.json``)
is reused and its ingest numbers are those recorded when it was built, and an
interrupted build (no manifest) is resumed: its ingest numbers then cover the episodes
added by the resuming run (``resumed_from`` says how many were already stored).

Then at ``--queries`` BTC/USDT 1h bar closes of 2025: working memory observes the 48 bars
up to the decision (its overflow is consolidated into a scratch store, so the measured
store stays at exactly ``n``), one untimed call embeds the situation query, and these are
timed, in this order, for each decision:

- ``HierarchicalMemory.retrieve`` with the tiers in parallel and one after another
  (``parallel_*``, ``sequential_*``; the episodic tier embeds the query text: the
  embedding cache is off and the store keeps no query-vector cache since issue 13);
- the floor: a bare chromadb ``collection.query`` of the same query vector at the same k
  (``memory.episodic_top_k`` = 5) with chroma's default include (documents, metadatas,
  distances: what a top-k memory read must return), and with distances only; and
  ``floor_embedded_*``: the same query with the text embedded first (what chromadb with
  an embedding function does for a text query);
- for the profile: the store's dense search of the recall pool (``store_dense_*``) and
  chroma's unfiltered probe of that search (``chroma_probe_*``).

Last line: one JSON object ``{"sizes": {n: {...}}, ...}``::

    .venv/bin/python scripts/bench_retrieval.py --sizes 1000,10000,100000 --reuse --json

Per size: ``ingest_memories_per_s``, ``ingest_s``, ``ingest_load_avg_1m`` (the machine's
1-minute load average before and after the ingest: it is shared), ``disk_bytes_per_memory``
(bytes of the store directory, chroma + audit trail, / n), ``peak_rss_mb`` (``ru_maxrss``
of the child: with ``--reuse`` the query phase only, else build included),
``first_query_ms`` (the first retrieval of the process: it loads the store's in-process
mirror and embeds the query), p50/p95 of every timing above, ``ratio_p95`` = parallel p95
/ floor p95 (``ratio_p50`` likewise), ``ratio_embedded_p95`` = parallel p95 / embedded
floor p95 (both embed the query text), ``filtered_fallback_share`` (decisions where the
unfiltered probe held fewer BTC/USDT episodes than the recall pool, so the store ran
chroma's filtered query). Times in ms.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from backend.agents.memory import PersonaManager
from backend.config import Settings, StoreSettings, load_settings
from backend.data import load_fear_greed, load_headlines, load_hyperliquid_fills, load_ohlcv
from backend.embeddings import Embedder, build_embedder
from backend.memory import (
    EpisodicMemory,
    FearGreedIndex,
    FeatureFrame,
    HeadlineIndex,
    WorkingMemory,
    compute_features,
    consolidate,
    detect_market_events,
    events_to_episodes,
    snapshot_at,
)
from backend.memory.hierarchical import HierarchicalMemory
from backend.memory.models import Episode
from backend.storage import open_store

TRADER = "0x513b8629fe877bb581bf244e326a047b249c4ff1"
PAIRS = ("BTC/USDT", "ETH/USDT", "SOL/USDT")
QUERY_PAIR = "BTC/USDT"
WINDOW_BARS = 4
PERSONA_AT = datetime(2025, 1, 1, tzinfo=UTC)
NOTE = "Never more than 2% per trade; max 3x leverage."
BATCH = 1000


def pct(values: list[float], q: float) -> float:
    return round(float(np.percentile(np.asarray(values, dtype=np.float64), q)), 3)


def market(
    data_dir: Path, pairs: tuple[str, ...] = PAIRS
) -> tuple[dict[str, FeatureFrame], HeadlineIndex, FearGreedIndex]:
    """Features of the 1h candles of ``pairs``, the headline and Fear & Greed indexes."""
    feats = {
        pair: compute_features(
            load_ohlcv(data_dir / "market" / "binance", pair, "1h").frame,
            symbol=pair,
            timeframe="1h",
        )
        for pair in pairs
    }
    heads = HeadlineIndex.build(load_headlines(data_dir / "news" / "crypto_headlines.csv"))
    fg = FearGreedIndex.build(load_fear_greed(data_dir / "trades" / "fear_greed_index.csv"))
    return feats, heads, fg


def build_episodes(
    n: int,
    settings: Settings,
    feats: dict[str, FeatureFrame],
    heads: HeadlineIndex,
    fg: FearGreedIndex,
) -> list[Episode]:
    """``n`` real episodes of :data:`TRADER`, evenly spaced over the time-sorted pool of
    detected events and 4-bar context windows (module doc). Raises ValueError if the pool
    is smaller than ``n``."""
    det = settings.memory.detectors
    events: list[Episode] = []
    windows: list[tuple[str, int]] = []
    for pair, f in feats.items():
        found = detect_market_events(f, settings=det)
        events += events_to_episodes(
            found, trader_id=TRADER, features=f, headlines=heads, fear_greed=fg
        )
        windows += [(pair, i) for i in range(WINDOW_BARS - 1, len(f))]
    close_ns = {pair: f.close_times.asi8 for pair, f in feats.items()}
    pool: list[tuple[int, int, str, Any]] = [
        (int(e.occurred_at.timestamp() * 1e9), 0, e.id, e) for e in events
    ] + [(int(close_ns[pair][i]), 1, f"{pair}:{i}", (pair, i)) for pair, i in windows]
    pool.sort(key=lambda item: (item[0], item[1], item[2]))
    if n > len(pool):
        raise ValueError(f"only {len(pool)} episodes available, asked for {n}")
    picks = [pool[int(j)] for j in np.linspace(0, len(pool) - 1, n).round().astype(int)]
    snaps: dict[tuple[str, int], Any] = {}

    def snap(pair: str, i: int) -> Any:
        if (pair, i) not in snaps:
            snaps[(pair, i)] = snapshot_at(
                TRADER, pair, "1h", feats[pair].row(i), headlines=heads, fear_greed=fg
            )
        return snaps[(pair, i)]

    out: list[Episode] = []
    for _, kind, _, item in picks:
        if kind == 0:
            out.append(item)
        else:
            pair, i = item
            out.append(consolidate([snap(pair, j) for j in range(i - WINDOW_BARS + 1, i + 1)]))
    unique = {e.id: e for e in out}
    if len(unique) != n:
        raise ValueError(f"{n - len(unique)} duplicate episode ids among the picks")
    return out


def disk_bytes(path: Path) -> int:
    """Bytes allocated on disk under ``path`` (like ``du``)."""
    total = 0
    for root, _, files in os.walk(path):
        for name in files:
            total += os.stat(Path(root) / name).st_blocks * 512
    return total


def build_store(
    root: Path,
    n: int,
    settings: Settings,
    embedder: Embedder,
    data_dir: Path,
    market_data: Any,
    *,
    resume: bool = False,
) -> dict[str, Any]:
    """Create the store of ``n`` episodes plus the persona under ``root``; returns the
    manifest (ingest numbers). With ``resume``, an interrupted build (a store without
    ``manifest.json``) is continued: episodes already stored are left alone (the upsert
    sees them unchanged and embeds nothing) and the ingest numbers cover the episodes
    added by this run only (``resumed_from`` = how many were already there)."""
    already = 0
    if resume and (root / "khala").is_dir():
        probe = open_store(_store_settings(root, settings.store), embedder)
        try:
            already = probe.count(TRADER)
        finally:
            probe.close()
    else:
        shutil.rmtree(root, ignore_errors=True)
        root.mkdir(parents=True)
    episodes = build_episodes(n, settings, *market_data)
    store = open_store(_store_settings(root, settings.store), embedder)
    try:
        episodic = EpisodicMemory(store, settings=settings.memory)
        as_of = max(e.occurred_at for e in episodes)
        load_before = os.getloadavg()[0]
        started = time.perf_counter()
        for lo in range(0, n, BATCH):
            episodic.add(episodes[lo : lo + BATCH], as_of=as_of)
        ingest_s = time.perf_counter() - started
        load_after = os.getloadavg()[0]
        persona = PersonaManager(store)
        fills = load_hyperliquid_fills(data_dir / "trades" / "hyperliquid_fills.csv")
        mine = [f for f in fills if f.trader_id == TRADER and f.datetime <= PERSONA_AT]
        persona.build_from_fills(TRADER, mine, as_of=PERSONA_AT)
        persona.update_from_text(TRADER, NOTE, as_of=PERSONA_AT)
        count = store.count(TRADER)
    finally:
        store.close()
    manifest = {
        "n": n,
        "records": count,
        "ingest_s": round(ingest_s, 2),
        "ingest_memories_per_s": round((n - already) / ingest_s, 1),
        "resumed_from": already,
        "ingest_peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "ingest_load_avg_1m": [round(load_before, 2), round(load_after, 2)],
        "embedder": embedder.model_id,
        "built_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    (root / "manifest.json").write_text(json.dumps(manifest))
    return manifest


def _store_settings(root: Path, store: StoreSettings | None = None) -> StoreSettings:
    """The configured store settings (``store``, default ``load_settings().store``: search,
    HNSW and BM25 settings, env overrides included) on the embedded chroma store of
    ``root``."""
    configured = store if store is not None else load_settings().store
    return configured.model_copy(
        update={
            "backend": "chroma",
            "mode": "embedded",
            "path": root / "khala",
            "audit_path": root / "audit.sqlite3",
        }
    )


def timed(fn: Callable[..., object], *args: Any, **kwargs: Any) -> float:
    """Wall time of ``fn(*args, **kwargs)`` in ms."""
    started = time.perf_counter()
    fn(*args, **kwargs)
    return (time.perf_counter() - started) * 1000.0


def measure(root: Path, n: int, *, data_dir: Path, n_queries: int, reuse: bool) -> dict[str, Any]:
    """Open (or build) the store of size ``n`` under ``root`` and time retrieval (module doc)."""
    settings = load_settings()
    # no embedding cache: ingest numbers include computing every vector
    embedder = build_embedder(settings.embedding.model_copy(update={"cache_dir": None}))
    manifest_path = root / "manifest.json"
    reused = reuse and manifest_path.is_file()
    if reused:
        manifest = json.loads(manifest_path.read_text())
        if manifest.get("n") != n or manifest.get("embedder") != embedder.model_id:
            raise SystemExit(f"bench_retrieval: {root} holds another store, drop --reuse")
    else:  # with --reuse, an interrupted build is resumed
        manifest = build_store(
            root, n, settings, embedder, data_dir, market(data_dir), resume=reuse
        )
    feats, heads, fg = market(data_dir, (QUERY_PAIR,))
    store = open_store(_store_settings(root, settings.store), embedder)
    scratch_dir = Path(tempfile.mkdtemp(prefix="bench-retrieval-"))
    scratch = open_store(_store_settings(scratch_dir, settings.store), embedder)
    mem = settings.memory
    working = WorkingMemory(
        scratch,
        settings=mem,
        episodic=EpisodicMemory(scratch, settings=mem),
        state_path=scratch_dir / "working.sqlite3",
    )
    episodic = EpisodicMemory(store, settings=mem)
    hier = HierarchicalMemory(
        persona=PersonaManager(store), working=working, episodic=episodic, settings=mem
    )
    k = mem.episodic_top_k
    pool = min(1000, max(50, 10 * k))  # EpisodicMemory.recall's candidate pool
    probe = min(max(3 * pool, 50), 1000)  # KhalaStore._dense's unfiltered probe
    collection = store.collection(TRADER)
    f = feats[QUERY_PAIR]
    closes = f.close_times[f.close_times >= pd.Timestamp(PERSONA_AT)]
    picks = closes[np.linspace(0, len(closes) - 1, n_queries).round().astype(int)]
    t: dict[str, list[float]] = {
        k_: []
        for k_ in (
            "parallel", "sequential", "floor", "floor_embedded", "floor_distances",
            "store_dense", "chroma_probe",
            "persona", "working", "episodic",
        )
    }  # fmt: skip
    fallbacks = 0
    first_query_ms = None
    try:
        for at in picks:
            as_of = at.to_pydatetime()
            row = f.locate(as_of)
            for i in range(max(0, row - 47), row + 1):
                working.observe_bar(TRADER, f, i, headlines=heads, fear_greed=fg)
            warm = hier.retrieve(TRADER, QUERY_PAIR, as_of=as_of)
            if first_query_ms is None:
                first_query_ms = warm.timings_ms["total"]
            query = warm.query
            vec = embedder.embed_one(query)[None, :]
            orders = (("parallel", "sequential"), ("sequential", "parallel"))
            for order in orders[len(t["floor"]) % 2]:  # alternate which one runs first
                ctx = hier.retrieve(
                    TRADER, QUERY_PAIR, as_of=as_of, query=query, parallel=order == "parallel"
                )
                t[order].append(ctx.timings_ms["total"])
                if order == "sequential":
                    for tier in ("persona", "working", "episodic"):
                        t[tier].append(ctx.timings_ms[tier])
            t["floor"].append(timed(collection.query, query_embeddings=vec, n_results=k))
            t["floor_embedded"].append(
                timed(
                    lambda text: collection.query(
                        query_embeddings=embedder.embed_one(text)[None, :], n_results=k
                    ),
                    query,
                )
            )
            t["floor_distances"].append(
                timed(collection.query, query_embeddings=vec, n_results=k, include=["distances"])
            )
            t["store_dense"].append(
                timed(
                    store.search,
                    TRADER,
                    vec[0],
                    as_of=as_of,
                    top_k=pool,
                    method="dense",
                    filters={"kind": "episodic", "symbol": QUERY_PAIR},
                )
            )
            t["chroma_probe"].append(
                timed(
                    collection.query, query_embeddings=vec, n_results=probe, include=["distances"]
                )
            )
            # untimed: how many probe rows the store could use (else it runs chroma's filter)
            res = collection.query(query_embeddings=vec, n_results=probe, include=["metadatas"])
            rows = (res["metadatas"] or [[]])[0]
            usable = sum(
                1
                for m in rows
                if m.get("symbol") == QUERY_PAIR
                and float(str(m["created_at_ts"])) <= as_of.timestamp()
            )
            fallbacks += int(usable < pool and len(rows) == probe)
    finally:
        hier.close()
        working.close()
        store.close()
        scratch.close()
        shutil.rmtree(scratch_dir, ignore_errors=True)
    out: dict[str, Any] = {
        "n": n,
        "store_records": manifest["records"],
        "ingest_memories_per_s": manifest["ingest_memories_per_s"],
        "ingest_s": manifest["ingest_s"],
        "ingest_reused": reused,
        "ingest_resumed_from": manifest.get("resumed_from", 0),
        "ingest_peak_rss_mb": manifest["ingest_peak_rss_mb"],
        "ingest_load_avg_1m": manifest["ingest_load_avg_1m"],
        "query_load_avg_1m": round(os.getloadavg()[0], 2),
        "disk_bytes_per_memory": round(disk_bytes(root) / n, 1),
        "queries": len(picks),
        "top_k": k,
        "first_query_ms": first_query_ms,
    }
    for name, values in t.items():
        out[f"{name}_p50_ms"] = pct(values, 50)
        out[f"{name}_p95_ms"] = pct(values, 95)
    out["ratio_p95"] = round(out["parallel_p95_ms"] / out["floor_p95_ms"], 2)
    out["ratio_p50"] = round(out["parallel_p50_ms"] / out["floor_p50_ms"], 2)
    out["ratio_embedded_p95"] = round(out["parallel_p95_ms"] / out["floor_embedded_p95_ms"], 2)
    out["filtered_fallback_share"] = round(fallbacks / len(picks), 3)
    out["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--sizes", default="1000,10000,100000")
    parser.add_argument("--size", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--data-dir", type=Path, default=None)
    parser.add_argument("--store-root", type=Path, default=Path(".bench/retrieval"))
    parser.add_argument("--queries", type=int, default=100)
    parser.add_argument("--reuse", action="store_true", help="reuse complete stores")
    parser.add_argument("--json", action="store_true", help="print only the JSON line")
    args = parser.parse_args()
    data_dir: Path = args.data_dir or load_settings().data.data_dir
    if args.size is not None:  # child: one size
        result = measure(
            args.store_root / f"n{args.size}",
            args.size,
            data_dir=data_dir,
            n_queries=args.queries,
            reuse=args.reuse,
        )
        print(json.dumps(result))
        return
    sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    summary: dict[str, Any] = {"sizes": {}}
    for n in sizes:
        cmd = [sys.executable, __file__, "--size", str(n), "--queries", str(args.queries)]
        cmd += ["--store-root", str(args.store_root), "--data-dir", str(data_dir)]
        cmd += ["--reuse"] if args.reuse else []
        done = subprocess.run(cmd, check=True, capture_output=True, text=True)
        result = json.loads(done.stdout.strip().splitlines()[-1])
        summary["sizes"][str(n)] = result
        if not args.json:
            print(f"n={n}: {json.dumps(result)}", flush=True)
    summary["measured_at"] = datetime.now(UTC).isoformat(timespec="seconds")
    print(json.dumps(summary))


if __name__ == "__main__":
    from backend.entry import run_script

    run_script("bench_retrieval", main)

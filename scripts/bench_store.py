"""Benchmark the Khala vector layer on real text: embedding speed, ingest, search latency.

Builds a store of ``--n`` records for one trader from the real shared data: the news
headlines (crypto_headlines.csv, deduplicated) and, to reach ``n``, market notes written
from real Binance 1h candles (BTC, ETH, SOL). Then times 200 searches of each method.
The last line printed is one JSON object::

    .venv/bin/python scripts/bench_store.py --n 10000 --json

Keys: ``embed_sentences_per_s`` (the default MiniLM embedder over the n record texts,
batched as the store does), ``embed_short_sentences_per_s`` (the same on short texts: the
first 6 words of each headline), token counts of both, ``ingest_records_per_s`` (upsert
with precomputed vectors, audit included), ``dense_search_p50_ms`` / ``hybrid_search_p50_ms``
/ ``bm25_search_p50_ms`` (store.search with a text query, query embedding included) with
p95s, ``dense_vector_search_p50_ms`` (store.search with a precomputed vector) and
``raw_chroma_p50_ms`` (a bare chromadb ``collection.query`` top-10 with a precomputed vector
on the same collection: the floor; ``--backend chroma`` only). Times are wall-clock on
this machine. The embedder runs with its disk cache off (``embedding.cache_dir=None``):
every embedding rate and every "query embedding included" latency times the model, never
a cache read, however often the script is re-run.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd

from backend.config import StoreSettings, load_settings
from backend.data import load_headlines, load_ohlcv
from backend.embeddings import Embedder, build_embedder
from backend.storage import KhalaStore, MemoryRecord, SearchMethod, open_store, stable_id

TRADER = "bench-trader"


def candle_notes(market_dir: Path, n: int) -> list[tuple[str, datetime]]:
    """Up to ``n`` ``(text, close time)`` notes from real 1h candles (BTC, ETH, SOL)."""
    out: list[tuple[str, datetime]] = []
    for pair in ("BTC/USDT", "ETH/USDT", "SOL/USDT"):
        frame = load_ohlcv(market_dir, pair, "1h").frame
        ret = frame["close"].pct_change()
        rng = (frame["high"] - frame["low"]) / frame["open"]
        vol = frame["volume"] / frame["volume"].rolling(24, min_periods=1).mean()
        closes = frame["close"]
        for ts in frame.index[1 : n + 1]:
            text = (
                f"{pair} 1h candle {pd.Timestamp(ts):%Y-%m-%d %H:%M}: close {closes[ts]:,.2f}, "
                f"return {ret[ts]:+.2%}, range {rng[ts]:.2%}, volume {vol[ts]:.1f}x its 24h mean"
            )
            out.append((text, (ts + np.timedelta64(1, "h")).to_pydatetime()))
            if len(out) >= n:
                return out
    return out


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q))


def mean_tokens(embedder: Embedder, texts: list[str]) -> float | None:
    tokenizer = getattr(embedder, "_tokenizer", None)
    if tokenizer is None:
        return None
    sample = texts[:2000]
    with_padding = tokenizer.padding
    tokenizer.no_padding()
    lengths = [len(e.ids) for e in tokenizer.encode_batch(sample)]
    if with_padding:
        tokenizer.enable_padding(**with_padding)
    return round(statistics.mean(lengths), 1)


def embed_rate(embedder: Embedder, texts: list[str]) -> tuple[float, np.ndarray]:
    embedder.embed(texts[:64])  # warm-up (session, allocator)
    start = time.perf_counter()
    vectors = embedder.embed(texts)
    return len(texts) / (time.perf_counter() - start), vectors


def latencies(fn: Callable[[str], object], queries: list[str]) -> list[float]:
    out = []
    for query in queries:
        start = time.perf_counter()
        fn(query)
        out.append((time.perf_counter() - start) * 1000.0)
    return out


def run(n: int, data_dir: Path, store_settings: StoreSettings, n_queries: int) -> dict[str, object]:
    settings = load_settings()
    embedder = build_embedder(settings.embedding.model_copy(update={"cache_dir": None}))
    headlines = load_headlines(data_dir / "news" / "crypto_headlines.csv")
    items = [(h.title, h.published_at) for h in headlines][:n]
    if len(items) < n:
        items += candle_notes(data_dir / "market" / "binance", n - len(items))
    texts = [t for t, _ in items]
    short = [" ".join(h.title.split()[:6]) for h in headlines]

    rate, vectors = embed_rate(embedder, texts)
    short_rate, _ = embed_rate(embedder, short)

    store: KhalaStore = open_store(store_settings, embedder)
    records = [
        MemoryRecord(
            id=stable_id(i, text),
            trader_id=TRADER,
            text=text,
            created_at=ts,
            kind="news" if i < len(headlines) else "market",
            embedding=vectors[i].tolist(),
        )
        for i, (text, ts) in enumerate(items)
    ]
    as_of = max(r.created_at for r in records)
    start = time.perf_counter()
    for lo in range(0, len(records), 1000):
        store.upsert(TRADER, records[lo : lo + 1000], as_of=as_of)
    ingest_s = time.perf_counter() - start

    rnd = random.Random(7)
    queries = [" ".join(rnd.choice(headlines).title.split()[:5]) for _ in range(n_queries)]
    query_vecs = embedder.embed(queries)

    start = time.perf_counter()
    store.search(TRADER, queries[0], as_of=as_of, method="bm25")  # builds the BM25 index
    bm25_build_ms = (time.perf_counter() - start) * 1000.0
    result: dict[str, object] = {"n": store.count(TRADER), "embedder": embedder.model_id}
    methods: tuple[SearchMethod, ...] = ("dense", "bm25", "hybrid")
    for method in methods:

        def one(q: str, m: SearchMethod = method) -> object:
            return store.search(TRADER, q, as_of=as_of, top_k=10, method=m)

        lat = latencies(one, queries)
        result[f"{method}_search_p50_ms"] = round(percentile(lat, 50), 2)
        result[f"{method}_search_p95_ms"] = round(percentile(lat, 95), 2)
    vec_iter = iter(query_vecs)
    lat = latencies(
        lambda _q: store.search(TRADER, next(vec_iter), as_of=as_of, top_k=10, method="dense"),
        queries,
    )
    result["dense_vector_search_p50_ms"] = round(percentile(lat, 50), 2)
    if store.backend == "chroma":
        collection = store.collection(TRADER)
        vec_iter = iter(query_vecs)
        lat = latencies(
            lambda _q: collection.query(query_embeddings=next(vec_iter)[None, :], n_results=10),
            queries,
        )
        result["raw_chroma_p50_ms"] = round(percentile(lat, 50), 2)
        result["raw_chroma_p95_ms"] = round(percentile(lat, 95), 2)
    result.update(
        embed_sentences_per_s=round(rate, 1),
        embed_mean_tokens=mean_tokens(embedder, texts),
        embed_short_sentences_per_s=round(short_rate, 1),
        embed_short_mean_tokens=mean_tokens(embedder, short),
        ingest_records_per_s=round(len(records) / ingest_s, 1),
        bm25_index_build_ms=round(bm25_build_ms, 1),
        queries=n_queries,
        backend=store.backend,
        embedding_cache="off",
    )
    store.close()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=10_000, help="records to store (>= 100)")
    parser.add_argument("--data-dir", type=Path, default=None, help="shared data directory")
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument(
        "--store-path",
        type=Path,
        default=None,
        help="embedded store directory (default: a temporary one)",
    )
    parser.add_argument("--backend", choices=("chroma", "memory"), default="chroma")
    parser.add_argument("--json", action="store_true", help="print only the JSON line")
    args = parser.parse_args()
    if args.n < 100:
        parser.error("--n must be >= 100")
    data_dir = args.data_dir or load_settings().data.data_dir
    with tempfile.TemporaryDirectory(prefix="bench-store-") as tmp:
        path = args.store_path or Path(tmp) / "khala"
        # the configured store settings (search, HNSW, BM25...), in a store of its own
        store = load_settings().store.model_copy(
            update={"backend": args.backend, "mode": "embedded", "path": path, "audit_path": None}
        )
        result = run(args.n, data_dir, store, args.queries)
    if not args.json:
        for key, value in result.items():
            print(f"{key:32s} {value}")
    result["measured_at"] = datetime.now(UTC).isoformat(timespec="seconds")
    print(json.dumps(result))


if __name__ == "__main__":
    from backend.entry import run_script

    run_script("bench_store", main)

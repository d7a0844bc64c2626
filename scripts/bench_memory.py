"""Benchmark the memory retrieval of a decision, as the decision loop makes it.

Builds, on a temporary embedded chroma store (``Settings.offline(store_dir=...)``, what
``sentinel backtest --store-path`` runs on; every other setting from
``config/default.yaml`` and ``SENTINEL_*`` overrides via ``load_settings``), the memory of
the real Hyperliquid trader ``0x513b8629…`` on BTC/USDT 1h (2020-09..2025-09) with the
composition root's parts (``backend.compose.make_manager``; the agent's ``trader_id``
set to that trader):

- the persona from the trader's fills up to 2025-01-01, plus a note of hard constraints;
- every market event and news shock the manager detects on the candles, written with
  their outcomes over the agent's horizon by the manager's own writer: the warm start
  (``manager.writer.start``: the episodes detected before the first bar replayed and
  their known outcomes, ``episode_ingest_s`` seconds, every description embedded), then
  the writer's per-bar steps (``flush_if_due``, ``add_due``, ``tick``: batched flushes
  every 24 bars, each episode and outcome readable from its own time);
- working memory observed by the manager's reader (``manager.reader.observe``, equity
  10,000 flat: no drawdown) at every bar from 48 bars before 2025-01-01 to the last
  decision time: the memory steps of ``DeepTraderManager.on_bar``, its retrieval only
  at ``--queries`` decision times evenly spaced over 2025-01-01..2025-09-19. No policy
  runs, so no decision episodes are written: the state index holds the 584 detected
  episodes, where a real loop over the same bars would also hold its own decisions
  (816 rows in a reviewer's run); ``scripts/bench_backtest.py`` times the whole loop,
  decisions included.

At each decision time these are timed (ms, wall clock, in this order):

- ``context_*``: ``manager.reader.build_context`` -- the very call of the decision loop
  (``DeepTraderManager.on_bar``, its ``retrieval_ms``): ``HierarchicalMemory.build_context``
  with the tiers of ``agent.memory_tiers``, episodes recalled by nearest market state
  (``recall_by_state``: ``agent.episode_neighbours`` = ``top_k`` of them, outcome over
  ``horizon``), the account of the bar's timeframe, rendered within ``budget`` tokens;
  as in the loop it is the bar's first read, so it also brings the state index up to
  date with the writes since the last read; ``first_context_ms`` is the first such call
  of the process (it builds the state index);
- ``cold_*``: ``HierarchicalMemory.retrieve`` with the same arguments, persona re-read
  from the store (``persona.invalidate``: after a restart or an external refresh),
  tiers one after another then in parallel; then the same with the persona served from
  the in-process index (``sequential_*``, ``parallel_*``, per-tier p50s of the
  sequential call, ``speedup_p50`` = sequential / parallel). The recalled episodes are
  checked to be those of the reader's call (the script exits if not);
- ``text_recall_*``: the text path, ``MemoryToolkit.recall`` (what an agent's tool call
  and the MCP ``recall`` tool run: episodes by the situation text, ``top_k`` 5), which
  embeds its query.

The embedder runs with its on-disk cache off (``embedding.cache_dir=None``; the store
keeps no query-vector cache): every text recall computes its query embedding, and the
ingest embeds every episode, however often the script is re-run. The decision-loop
calls embed nothing (episodes by state; the trader has no messages to recall).
``episodes``/``outcomes``: detected episodes and outcomes the writer stored by the last
decision time. ``context_tokens_p50``/``max`` (tiktoken cl100k_base) against ``budget``;
``episodes_recalled_mean`` per context. Last line: one JSON object::

    .venv/bin/python scripts/bench_memory.py --json
    .venv/bin/python scripts/bench_memory.py --server --json   # a local `chroma run`
"""

from __future__ import annotations

import argparse
import json
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from functools import partial
from pathlib import Path

import numpy as np

from backend.agents.deep_trader_manager import bar_state  # the loop's market state of a bar
from backend.compose import build_memory_system, make_manager, make_policy
from backend.config import MemorySettings, load_settings
from backend.data import load_hyperliquid_fills, load_ohlcv
from backend.embeddings import build_embedder
from backend.errors import StoreError
from backend.memory import compute_features, load_news

TRADER = "0x513b8629fe877bb581bf244e326a047b249c4ff1"
SYMBOL = "BTC/USDT"
EQUITY = 10_000.0
"""The account's equity at every replayed bar (quote currency; flat: no drawdown)."""
WINDOW_BARS = 48
"""Bars replayed before the first decision time (the working window's length)."""


def p(values: list[float], q: float) -> float:
    return round(float(np.percentile(np.asarray(values), q)), 2)


@contextmanager
def chroma_server(path: Path) -> Iterator[int]:
    """A real ``chroma run`` server on a free loopback port (the CLI ships with chromadb)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])
    exe = Path(sys.executable).parent / "chroma"
    proc = subprocess.Popen(
        [str(exe), "run", "--path", str(path), "--host", "127.0.0.1", "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        for _ in range(100):
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                    break
            except OSError:
                time.sleep(0.1)
        yield port
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def run(
    data_dir: Path, store_dir: Path, n_queries: int, port: int | None = None
) -> dict[str, object]:
    base = load_settings()
    cfg = base.offline(store_dir=store_dir)  # embedded chroma in store_dir, no chat model
    embedding = cfg.embedding.model_copy(update={"cache_dir": None})  # module doc
    store = cfg.store
    if port is not None:
        store = store.model_copy(update={"mode": "server", "port": port})
    agent = cfg.agent.model_copy(update={"trader_id": TRADER})
    settings = cfg.model_copy(update={"store": store, "embedding": embedding, "agent": agent})
    system = build_memory_system(settings, embedder=build_embedder(embedding))
    fills = [
        f
        for f in load_hyperliquid_fills(data_dir / "trades" / "hyperliquid_fills.csv")
        if f.trader_id == TRADER
    ]
    persona_at = datetime(2025, 1, 1, tzinfo=UTC)
    system.persona.build_from_fills(
        TRADER, [f for f in fills if f.datetime <= persona_at], as_of=persona_at
    )
    system.toolkit.record_note(
        TRADER, "Never more than 2% per trade; max 3x leverage.", as_of=persona_at
    )
    ohlcv = load_ohlcv(data_dir / "market" / "binance", SYMBOL, "1h")
    mem: MemorySettings = settings.memory
    features = compute_features(ohlcv, breakout_lookback_bars=mem.detectors.breakout_lookback_bars)
    manager = make_manager(
        settings,
        features=features,
        news=load_news(settings.data, data_dir),
        system=system,
        policy=make_policy(settings, "rule"),
        seed_note=None,
    )
    reader, writer = manager.reader, manager.writer
    if reader is None or writer is None:
        raise SystemExit("bench_memory: the manager was built without memory")
    lo = features.locate(persona_at) + 1
    picks = sorted({int(i) for i in np.linspace(lo, len(features) - 1, n_queries).round()})
    timings: dict[str, list[float]] = {
        k: []
        for k in (
            "context",
            "parallel",
            "sequential",
            "persona",
            "working",
            "episodic",
            "account",
            "cold_parallel",
            "cold_sequential",
            "cold_persona",
            "text_recall",
        )
    }
    tokens: list[int] = []
    recalled: list[int] = []
    situations: set[str] = set()
    horizon = writer.horizon

    def measure(position: int, situation: str) -> None:
        """Time the retrieval variants at row ``position`` (module doc)."""
        row = features.row(position)
        as_of = row.as_of
        state = bar_state(row)
        situations.add(situation)
        mark = time.perf_counter()
        ctx, rendered = reader.build_context(SYMBOL, as_of, situation, state, horizon)
        timings["context"].append((time.perf_counter() - mark) * 1000)
        tokens.append(rendered.tokens)
        recalled.append(len(ctx.episodes))
        retrieve = partial(  # the arguments MemoryReader.build_context gives (checked below)
            system.memory.retrieve,
            TRADER,
            SYMBOL,
            as_of=as_of,
            query=situation,
            tiers=agent.memory_tiers,
            top_k=agent.episode_neighbours,
            state=state,
            horizon=horizon,
            timeframe=features.timeframe,
        )
        system.persona.invalidate(TRADER)
        cold_seq = retrieve(parallel=False)
        system.persona.invalidate(TRADER)
        cold_par = retrieve(parallel=True)
        seq = retrieve(parallel=False)
        par = retrieve(parallel=True)
        ids = [s.episode.id for s in ctx.episodes]
        if any([s.episode.id for s in c.episodes] != ids for c in (cold_seq, par)):
            raise SystemExit("bench_memory: retrieve recalled other episodes than the reader")
        timings["cold_sequential"].append(cold_seq.timings_ms["total"])
        timings["cold_parallel"].append(cold_par.timings_ms["total"])
        timings["cold_persona"].append(cold_seq.timings_ms["persona"])
        timings["sequential"].append(seq.timings_ms["total"])
        timings["parallel"].append(par.timings_ms["total"])
        for tier in ("persona", "working", "episodic", "account"):
            timings[tier].append(seq.timings_ms.get(tier, 0.0))
        mark = time.perf_counter()
        system.toolkit.recall(TRADER, situation, symbol=SYMBOL, as_of=as_of)
        timings["text_recall"].append((time.perf_counter() - mark) * 1000)

    begin = lo - WINDOW_BARS
    wanted = set(picks)
    ingest_s = 0.0
    for i in range(begin, picks[-1] + 1):
        # the memory steps of DeepTraderManager.on_bar at every bar (flush, observe,
        # detected episodes due, outcomes due), its retrieval only at the decision times
        as_of = features.row(i).as_of
        if i == begin:  # the warm start: every episode detected before, with its outcomes
            started = time.perf_counter()
            writer.start(as_of)
            ingest_s = time.perf_counter() - started
        situation, failed = reader.observe(
            i, equity=EQUITY, first=i == begin, write=writer.write_landing
        )
        writer.flush_if_due(as_of)
        if failed:  # a timing of a failing memory is no measurement
            raise StoreError(f"working memory failed at row {i}: {failed[0]}")
        writer.add_due(as_of)
        if i in wanted:
            measure(i, situation)
        writer.tick(as_of)
    system.close()
    return {
        "episodes": writer.stats["episodes_added"],
        "outcomes": writer.stats["outcomes_recorded"],
        "episode_ingest_s": round(ingest_s, 2),
        "queries": len(picks),
        "top_k": agent.episode_neighbours,
        "horizon": horizon,
        "context_p50_ms": p(timings["context"], 50),
        "context_p95_ms": p(timings["context"], 95),
        "first_context_ms": round(timings["context"][0], 2),
        "parallel_p50_ms": p(timings["parallel"], 50),
        "parallel_p95_ms": p(timings["parallel"], 95),
        "sequential_p50_ms": p(timings["sequential"], 50),
        "sequential_p95_ms": p(timings["sequential"], 95),
        "speedup_p50": round(
            p(timings["sequential"], 50) / max(p(timings["parallel"], 50), 1e-9), 2
        ),
        "cold_parallel_p50_ms": p(timings["cold_parallel"], 50),
        "cold_sequential_p50_ms": p(timings["cold_sequential"], 50),
        "cold_speedup_p50": round(
            p(timings["cold_sequential"], 50) / max(p(timings["cold_parallel"], 50), 1e-9), 2
        ),
        "cold_persona_p50_ms": p(timings["cold_persona"], 50),
        "persona_p50_ms": p(timings["persona"], 50),
        "working_p50_ms": p(timings["working"], 50),
        "episodic_p50_ms": p(timings["episodic"], 50),
        "account_p50_ms": p(timings["account"], 50),
        "text_recall_p50_ms": p(timings["text_recall"], 50),
        "text_recall_p95_ms": p(timings["text_recall"], 95),
        "distinct_queries": len(situations),
        "episodes_recalled_mean": round(float(np.mean(recalled)), 1),
        "context_tokens_p50": int(np.median(tokens)),
        "context_tokens_max": max(tokens),
        "budget": mem.token_budget,
        "store_mode": settings.store.mode,
        "embedding_cache": "off",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-dir", type=Path, default=None)
    parser.add_argument("--queries", type=int, default=100)
    parser.add_argument(
        "--server",
        action="store_true",
        help="run against a local `chroma run` server instead of embedded",
    )
    parser.add_argument("--json", action="store_true", help="print only the JSON line")
    args = parser.parse_args()
    data_dir = args.data_dir or load_settings().data.data_dir
    with tempfile.TemporaryDirectory(prefix="bench-memory-") as tmp:
        if args.server:
            with chroma_server(Path(tmp) / "server") as port:
                result = run(data_dir, Path(tmp), args.queries, port)
        else:
            result = run(data_dir, Path(tmp), args.queries)
    if not args.json:
        for key, value in result.items():
            print(f"{key:24s} {value}")
    print(json.dumps(result))


if __name__ == "__main__":
    from backend.entry import run_script

    run_script("bench_memory", main)

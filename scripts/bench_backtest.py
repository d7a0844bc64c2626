"""Benchmark the DeepTraderManager in the backtest engine, memory on vs off.

Runs :func:`backend.backtest.engine.run_backtest` over real candles twice (``memory=True``
then ``memory=False``), each with a fresh memory on the backend ``--backend`` names —
``memory`` (default: the throwaway store ``sentinel backtest`` uses without
``--store-path``) or ``chroma`` (a durable embedded chroma store in a temporary
directory, what ``--store-path``, paper trading and the service use; ``--persistent`` is
an alias) — and the maker built by
``backend.compose.build_trader_manager`` (imported lazily; the script
exits with a clear message if it is missing). Last line: one JSON object::

    .venv/bin/python scripts/bench_backtest.py --backend memory --start 2022-05-01 \
        --end 2022-06-01 --json

Keys, per mode ``on``/``off``: ``build_s`` (seconds building the manager: features,
detectors, memory system, embedding model), ``run_s`` (seconds of ``run_backtest``, the
close function's final writes included), ``bars``, ``decisions_per_s`` (decisions /
``run_s``: it EXCLUDES ``build_s``), ``decisions_per_s_with_build`` (decisions /
(``build_s`` + ``run_s``)), ``retrieval_p50_ms``/``p95`` (``DecisionRecord.retrieval_ms`` of
every step), ``prompt_tokens_mean``/``max`` (``DecisionRecord.prompt_tokens``),
``total_return`` (a fraction), ``llm_answered_share`` (``null`` without a chat model)
and ``failure`` (``null``, or why the run measured nothing: a chat model or memory that
failed below ``llm.min_answered_share``; the script then exits 3 after printing),
``trades`` (positions closed, ``metrics.n_trades``:
freqtrade's count, as ``metrics.json``; it was the rows of ``trades.csv`` until
2026-12-07), ``trade_rows`` (those rows: each reduction of a position), and the
embedding cache of the mode's run (build and run; ``null`` when
the maker embeds through no cache: memory off, ``embedding.cache_dir`` unset, or a test
maker): ``embedding_cache_hits``/``misses`` (texts the product's ``CachedEmbedder``
served from the cache / had the model embed, its own counters read from the maker's
``system.store.embedder``) and ``embedding_cache_new`` (entries the run added to the
on-disk cache: every text the model embedded, those embedded ahead in batches by
``Embedder.prime`` included, which count neither as hits nor as misses). A cold run has
``embedding_cache_new`` > 0; a warm one 0 and no misses.
Baseline: ``full_history_tokens`` = cl100k_base tokens of a one-line-per-bar history of
every bar of the window (what a memory-less prompt would need at the last bar to see the
same history) and ``full_history_over_memory_prompt`` = that / ``on.prompt_tokens_mean``.
Vectors come through the configured persistent embedding cache (``embedding.cache_dir``):
the first run over a window embeds (cold), later runs read them back (warm); set
``SENTINEL_EMBEDDING__CACHE_DIR`` to an empty directory to measure a cold run (the
``embedding_cache_*`` keys say which one a run was).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import diskcache
import numpy as np
import pandas as pd

from backend.backtest.engine import BacktestResult, bar_close_times, run_backtest, select_window
from backend.backtest.metrics import dependency_failure, run_warning
from backend.cli.backtest import MakerFactory, data_root_for, default_maker_factory
from backend.config import Settings, load_settings
from backend.data import OHLCVFrame, load_ohlcv
from backend.errors import SentinelError
from backend.text.tokens import count_tokens
from backend.types import parse_utc


def load_builder() -> MakerFactory:
    """``build_trader_manager`` of the composition root (what ``sentinel backtest`` runs)."""
    return default_maker_factory()


def _utc(text: str) -> datetime:
    """``--start``/``--end``: a bad date is argparse's usage error (exit 2), no traceback."""
    try:
        return parse_utc(text)
    except (ValueError, SentinelError) as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def _pct(values: Sequence[float], q: float) -> float:
    return round(float(np.percentile(np.asarray(values, dtype=np.float64), q)), 3)


def history_text(ohlcv: OHLCVFrame, *, start: datetime, end: datetime) -> str:
    """One line per bar of the window: close time and OHLCV (a naive full-history prompt)."""
    first, stop = select_window(ohlcv, start=start, end=end)
    frame = ohlcv.frame.iloc[first:stop]
    closes = bar_close_times(pd.DatetimeIndex(frame.index), ohlcv.timeframe)
    return "\n".join(
        f"{t:%Y-%m-%d %H:%M} O {o:.2f} H {h:.2f} L {lo:.2f} C {c:.2f} V {v:.1f}"
        for t, o, h, lo, c, v in zip(
            closes,
            frame["open"],
            frame["high"],
            frame["low"],
            frame["close"],
            frame["volume"],
            strict=True,
        )
    )


def cache_entries(settings: Settings) -> int | None:
    """Entries of the configured on-disk embedding cache (None when there is none)."""
    directory = settings.embedding.cache_dir
    if directory is None or settings.embedding.provider == "hashing":
        return None
    with diskcache.Cache(str(directory)) as cache:  # its stored settings are kept
        return len(cache)


def embedder_counts(maker: object) -> tuple[int, int] | None:
    """``(hits, misses)`` of the cache of the embedder the maker's memory runs on
    (``maker.system.store.embedder``, a ``CachedEmbedder``), None when it has none."""
    system = getattr(maker, "system", None)
    embedder = getattr(getattr(system, "store", None), "embedder", None)
    hits, misses = getattr(embedder, "hits", None), getattr(embedder, "misses", None)
    if isinstance(hits, int) and isinstance(misses, int):
        return hits, misses
    return None


def bench_mode(
    builder: MakerFactory,
    settings: Settings,
    ohlcv: OHLCVFrame,
    *,
    data_dir: Path,
    memory: bool,
    policy: str,
    start: datetime,
    end: datetime,
    store_path: Path | None,
) -> dict[str, Any]:
    """Build one manager, run the window, summarise timings and prompt sizes."""
    agent = settings.agent.model_copy(update={"memory": memory, "policy": policy})
    cfg = settings.model_copy(update={"agent": agent})
    entries_before = cache_entries(cfg)
    began = time.perf_counter()
    maker, close = builder(
        cfg, ohlcv=ohlcv, data_dir=data_dir, memory=memory, policy=policy, store_path=store_path
    )
    built = time.perf_counter()
    try:
        result: BacktestResult = run_backtest(
            ohlcv, maker, settings=cfg.backtest, trader_id=cfg.agent.trader_id, start=start, end=end
        )
    finally:
        close()
    ran = time.perf_counter()
    counts = embedder_counts(maker)
    entries_after = cache_entries(cfg) if counts is not None else None
    new = (
        entries_after - entries_before
        if entries_after is not None and entries_before is not None
        else None
    )
    retrieval = [r.retrieval_ms for r in result.decisions] or [0.0]
    tokens = [r.prompt_tokens for r in result.decisions] or [0]
    return {
        "build_s": round(built - began, 3),
        "run_s": round(ran - built, 3),
        "bars": len(result.equity),
        "trades": result.metrics.n_trades,  # positions (freqtrade's count), as metrics.json
        "trade_rows": len(result.trades),  # rows of trades.csv: each reduction of a position
        "decisions_per_s": round(len(result.decisions) / max(ran - built, 1e-9), 2),
        "decisions_per_s_with_build": round(len(result.decisions) / max(ran - began, 1e-9), 2),
        "retrieval_p50_ms": _pct(retrieval, 50),
        "retrieval_p95_ms": _pct(retrieval, 95),
        "prompt_tokens_mean": round(float(np.mean(tokens)), 1),
        "prompt_tokens_max": int(max(tokens)),
        "total_return": round(result.metrics.total_return, 6),
        "llm_answered_share": result.metrics.llm_answered_share,
        "failure": dependency_failure(result.metrics, min_share=cfg.llm.min_answered_share),
        # what the run went without (warm-up holds only, data gaps, refused proposals):
        # a reviewer's window before the data was a quiet "total_return": 0.0
        "warning": run_warning(result.metrics, min_share=cfg.llm.min_answered_share),
        "first_bar": result.equity.index[0].isoformat() if len(result.equity) else None,
        "embedding_cache_hits": counts[0] if counts is not None else None,
        "embedding_cache_misses": counts[1] if counts is not None else None,
        "embedding_cache_new": new,
    }


def main(
    argv: Sequence[str] | None = None, *, builder: MakerFactory | None = None
) -> dict[str, Any]:
    """Parse ``argv``, run both modes, print the summary (JSON last line) and return it."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--data-dir", type=Path, default=None, help="default: data.market_dir")
    parser.add_argument("--pair", default="BTC/USDT")
    parser.add_argument("--timeframe", default="1h")
    parser.add_argument("--start", type=_utc, default="2022-05-01")
    parser.add_argument("--end", type=_utc, default="2022-05-15")
    parser.add_argument("--policy", default="rule", choices=("rule", "llm"))
    parser.add_argument(
        "--backend",
        choices=("memory", "chroma"),
        default="memory",
        help="memory: the throwaway store `sentinel backtest` uses by default; chroma: a "
        "durable embedded chroma store in a temporary directory (as with --store-path)",
    )
    parser.add_argument("--persistent", action="store_true", help="alias of --backend chroma")
    parser.add_argument("--json", action="store_true", help="print only the JSON line")
    args = parser.parse_args(argv)
    durable = args.persistent or args.backend == "chroma"
    build = builder if builder is not None else load_builder()
    settings = load_settings()
    data_dir: Path = args.data_dir if args.data_dir is not None else settings.data.market_dir
    start, end = args.start, args.end
    ohlcv = load_ohlcv(data_dir, args.pair, args.timeframe)
    history = history_text(ohlcv, start=start, end=end)
    summary: dict[str, Any] = {
        "pair": args.pair,
        "timeframe": args.timeframe,
        "start": start.isoformat(),
        "end": end.isoformat(),
        "policy": args.policy,
        "backend": "chroma" if durable else "memory",
        "embedding_cache": str(settings.embedding.cache_dir),
    }
    with tempfile.TemporaryDirectory(prefix="bench-backtest-") as tmp:
        for name, memory in (("on", True), ("off", False)):
            summary[name] = bench_mode(
                build,
                settings,
                ohlcv,
                data_dir=data_root_for(data_dir, settings),
                memory=memory,
                policy=args.policy,
                start=start,
                end=end,
                store_path=Path(tmp) / f"khala-{name}" if durable else None,
            )
            if not args.json:
                print(f"memory {name}: {summary[name]}")
    full = count_tokens(history)
    summary["full_history_tokens"] = full
    mean_on = float(summary["on"]["prompt_tokens_mean"])
    summary["full_history_over_memory_prompt"] = round(full / mean_on, 2) if mean_on else None
    print(json.dumps(summary))
    return summary


if __name__ == "__main__":
    from backend.entry import run_script

    result = run_script("bench_backtest", main)  # bad input: one line, exit 2
    failed = [f"memory {m}: {result[m]['failure']}" for m in ("on", "off") if result[m]["failure"]]
    if failed:  # a dead model or store: the figures are no measurement (as `sentinel backtest`)
        print(f"bench_backtest: {'; '.join(failed)}", file=sys.stderr)
        raise SystemExit(3)

"""Token cost: the hierarchical decision context against a full-history prompt as history grows.

For each history length (``--histories``, default 1 week, 1 month and 1 year of 1h bars)
and each of ``--times`` decision times ``T`` (bar closes evenly spaced over
``--from``..``--to``), a fresh memory system (temporary embedded store, default MiniLM)
is given exactly the history ``[T - length, T)`` of ``--pair``:

- the persona from the agent's seed note (``DEFAULT_CONSTRAINTS_NOTE``, as the
  DeepTraderManager records it at its first bar);
- the market events and news shocks detected in the history (``detect_market_events``,
  ``detect_news_shocks``), as episodes;
- working memory replayed over every bar of the history (its overflow consolidated into
  ``context`` episodes, as in the decision loop).

At ``T`` the decision context is built as the manager builds it
(``HierarchicalMemory.build_context`` with :func:`situation_query` of the bar at ``T``,
budget ``memory.token_budget``). Baseline: the one-line-per-bar history of the same
window (``history_text`` of ``scripts/bench_backtest.py``, reused). Both are counted
alone (``memory_context_tokens``, ``full_history_tokens``) and as the whole decision prompt
of the LLM policy (``backend.agents.policies.decision_prompt``: instructions + memory or
history section + the current bar; ``*_prompt_tokens``). tiktoken cl100k_base. Decision
episodes are not in this memory (no agent runs here); the context is budget-bound anyway.

Last line: one JSON object::

    .venv/bin/python scripts/bench_tokens.py --json

Keys per history (``1w``, ``1m``, ``1y``): ``bars``, ``memories`` (episodes stored at
``T``, mean), ``memory_context_tokens_mean``/``max``, ``full_history_tokens_mean``,
``memory_prompt_tokens_mean``, ``full_history_prompt_tokens_mean``, ``ratio`` (full
history prompt / memory prompt, mean), ``build_s_mean`` (replay time).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import shutil
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, cast

import numpy as np
import pandas as pd

from backend.agents.deep_trader_manager import DEFAULT_CONSTRAINTS_NOTE, situation_query
from backend.agents.policies import DecisionView, decision_prompt
from backend.backtest.models import BarContext, PositionState
from backend.compose import build_memory_system
from backend.config import Settings, StoreSettings, load_settings
from backend.data import OHLCVFrame, load_fear_greed, load_headlines, load_ohlcv
from backend.embeddings import Embedder, build_embedder
from backend.memory import (
    FearGreedIndex,
    FeatureFrame,
    HeadlineIndex,
    compute_features,
    detect_market_events,
    detect_news_shocks,
    events_to_episodes,
)
from backend.text.tokens import count_tokens

HISTORIES: dict[str, timedelta] = {
    "1w": timedelta(days=7),
    "1m": timedelta(days=30),
    "1y": timedelta(days=365),
}
TRADER = "agent"


def load_history_text() -> Callable[..., str]:
    """``history_text`` of ``scripts/bench_backtest.py`` (the baseline it already uses)."""
    path = Path(__file__).with_name("bench_backtest.py")
    spec = importlib.util.spec_from_file_location("bench_backtest", path)
    if spec is None or spec.loader is None:
        raise SystemExit(f"bench_tokens: cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return cast(Callable[..., str], module.history_text)


def _utc(text: str) -> datetime:
    parsed = datetime.fromisoformat(text)
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


def one(
    settings: Settings,
    embedder: Embedder,
    *,
    ohlcv: OHLCVFrame,
    features: FeatureFrame,
    heads: HeadlineIndex,
    fg: FearGreedIndex,
    t: datetime,
    length: timedelta,
    history_text: Callable[..., str],
) -> dict[str, float]:
    """Build the memory of ``[t - length, t)`` and count both prompts at ``t`` (module doc)."""
    start = t - length
    tmp = Path(tempfile.mkdtemp(prefix="bench-tokens-"))
    began = time.perf_counter()
    cfg = settings.model_copy(
        update={
            "store": StoreSettings(path=tmp / "khala", audit_path=tmp / "audit.sqlite3"),
            "memory": settings.memory.model_copy(
                update={"working_state_path": tmp / "working.sqlite3"}
            ),
        }
    )
    system = build_memory_system(cfg, embedder=embedder)
    try:
        first = features.locate(start) + 1  # first bar closing after start
        last = features.locate(t)  # the bar closing at t
        noted = features.row(first).as_of
        system.toolkit.record_note(TRADER, DEFAULT_CONSTRAINTS_NOTE, as_of=noted)
        det = cfg.memory.detectors
        events = [
            e
            for e in detect_market_events(features, settings=det)
            + detect_news_shocks(features, heads, settings=det)
            if start < e.at <= t
        ]
        episodes = events_to_episodes(
            events, trader_id=TRADER, features=features, headlines=heads, fear_greed=fg
        )
        for i in range(first, last + 1):
            as_of = features.row(i).as_of
            due = [e for e in episodes if features.row(i - 1).as_of < e.occurred_at <= as_of]
            if due:
                system.episodic.add(due, as_of=as_of)
            snapshot = system.working.observe_bar(
                TRADER, features, i, headlines=heads, fear_greed=fg
            )
        build_s = time.perf_counter() - began
        memories = len(system.episodic.scan(TRADER, as_of=t))
        _, rendered = system.memory.build_context(
            TRADER, features.symbol, as_of=t, query=situation_query(snapshot)
        )
    finally:
        system.close()
        shutil.rmtree(tmp, ignore_errors=True)
    row = features.row(last)
    opened = int(ohlcv.frame.index.searchsorted(pd.Timestamp(t) - pd.Timedelta(hours=1)))
    columns = ["open", "high", "low", "close", "volume"]  # the candle closing at t
    o, h, lo, c, v = ohlcv.frame[columns].to_numpy(dtype=np.float64)[opened].tolist()
    bar = BarContext(
        trader_id=TRADER,
        symbol=features.symbol,
        timeframe=features.timeframe,
        index=last,
        as_of=t,
        open=o,
        high=h,
        low=lo,
        close=c,
        volume=v,
        position=PositionState(quantity=0.0, entry_price=None, equity=10_000.0, exposure=0.0),
    )
    history = history_text(ohlcv, start=start, end=t)
    full_section = "## Price history (one line per bar: close time, OHLCV)\n" + history
    with_memory = DecisionView(
        bar=bar, features=row, prompt=rendered.text, prompt_ids=tuple(rendered.memory_ids)
    )
    with_history = DecisionView(bar=bar, features=row, prompt=full_section)
    prompts = [decision_prompt(v, max_exposure=1.0) for v in (with_memory, with_history)]
    memory_prompt, history_prompt = (count_tokens(s) + count_tokens(u) for s, u in prompts)
    return {
        "bars": last - first + 1,
        "memories": memories,
        "memory_context_tokens": rendered.tokens,
        "full_history_tokens": count_tokens(history),
        "memory_prompt_tokens": memory_prompt,
        "full_history_prompt_tokens": history_prompt,
        "build_s": build_s,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--data-dir", type=Path, default=None, help="shared data directory")
    parser.add_argument("--pair", default="BTC/USDT")
    parser.add_argument("--histories", default="1w,1m,1y", help=f"of {', '.join(HISTORIES)}")
    parser.add_argument("--times", type=int, default=3, help="decision times per history")
    parser.add_argument("--from", dest="first", default="2022-01-01")
    parser.add_argument("--to", dest="last", default="2025-06-01")
    parser.add_argument("--json", action="store_true", help="print only the JSON line")
    args = parser.parse_args()
    settings = load_settings()
    data_dir: Path = args.data_dir or settings.data.data_dir
    names = [h.strip() for h in args.histories.split(",") if h.strip()]
    unknown = [h for h in names if h not in HISTORIES]
    if unknown or args.times < 1:
        parser.error(f"--histories: unknown {unknown}" if unknown else "--times must be >= 1")
    ohlcv = load_ohlcv(data_dir / "market" / "binance", args.pair, "1h")
    features = compute_features(ohlcv.frame, symbol=args.pair, timeframe="1h")
    heads = HeadlineIndex.build(load_headlines(data_dir / "news" / "crypto_headlines.csv"))
    fg = FearGreedIndex.build(load_fear_greed(data_dir / "trades" / "fear_greed_index.csv"))
    lo, hi = features.locate(_utc(args.first)), features.locate(_utc(args.last))
    times = [features.row(int(i)).as_of for i in np.linspace(lo, hi, args.times).round()]
    embedder = build_embedder(settings.embedding)
    history_text = load_history_text()
    summary: dict[str, Any] = {
        "pair": args.pair,
        "times": [t.isoformat() for t in times],
        "budget": settings.memory.token_budget,
    }
    for name in names:
        rows = [
            one(
                settings,
                embedder,
                ohlcv=ohlcv,
                features=features,
                heads=heads,
                fg=fg,
                t=t,
                length=HISTORIES[name],
                history_text=history_text,
            )
            for t in times
        ]

        def mean(key: str, rows: list[dict[str, float]] = rows) -> float:
            return round(float(np.mean([r[key] for r in rows])), 1)

        summary[name] = {
            "bars": mean("bars"),
            "memories": mean("memories"),
            "memory_context_tokens_mean": mean("memory_context_tokens"),
            "memory_context_tokens_max": max(r["memory_context_tokens"] for r in rows),
            "full_history_tokens_mean": mean("full_history_tokens"),
            "memory_prompt_tokens_mean": mean("memory_prompt_tokens"),
            "full_history_prompt_tokens_mean": mean("full_history_prompt_tokens"),
            "ratio": round(
                float(
                    np.mean(
                        [r["full_history_prompt_tokens"] / r["memory_prompt_tokens"] for r in rows]
                    )
                ),
                2,
            ),
            "build_s_mean": mean("build_s"),
        }
        if not args.json:
            print(f"{name}: {json.dumps(summary[name])}", flush=True)
    print(json.dumps(summary))


if __name__ == "__main__":
    main()

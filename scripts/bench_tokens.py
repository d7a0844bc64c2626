"""Token cost: the hierarchical decision context against a full-history prompt as history grows.

For each history length (``--histories``, default 1 week, 1 month and 1 year of 1h bars)
and each of ``--times`` decision times ``T`` (bar closes evenly spaced over
``--from``..``--to``), a fresh memory system (temporary embedded chroma store,
``Settings.offline(store_dir=...)`` as ``sentinel backtest --store-path``; every other
setting from ``config/default.yaml`` and ``SENTINEL_*`` via ``load_settings``; the
configured embedder, its disk cache as configured: tokens do not depend on it) is given
exactly the history ``[T - length, T)`` of ``--pair`` by running the agent over it: the
backtest engine (``run_backtest``) drives a :class:`DeepTraderManager` with the default
(offline) rule policy over the bars opening in that window, so its own loop

- records the agent's seed note (``DEFAULT_CONSTRAINTS_NOTE``) as the persona at its
  first bar;
- writes the market events and news shocks detected in the window
  (``backend.compose.detected_episodes``, what ``make_manager`` gives the loop, with the
  configured detector settings; none from before it: the history
  is the window, where a backtest's warm start would add every earlier one) with their
  outcomes, and its own decision episodes, in its batched flushes;
- observes every bar in working memory (its overflow consolidated into ``context``
  episodes) with the account's equity;

and builds the decision context at every bar, ``T``'s included, as it does in any run
(``MemoryReader.build_context``: episodes by nearest market state,
``agent.episode_neighbours`` of them, the account block, budget ``memory.token_budget``).
The policy is wrapped only to keep the :class:`DecisionView` it is given at ``T``.
Baseline: the one-line-per-bar history of the same window (``history_text`` of
``scripts/bench_backtest.py``, reused). Both are counted alone (``memory_context_tokens``:
the view's memory section; ``full_history_tokens``) and as the whole decision prompt of
the LLM policy (``backend.agents.policies.decision_prompt`` of that view, and of the same
view with the history section instead of the memory one: instructions + section + the
current bar; ``*_prompt_tokens``). tiktoken cl100k_base.

Last line: one JSON object::

    .venv/bin/python scripts/bench_tokens.py --json

Keys per history (``1w``, ``1m``, ``1y``): ``bars``, ``memories`` (episodes stored at
``T``, when the policy decides, mean), ``memory_context_tokens_mean``/``max``,
``full_history_tokens_mean``, ``memory_prompt_tokens_mean``,
``full_history_prompt_tokens_mean``, ``ratio`` (full history prompt / memory prompt,
mean), ``build_s_mean`` (seconds: the agent's run over the window, memory writes and
contexts included).
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

from backend.agents import MemorySystem
from backend.agents.policies import DecisionView, Policy, decision_prompt
from backend.backtest.engine import run_backtest
from backend.backtest.models import Decision
from backend.compose import build_memory_system, detected_episodes, make_manager, make_policy
from backend.config import Settings, load_settings
from backend.data import OHLCVFrame, load_ohlcv
from backend.embeddings import Embedder, build_embedder
from backend.memory import FeatureFrame, News, compute_features, load_news
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


class _KeepView:
    """``inner`` (the policy that decides), keeping the view it is given at ``at`` and
    the number of episodes stored then."""

    def __init__(self, inner: Policy, at: datetime, system: MemorySystem) -> None:
        self.inner = inner
        self.at = at
        self.system = system
        self.view: DecisionView | None = None
        self.memories = 0

    def decide(self, view: DecisionView) -> Decision:
        if view.bar.as_of == self.at:
            self.view = view
            self.memories = len(self.system.episodic.scan(TRADER, as_of=self.at))
        return self.inner.decide(view)


def one(
    settings: Settings,
    embedder: Embedder,
    *,
    ohlcv: OHLCVFrame,
    features: FeatureFrame,
    news: News,
    t: datetime,
    length: timedelta,
    history_text: Callable[..., str],
) -> dict[str, float]:
    """Run the agent over ``[t - length, t)`` and count both prompts at ``t`` (module doc)."""
    start = t - length
    tmp = Path(tempfile.mkdtemp(prefix="bench-tokens-"))
    began = time.perf_counter()
    base = settings.offline(store_dir=tmp)
    cfg = base.model_copy(
        update={"agent": base.agent.model_copy(update={"trader_id": TRADER, "memory": True})}
    )
    system = build_memory_system(cfg, embedder=embedder)
    try:
        episodes = [  # what make_manager gives the loop, only those of the window
            e
            for e in detected_episodes(cfg, features, news.headlines, news.fear_greed)
            if start < e.occurred_at <= t
        ]
        keep = _KeepView(make_policy(cfg, "rule"), t, system)
        manager = make_manager(
            cfg, features=features, news=news, system=system, policy=keep,
            episodes=episodes,
        )  # fmt: skip
        result = run_backtest(
            ohlcv, manager, settings=cfg.backtest, trader_id=TRADER, start=start, end=t
        )
        build_s = time.perf_counter() - began
    finally:
        system.close()
        shutil.rmtree(tmp, ignore_errors=True)
    view = keep.view
    if view is None or view.prompt is None:
        raise SystemExit(f"bench_tokens: no decision with memory at {t.isoformat()}")
    history = history_text(ohlcv, start=start, end=t)
    full_section = "## Price history (one line per bar: close time, OHLCV)\n" + history
    with_history = DecisionView(bar=view.bar, features=view.features, prompt=full_section)
    limit = cfg.agent.max_exposure
    prompts = [decision_prompt(v, max_exposure=limit) for v in (view, with_history)]
    memory_prompt, history_prompt = (count_tokens(s) + count_tokens(u) for s, u in prompts)
    return {
        "bars": len(result.decisions),
        "memories": keep.memories,
        "memory_context_tokens": count_tokens(view.prompt),
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
    det = settings.memory.detectors  # as backend.compose.build_trader_manager computes them
    features = compute_features(ohlcv, breakout_lookback_bars=det.breakout_lookback_bars)
    news = load_news(settings.data, data_dir)  # the configured files, as a backtest
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
                news=news,
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
    from backend.entry import run_script

    run_script("bench_tokens", main)

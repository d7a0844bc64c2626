"""Memory ablation in backtests: the same walk-forward backtests with the memory tiers
switched on one by one.

Modes (:data:`MODES`), all with the same offline :class:`~backend.agents.policies.RulePolicy`
and the same persona (the manager's seed note: max 2% risk per trade, max 3x leverage,
no memecoins):

- ``off``: no memory (no retrieval, no writes); the hard constraints are still enforced
  after the policy, from the seed note held in process;
- ``persona``: memory on, only the persona tier retrieved into the decision context;
- ``persona_working``: persona + working memory;
- ``all``: persona + working + episodic (the default agent).

With memory on, the modes differ only in what is retrieved (``agent.memory_tiers``):
memory writes (decision episodes, outcomes, working-memory consolidation) are the same.

Walk-forward windows (:func:`walk_forward_windows`): contiguous, non-overlapping
``months``-long windows from ``start`` to ``end`` (the last one cut at the data's end),
the same for every mode. Each run is a fresh manager on a fresh temporary store: it
starts flat with the initial capital, its features are warm from the candles before the
window, and the episodes detected before the window are loaded at its first bar (the
warm start); nothing of later windows is ever visible (the engine's clock).

Per run (:class:`~backend.eval.models.WindowRun`): the engine's metrics (buy-and-hold of
the same window included), the manager's persona-constraint violations (decisions whose
proposal broke a hard constraint and was cut by the check), prompt tokens, and what the
context held (episodes, working snapshots, persona), counted by :class:`ContextProbe`.
Per mode the windows are chained (:func:`chain`): each starts from the capital the
previous one ended with (positions are closed at window ends only in the marked sense:
the next window starts flat).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from backend.agents.deep_trader_manager import DEFAULT_CONSTRAINTS_NOTE
from backend.agents.policies import DecisionView, Policy
from backend.backtest.engine import run_backtest, utc_timestamp
from backend.backtest.metrics import bar_returns, bars_per_year, max_drawdown, sharpe_ratio
from backend.backtest.models import Decision
from backend.compose import build_trader_manager
from backend.config import Settings
from backend.data import OHLCVFrame
from backend.embeddings import Embedder
from backend.eval.models import AblationMode, ChainedMetrics, WindowRun
from backend.memory.models import Tier

__all__ = [
    "MODES",
    "ContextProbe",
    "RunOutput",
    "chain",
    "run_ablation",
    "run_window",
    "walk_forward_windows",
]

MODES: dict[AblationMode, tuple[bool, tuple[Tier, ...]]] = {
    "off": (False, ("persona", "working", "episodic")),
    "persona": (True, ("persona",)),
    "persona_working": (True, ("persona", "working")),
    "all": (True, ("persona", "working", "episodic")),
}
"""Mode -> (``agent.memory``, ``agent.memory_tiers``); with memory off the tiers are unused."""


class ContextProbe:
    """A pass-through :class:`Policy` that counts what each decision's context held."""

    def __init__(self, inner: Policy) -> None:
        self.inner = inner
        self.decisions = 0
        self.episodes = 0
        self.working = 0
        self.with_persona = 0
        self.episode_ids: set[str] = set()

    def decide(self, view: DecisionView) -> Decision:
        self.decisions += 1
        ctx = view.context
        if ctx is not None:
            self.episodes += len(ctx.episodes)
            self.working += len(ctx.working)
            self.with_persona += ctx.persona is not None
            self.episode_ids.update(s.episode.id for s in ctx.episodes)
        return self.inner.decide(view)


def walk_forward_windows(
    start: datetime, end: datetime, *, months: int
) -> list[tuple[datetime, datetime]]:
    """Contiguous ``[a, b)`` windows of ``months`` calendar months from ``start``; the last
    one ends at ``end``. Raises ValueError for ``months < 1`` or ``start >= end``."""
    if months < 1:
        raise ValueError(f"window months must be >= 1, got {months}")
    lo, hi = utc_timestamp(start), utc_timestamp(end)
    if lo >= hi:
        raise ValueError(f"start {lo.isoformat()} must be before end {hi.isoformat()}")
    out: list[tuple[datetime, datetime]] = []
    a = lo
    while a < hi:
        b = min(a + pd.DateOffset(months=months), hi)
        out.append((a.to_pydatetime(), b.to_pydatetime()))
        a = b
    return out


@dataclass(frozen=True)
class RunOutput:
    """One run: its record and its curves (quote currency at each bar close)."""

    run: WindowRun
    equity: pd.Series
    buy_and_hold: pd.Series
    initial_equity: float
    episode_ids: frozenset[str] = field(default_factory=frozenset)


def run_window(
    settings: Settings,
    *,
    ohlcv: OHLCVFrame,
    data_root: Path,
    mode: AblationMode,
    start: datetime,
    end: datetime,
    embedder: Embedder | None = None,
    seed_note: str | None = DEFAULT_CONSTRAINTS_NOTE,
) -> RunOutput:
    """Backtest ``ohlcv`` over ``[start, end)`` in ``mode`` with a fresh manager and store
    (``settings.agent.policy``). Raises the errors of the builder and the engine
    (DataError for an empty window, ConfigError for a bad policy)."""
    memory, tiers = MODES[mode]
    agent = settings.agent.model_copy(update={"memory": memory, "memory_tiers": tiers})
    cfg = settings.model_copy(update={"agent": agent})
    began = time.perf_counter()
    manager, close = build_trader_manager(
        cfg,
        ohlcv=ohlcv,
        data_dir=data_root,
        memory=memory,
        policy=agent.policy,
        store_path=None,
        embedder=embedder,
        seed_note=seed_note,
    )
    probe = ContextProbe(manager.policy)
    manager.policy = probe
    try:
        result = run_backtest(
            ohlcv, manager, settings=cfg.backtest, trader_id=agent.trader_id, start=start, end=end
        )
        violations = int(manager.stats()["violations"])
    finally:
        close()
    n = max(probe.decisions, 1)
    tokens = [r.prompt_tokens for r in result.decisions]
    run = WindowRun(
        pair=ohlcv.pair,
        timeframe=ohlcv.timeframe,
        mode=mode,
        window_start=start,
        window_end=end,
        metrics=result.metrics,
        violations=violations,
        prompt_tokens_mean=round(float(np.mean(tokens)) if tokens else 0.0, 2),
        episodes_in_context_mean=round(probe.episodes / n, 3),
        working_in_context_mean=round(probe.working / n, 3),
        persona_in_context_share=round(probe.with_persona / n, 4),
        run_s=round(time.perf_counter() - began, 2),
    )
    return RunOutput(
        run=run,
        equity=result.equity,
        buy_and_hold=result.buy_and_hold,
        initial_equity=cfg.backtest.initial_equity,
        episode_ids=frozenset(probe.episode_ids),
    )


def chain(
    curves: Sequence[pd.Series], *, initial: float, timeframe: str
) -> tuple[float, float, float]:
    """``(total return, Sharpe, max drawdown)`` of windows chained end to end: each curve
    (quote currency, starting from ``initial``) is rescaled to start from the capital the
    previous one ended with; Sharpe from the concatenated within-window bar returns
    (annualised, rf 0, :func:`~backend.backtest.metrics.sharpe_ratio`)."""
    capital = 1.0
    pieces: list[np.ndarray] = []
    returns: list[np.ndarray] = []
    for curve in curves:
        values = np.asarray(curve, dtype=np.float64) / initial
        pieces.append(values * capital)
        returns.append(bar_returns(values))
        capital *= float(values[-1]) if values.size else 1.0
    if not pieces:
        return 0.0, 0.0, 0.0
    path = np.concatenate(pieces)
    sharpe = sharpe_ratio(np.concatenate(returns), periods_per_year=bars_per_year(timeframe))
    return capital - 1.0, sharpe, max_drawdown(path, initial=1.0)


def _summaries(outputs: list[RunOutput]) -> dict[str, Any]:
    """pair -> timeframe -> mode (and ``buy_and_hold``) -> :class:`ChainedMetrics` dict."""
    out: dict[str, Any] = {}
    groups: dict[tuple[str, str, str], list[RunOutput]] = {}
    for o in outputs:
        groups.setdefault((o.run.pair, o.run.timeframe, o.run.mode), []).append(o)
    for (pair, tf, mode), runs in sorted(groups.items()):
        runs.sort(key=lambda o: o.run.window_start)
        initial = runs[0].initial_equity
        total, sharpe, mdd = chain([o.equity for o in runs], initial=initial, timeframe=tf)
        by_tf = out.setdefault(pair, {}).setdefault(tf, {})
        by_tf[mode] = ChainedMetrics(
            total_return=round(total, 6),
            sharpe=round(sharpe, 4),
            max_drawdown=round(mdd, 6),
            n_trades=sum(o.run.metrics.n_trades for o in runs),
            violations=sum(o.run.violations for o in runs),
            windows=len(runs),
            prompt_tokens_mean=round(float(np.mean([o.run.prompt_tokens_mean for o in runs])), 2),
            run_s=round(sum(o.run.run_s for o in runs), 2),
        ).model_dump()
        if "buy_and_hold" not in by_tf:
            total, sharpe, mdd = chain(
                [o.buy_and_hold for o in runs], initial=initial, timeframe=tf
            )
            by_tf["buy_and_hold"] = ChainedMetrics(
                total_return=round(total, 6),
                sharpe=round(sharpe, 4),
                max_drawdown=round(mdd, 6),
                n_trades=0,
                violations=0,
                windows=len(runs),
                prompt_tokens_mean=0.0,
                run_s=0.0,
            ).model_dump()
    return out


def run_ablation(
    settings: Settings,
    *,
    ohlcv: dict[tuple[str, str], OHLCVFrame],
    data_root: Path,
    windows: Sequence[tuple[datetime, datetime]],
    modes: Sequence[AblationMode] = tuple(MODES),
    embedder: Embedder | None = None,
    on_run: Callable[[WindowRun, list[WindowRun]], None] | None = None,
) -> dict[str, Any]:
    """Run every (pair, timeframe) of ``ohlcv`` x window x mode; windows without candles
    are skipped (listed in ``skipped``). ``on_run(run, runs_so_far)`` after each run.

    Returns ``{"runs": [WindowRun dicts], "summary": pair -> timeframe -> mode|buy_and_hold
    -> ChainedMetrics dict, "skipped": [...], "modes", "windows"}``."""
    outputs: list[RunOutput] = []
    skipped: list[dict[str, str]] = []
    for (pair, tf), frame in sorted(ohlcv.items()):
        index = frame.frame.index
        for start, end in windows:
            if not ((index >= utc_timestamp(start)) & (index < utc_timestamp(end))).any():
                skipped.append({"pair": pair, "timeframe": tf, "window_start": start.isoformat()})
                continue
            for mode in modes:
                out = run_window(
                    settings,
                    ohlcv=frame,
                    data_root=data_root,
                    mode=mode,
                    start=start,
                    end=end,
                    embedder=embedder,
                )
                outputs.append(out)
                if on_run is not None:
                    on_run(out.run, [o.run for o in outputs])
    return {
        "runs": [o.run.model_dump(mode="json") for o in outputs],
        "summary": _summaries(outputs),
        "skipped": skipped,
        "modes": list(modes),
        "windows": [[a.isoformat(), b.isoformat()] for a, b in windows],
    }

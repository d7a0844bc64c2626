"""Benchmark the LLM paths against the real local model, per structured-output mode.

Starts the bundled model (Gemma 3 270M) with :class:`backend.llm.local.LocalServer` —
what ``sentinel llm serve`` runs — then, for each mode of ``--modes``:

- **decisions**: ``sentinel backtest --policy llm``'s own path
  (:func:`backend.cli.backtest.run_backtest_command`, memory on, the default config but
  ``llm.structured_output``) over ``--start``..``--end`` of BTC/USDT 1h;
- **persona updates**: :meth:`PersonaManager.update_from_text` on each of
  :data:`NOTES` (a trader's words) into a fresh store.

Per mode (JSON, last line of stdout)::

    .venv/bin/python scripts/bench_llm.py --json

``decisions``, ``decisions_per_min`` (wall clock of the backtest, building the memory
included), ``llm_s_per_decision`` (the LLM calls alone), ``prompt_tokens`` /
``completion_tokens`` per decision (the server's counts, re-asks included),
``cached_prompt_share`` (prompt tokens the server reused from its prefix cache: the N
of its log's ``Llama.generate: N prefix-match hit`` lines, summed, over the prompt
tokens it reported), ``parsed_share`` / ``parsed_first_try_share`` (answers
that validated, within the configured re-asks / on the first try; from
``LLMClient.stats``), ``llm_answered_share`` (``metrics.json``'s), ``constraint_cuts``
(proposals the hard-constraint check had to change) and ``breaches`` (executed trades
beyond the 2% risk-per-trade or the max-exposure limit afterwards: must be 0); and
``persona`` with ``updates``, ``parsed_share``, ``parsed_first_try_share``,
``seconds_per_update``.
"""

from __future__ import annotations

import argparse
import json
import re
import tempfile
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

from backend.agents.constraints import stop_distance
from backend.agents.memory import PersonaManager
from backend.agents.policies import LLMPolicy, daily_vol
from backend.backtest.models import DecisionMaker
from backend.cli.backtest import run_backtest_command
from backend.compose import build_trader_manager
from backend.config import LLMSettings, Settings, load_settings
from backend.data import Fill, OHLCVFrame
from backend.embeddings import HashingEmbedder
from backend.llm import LLMClient, build_llm
from backend.llm.client import StructuredMode
from backend.llm.local import LocalServer
from backend.storage import open_store

NOTES = (
    "I got liquidated on SOL last week, keep me out of leverage.",
    "Never more than 2% a trade.",
    "Moving house this month, less screen time: I'd rather hold positions for weeks.",
    "I only trade BTC and ETH, no memecoins ever.",
    "I'm a conservative trader; my goal is to beat holding BTC with smaller drawdowns.",
    "Long only for me, I never short.",
    "Max 3x leverage, and never put more than half my equity in one position.",
    "I like swing trades of a few days on ETH.",
)
"""Statements a trader makes to the agent (the issue's examples and their kind)."""
_PREFIX = re.compile(r"Llama\.generate: (\d+) prefix-match hit, remaining (\d+) prompt tokens")


def cache_share(log_text: str, prompt_tokens: int) -> float | None:
    """Share of ``prompt_tokens`` (the server's own count over the run's requests) it
    served from its prefix cache: the sum of N over the log's ``prefix-match hit``
    lines (llama-cpp-python prints one per request that reused a prefix, none for a
    request that reused nothing)."""
    if prompt_tokens <= 0:
        return None
    return min(1.0, sum(int(m.group(1)) for m in _PREFIX.finditer(log_text)) / prompt_tokens)


def _stats_share(llm: LLMClient) -> tuple[float, float]:
    s = llm.stats
    if not s.calls:
        return 0.0, 0.0
    return s.parsed / s.calls, s.by_attempts.get(1, 0) / s.calls


def run_decisions(
    settings: Settings, *, data_dir: Path, start: datetime, end: datetime, log: Path
) -> dict[str, Any]:
    captured: list[Any] = []

    def factory(
        settings: Settings,
        *,
        ohlcv: OHLCVFrame,
        data_dir: Path,
        memory: bool,
        policy: str,
        store_path: Path | None,
        fills: Sequence[Fill] = (),
    ) -> tuple[DecisionMaker, Callable[[], None]]:
        manager, close = build_trader_manager(
            settings, ohlcv=ohlcv, data_dir=data_dir, memory=memory, policy=policy,
            store_path=store_path, fills=fills,
        )  # fmt: skip
        captured.append(manager)
        return manager, close

    offset = log.stat().st_size
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench-llm-") as out:
        result = run_backtest_command(
            settings, pair="BTC/USDT", timeframe="1h", start=start, end=end,
            data_dir=data_dir / "market" / "binance", out=Path(out), memory=True,
            policy="llm", maker_factory=factory,
        )  # fmt: skip
    wall = time.perf_counter() - started
    manager = captured[0]
    policy = manager.policy
    assert isinstance(policy, LLMPolicy)
    llm = policy.llm
    parsed, first = _stats_share(llm)
    n = len(result.decisions)
    breaches = 0
    for record in result.decisions:
        d = record.decision
        if d.action in ("buy", "sell"):
            vol = daily_vol(manager.features.at(record.as_of))
            risky = d.size * stop_distance(vol) > 0.02 + 1e-9
            breaches += int(risky or d.size > settings.agent.max_exposure + 1e-9)
    with log.open("r", encoding="utf-8", errors="replace") as fh:
        fh.seek(offset)
        text = fh.read()
    return {
        "decisions": n,
        "wall_s": round(wall, 1),
        "decisions_per_min": round(n / wall * 60, 2),
        "llm_s_per_decision": round(llm.stats.latency_ms / max(llm.stats.calls, 1) / 1000, 2),
        "prompt_tokens": round(llm.stats.prompt_tokens / max(n, 1), 1),
        "completion_tokens": round(llm.stats.completion_tokens / max(n, 1), 1),
        "cached_prompt_share": _round(cache_share(text, llm.stats.prompt_tokens)),
        "parsed_share": round(parsed, 4),
        "parsed_first_try_share": round(first, 4),
        "llm_answered_share": _round(result.metrics.llm_answered_share),
        "first_error": result.metrics.llm_first_error,
        "constraint_cuts": result.metrics.constraint_violations,
        "breaches": breaches,
    }


def run_persona(llm_settings: LLMSettings, settings: Settings) -> dict[str, Any]:
    llm = build_llm(llm_settings)
    assert llm is not None
    with tempfile.TemporaryDirectory(prefix="bench-llm-persona-") as tmp:
        # the configured store, in a run directory of its own (what --store-path makes)
        store = open_store(settings.with_store_dir(Path(tmp)).store, HashingEmbedder())
        try:
            persona = PersonaManager(store, llm=llm)
            started = time.perf_counter()
            for i, note in enumerate(NOTES):
                persona.update_from_text(
                    "bench-trader", note, as_of=datetime(2024, 10, 1, i, tzinfo=UTC)
                )
            wall = time.perf_counter() - started
        finally:
            store.close()
    parsed, first = _stats_share(llm)
    return {
        "updates": len(NOTES),
        "parsed_share": round(parsed, 4),
        "parsed_first_try_share": round(first, 4),
        "seconds_per_update": round(wall / len(NOTES), 1),
    }


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 4)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--modes", default="json_object,prompt,json_schema")
    parser.add_argument("--start", default="2022-05-09")
    parser.add_argument("--end", default="2022-05-09T12:00")
    parser.add_argument("--data-dir", type=Path, default=None)
    parser.add_argument("--json", action="store_true", help="Only the JSON line on stdout.")
    args = parser.parse_args()
    settings = load_settings()
    data_dir = args.data_dir or settings.data.data_dir
    start = datetime.fromisoformat(args.start).replace(tzinfo=UTC)
    end = datetime.fromisoformat(args.end).replace(tzinfo=UTC)
    modes = [cast(StructuredMode, m.strip()) for m in args.modes.split(",")]
    report: dict[str, Any] = {"window": [start.isoformat(), end.isoformat()], "modes": {}}
    with tempfile.TemporaryDirectory(prefix="bench-llm-server-") as tmp:
        log = Path(tmp) / "server.log"
        with LocalServer(settings.llm.local, log_path=log, port=0) as server:
            report["model"] = server.model
            for mode in modes:
                llm_settings = settings.llm.model_copy(
                    update={
                        "base_url": server.base_url,
                        "model": server.model,
                        "structured_output": mode,
                    }
                )
                cfg = settings.model_copy(update={"llm": llm_settings})
                row = run_decisions(cfg, data_dir=data_dir, start=start, end=end, log=log)
                row["persona"] = run_persona(llm_settings, settings)
                report["modes"][mode] = row
                if not args.json:
                    print(mode, json.dumps(row))
    print(json.dumps(report))


if __name__ == "__main__":
    from backend.entry import run_script

    run_script("bench_llm", main)

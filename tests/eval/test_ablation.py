"""The memory ablation: walk-forward windows, chaining, the four modes on a tiny real
window (what each retrieves really differs), the ``memory_tiers`` setting and the CLI."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import subprocess
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from backend.backtest.metrics import bars_per_year
from backend.cli import app
from backend.config import load_settings
from backend.data import OHLCVFrame, load_ohlcv
from backend.embeddings import CachedEmbedder, MiniLMEmbedder
from backend.errors import ConfigError
from backend.eval.ablation import MODES, RunOutput, chain, run_window, walk_forward_windows
from tests.sentinel_cli import sentinel

SENTINEL = sentinel()


def utc(year: int, month: int, day: int) -> datetime:
    return datetime(year, month, day, tzinfo=UTC)


def test_walk_forward_windows_are_contiguous_and_cut_at_the_end() -> None:
    assert walk_forward_windows(utc(2021, 1, 1), utc(2022, 2, 15), months=6) == [
        (utc(2021, 1, 1), utc(2021, 7, 1)),
        (utc(2021, 7, 1), utc(2022, 1, 1)),
        (utc(2022, 1, 1), utc(2022, 2, 15)),
    ]
    with pytest.raises(ValueError):
        walk_forward_windows(utc(2021, 1, 1), utc(2021, 1, 1), months=6)
    with pytest.raises(ValueError):
        walk_forward_windows(utc(2021, 1, 1), utc(2022, 1, 1), months=0)


def test_chain_compounds_windows_by_hand() -> None:
    first = pd.Series([100.0, 110.0])
    second = pd.Series([100.0, 90.0, 99.0])
    total, sharpe, mdd = chain([first, second], initial=100.0, timeframe="1d")
    assert total == pytest.approx(1.1 * 0.99 - 1)
    assert mdd == pytest.approx(0.99 / 1.1 - 1)  # the chained path 1, 1.1, 1.1, 0.99, 1.089
    r = np.array([0.1, -0.1, 0.1])
    assert sharpe == pytest.approx(r.mean() / r.std(ddof=1) * math.sqrt(bars_per_year("1d")))
    assert chain([], initial=100.0, timeframe="1d") == (0.0, 0.0, 0.0)


def test_memory_tiers_setting_is_validated() -> None:
    assert load_settings().agent.memory_tiers == ("persona", "working", "episodic")
    for bad in ([], ["bogus"]):
        with pytest.raises(ConfigError, match="memory_tiers"):
            load_settings(agent={"memory_tiers": bad})


@pytest.fixture(scope="module")
def btc_4h(shared_data: Path) -> OHLCVFrame:
    """BTC/USDT 4h from March 2022 (30+ days of warm-up) to mid-May 2022 (LUNA crash)."""
    full = load_ohlcv(shared_data / "market" / "binance", "BTC/USDT", "4h")
    return dataclasses.replace(full, frame=full.frame.loc["2022-03-01":"2022-05-15"])


@pytest.fixture(scope="module")
def runs(
    btc_4h: OHLCVFrame,
    shared_data: Path,
    minilm: MiniLMEmbedder,
    tmp_path_factory: pytest.TempPathFactory,
) -> dict[str, RunOutput]:
    embedder = CachedEmbedder(minilm, tmp_path_factory.mktemp("ablation-embeddings"))
    return {
        mode: run_window(
            load_settings(),
            ohlcv=btc_4h,
            data_root=shared_data,
            mode=mode,
            start=utc(2022, 4, 20),
            end=utc(2022, 5, 12),
            embedder=embedder,
        )
        for mode in MODES
    }


@pytest.mark.slow
def test_the_modes_retrieve_what_they_say(runs: dict[str, RunOutput]) -> None:
    off, persona, working, full = (runs[m].run for m in MODES)
    bars = off.metrics.n_decisions
    assert bars == 132 and all(r.run.metrics.n_decisions == bars for r in runs.values())
    # memory off: no context at all
    assert off.prompt_tokens_mean == 0 and off.persona_in_context_share == 0
    assert off.episodes_in_context_mean == 0 and off.working_in_context_mean == 0
    # persona only: the profile, no market window, no episodes
    assert persona.persona_in_context_share == 1 and persona.prompt_tokens_mean > 0
    assert persona.episodes_in_context_mean == 0 and persona.working_in_context_mean == 0
    assert not runs["persona"].episode_ids
    # persona + working: the market window too, still no episodes
    assert working.persona_in_context_share == 1 and working.working_in_context_mean > 1
    assert working.episodes_in_context_mean == 0
    assert working.prompt_tokens_mean > persona.prompt_tokens_mean
    # all three tiers: episodes recalled
    assert full.episodes_in_context_mean > 0 and full.working_in_context_mean > 1
    assert runs["all"].episode_ids


@pytest.mark.slow
def test_violations_are_counted_where_the_policy_does_not_see_the_persona(
    runs: dict[str, RunOutput],
) -> None:
    off = runs["off"].run
    # without memory the policy sizes for target vol alone; the 2%-risk rule cuts it after
    assert off.violations > 0
    for out in runs.values():
        assert out.run.violations == out.run.metrics.constraint_violations
        assert out.run.metrics.buy_and_hold_return == off.metrics.buy_and_hold_return


def test_cli_writes_the_summary_with_buy_and_hold(shared_data: Path, tmp_path: Path) -> None:
    out = tmp_path / "ablation.json"
    args = ["eval", "ablation", "--data-dir", str(shared_data / "market" / "binance"),
            "--pairs", "BTC/USDT,ETH/USDT", "--timeframes", "4h", "--start", "2022-05-01",
            "--end", "2022-06-15", "--window-months", "1", "--modes", "off",
            "--out", str(out)]  # fmt: skip
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    data = json.loads(out.read_text())
    assert data["complete"] is True and data["modes"] == ["off"]
    assert len(data["windows"]) == 2 and len(data["runs"]) == 4
    summary = data["summary"]["BTC/USDT"]["4h"]
    assert set(summary) == {"off", "buy_and_hold"}
    assert summary["off"]["windows"] == 2 and summary["buy_and_hold"]["n_trades"] == 0
    starts = [datetime.fromisoformat(r["window_start"]) for r in data["runs"]]
    assert starts == [utc(2022, 5, 1), utc(2022, 6, 1)] * 2


def test_cli_bad_mode_is_one_line_and_exit_2(tmp_path: Path) -> None:
    out = tmp_path / "never.json"
    args = ["eval", "ablation", "--pairs", "BTC/USDT", "--timeframes", "4h",
            "--modes", "off,bogus", "--out", str(out)]  # fmt: skip
    result = subprocess.run(
        [str(SENTINEL), *args],
        capture_output=True,
        text=True,
        timeout=300,
        env=dict(os.environ),
    )
    assert result.returncode == 2 and not out.exists()
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "bogus" in lines[0]

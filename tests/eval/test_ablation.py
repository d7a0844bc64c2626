"""The memory ablation: walk-forward windows, chaining, the paired bootstrap, the four
modes on a tiny real window (what each retrieves really differs), the ``memory_tiers``
setting and the CLI (a real trader's fills, persona alignment, the HTML page)."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import shutil
import subprocess
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from backend.backtest.metrics import bars_per_year
from backend.backtest.models import BacktestMetrics
from backend.cli import app
from backend.config import load_settings
from backend.data import OHLCVFrame, find_ohlcv_file, load_ohlcv, read_ohlcv_file
from backend.embeddings import CachedEmbedder, MiniLMEmbedder
from backend.errors import ConfigError, DataError
from backend.eval.ablation import (
    MODES,
    RunOutput,
    chain,
    fills_span_warnings,
    load_trader_fills,
    run_window,
    walk_forward_windows,
)
from backend.eval.ablation_summary import chain_curves, compare_modes, paired_bootstrap
from backend.eval.models import WindowRun
from tests.llm.chat_server import start_chat_server
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
    # from a month's end, each window ends at a month's end (a reviewer's windows had
    # drifted to the 28th after February)
    month_ends = walk_forward_windows(utc(2022, 1, 31), utc(2022, 7, 1), months=1)
    assert [b.day for _, b in month_ends] == [28, 31, 30, 31, 30, 1]
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
    # the chained path the summary and the HTML page use
    second.index = pd.RangeIndex(2, 5)
    chained = chain_curves([first, second], initial=100.0)
    assert chained.path.tolist() == pytest.approx([1.0, 1.1, 1.1, 0.99, 1.089])
    assert chained.path.index.tolist() == [0, 1, 2, 3, 4]
    assert chained.window_capital == pytest.approx((1.0, 1.1))
    assert chained.total_return == pytest.approx(total)


def test_a_window_that_ruins_the_account_ends_the_chain() -> None:
    """A reviewer's finding: a window ending at equity -50 (a 10x short ruined) made the
    next window's +10% read as a loss (-0.5 -> -0.525 -> -0.55, total -155%)."""
    ruined = pd.Series([100.0, 40.0, -50.0], index=pd.RangeIndex(0, 3))
    later = pd.Series([100.0, 105.0, 110.0], index=pd.RangeIndex(3, 6))
    chained = chain_curves([ruined, later], initial=100.0)
    assert chained.path.tolist() == pytest.approx([1.0, 0.4, -0.5, -0.5, -0.5, -0.5])
    assert chained.total_return == pytest.approx(-1.5)
    assert chained.returns.tolist() == pytest.approx([-0.6, -2.25])  # the ruin's own bars
    assert chained.window_capital == pytest.approx((1.0, -0.5))


def test_paired_bootstrap_is_seeded_and_brackets_the_mean() -> None:
    diffs = [0.5, -0.2, 1.0, 0.1, 0.3]
    lo, hi = paired_bootstrap(diffs)
    assert lo < float(np.mean(diffs)) < hi and min(diffs) <= lo and hi <= max(diffs)
    assert paired_bootstrap(diffs) == (lo, hi)  # fixed seed
    assert paired_bootstrap([0.4]) == pytest.approx((0.4, 0.4))  # one window: no spread
    assert paired_bootstrap([]) == (0.0, 0.0)


def test_the_comparison_gives_an_interval_only_over_enough_windows() -> None:
    def outputs(mode: str, sharpes: list[float]) -> list[RunOutput]:
        return [
            RunOutput(
                run=WindowRun.model_construct(
                    pair="BTC/USDT",
                    timeframe="4h",
                    mode=mode,
                    window_start=utc(2022, 1 + i, 1),
                    metrics=BacktestMetrics.model_construct(sharpe=value),
                ),
                equity=pd.Series(dtype=float),
                buy_and_hold=pd.Series(dtype=float),
                initial_equity=1.0,
            )
            for i, value in enumerate(sharpes)
        ]

    summary = {"BTC/USDT": {"4h": {"off": {"sharpe": 0.5, "max_drawdown": -0.2},
                                   "all": {"sharpe": 0.3, "max_drawdown": -0.1}}}}  # fmt: skip
    four = outputs("off", [0.1, 0.2, 0.3, 0.4]) + outputs("all", [1.0, -0.5, 0.9, 0.2])
    paired = compare_modes(four, summary)["BTC/USDT"]["4h"]["all_vs_off"]
    assert paired["windows"] == 4 and paired["sharpe_diff"] == pytest.approx(0.15)
    lo, hi = paired["ci95"]
    assert -0.7 < lo < paired["sharpe_diff"] < hi < 0.9  # inside the differences' range
    # the chained difference is the summary's, here of the other sign
    assert paired["sharpe_diff_chained"] == pytest.approx(-0.2)
    assert paired["max_drawdown_ratio"] == pytest.approx(0.5)
    three = outputs("off", [0.1, 0.2, 0.3]) + outputs("all", [1.0, -0.5, 0.9])
    assert compare_modes(three, summary)["BTC/USDT"]["4h"]["all_vs_off"]["ci95"] is None


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


def test_an_interrupted_ablation_leaves_the_previous_out_file_as_it_was(
    shared_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Progress goes to ``<out stem>.partial.json``; ``--out`` is replaced only when the
    last run is done (a reviewer's Ctrl-C had replaced a finished result with one run)."""
    import backend.eval.ablation as ablation  # the command imports it when it runs

    real = ablation.run_ablation

    def interrupted(*args: Any, on_run: Any, **kwargs: Any) -> Any:
        def then_ctrl_c(run: WindowRun, runs: list[WindowRun]) -> None:
            on_run(run, runs)
            raise KeyboardInterrupt

        return real(*args, on_run=then_ctrl_c, **kwargs)

    monkeypatch.setattr(ablation, "run_ablation", interrupted)
    out = tmp_path / "ablation.json"
    out.write_text('{"complete": true, "earlier": 1}')
    args = ["eval", "ablation", "--data-dir", str(shared_data / "market" / "binance"),
            "--pairs", "BTC/USDT", "--timeframes", "4h", "--start", "2022-05-01",
            "--end", "2022-06-01", "--window-months", "1", "--modes", "off",
            "--out", str(out)]  # fmt: skip
    result = CliRunner().invoke(app, args)
    assert result.exit_code != 0
    assert json.loads(out.read_text()) == {"complete": True, "earlier": 1}
    progress = json.loads((tmp_path / "ablation.partial.json").read_text())
    assert progress["complete"] is False and len(progress["runs"]) == 1


def test_cli_writes_the_summary_with_buy_and_hold(shared_data: Path, tmp_path: Path) -> None:
    out = tmp_path / "ablation.json"
    args = ["eval", "ablation", "--data-dir", str(shared_data / "market" / "binance"),
            "--pairs", "BTC/USDT,ETH/USDT", "--timeframes", "4h", "--start", "2022-05-01",
            "--end", "2022-06-15", "--window-months", "1", "--modes", "off,off",
            "--out", str(out)]  # fmt: skip
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    data = json.loads(out.read_text())
    assert data["complete"] is True and data["modes"] == ["off"]  # a repeated mode runs once
    assert not (tmp_path / "ablation.partial.json").exists()  # progress, removed when done
    assert data["policy"] == "rule" and data["warnings"] == []  # nothing failed
    assert data["news"] == {
        "headlines": str(shared_data / "news" / "crypto_headlines.csv"),
        "fear_greed": str(shared_data / "trades" / "fear_greed_index.csv"),
    }
    assert len(data["windows"]) == 2 and len(data["runs"]) == 4
    summary = data["summary"]["BTC/USDT"]["4h"]
    assert set(summary) == {"off", "buy_and_hold"}
    assert summary["off"]["windows"] == 2 and summary["buy_and_hold"]["n_trades"] == 0
    starts = [datetime.fromisoformat(r["window_start"]) for r in data["runs"]]
    assert starts == [utc(2022, 5, 1), utc(2022, 6, 1)] * 2
    # the default persona (the seed note): only the constraints component is defined
    for run in data["runs"]:
        assert set(run["persona_alignment_parts"]) == {"constraints"}
        assert 0 <= run["persona_alignment"] <= 1 and run["turnover"] >= 0
    for entry in summary.values():
        assert {"sortino", "fees_paid", "turnover", "persona_alignment"} <= set(entry)
    # buy-and-hold's buy (exposure 1) is above the seed note's 2%-risk cap: one violation
    decisions = sum(r["metrics"]["n_decisions"] for r in data["runs"] if r["pair"] == "BTC/USDT")
    assert summary["buy_and_hold"]["persona_alignment"] == pytest.approx(
        1 - 2 / decisions, abs=1e-3
    )
    assert summary["buy_and_hold"]["violations"] == 2  # counted, as the agent's are
    for run in data["runs"]:  # and per window, beside each run
        assert run["buy_and_hold_violations"] == 1
        assert 0 < run["buy_and_hold_persona_alignment"] < 1
    assert data["comparison"] == {} and data["trader"] is None  # no memory mode ran
    assert out.with_suffix(".html").read_text().count("<img") == 2  # one per pair/timeframe
    # the chained numbers again, from the curves CSV alone
    curves = pd.read_csv(out.with_suffix(".curves.csv"))
    assert set(curves["mode"]) == {"off", "buy_and_hold"} and set(curves["timeframe"]) == {"4h"}
    for (pair, mode), curve in curves.groupby(["pair", "mode"]):
        entry = data["summary"][pair]["4h"][mode]
        equity = curve["equity"].to_numpy()
        initial = load_settings().backtest.initial_equity
        assert equity[-1] / initial - 1 == pytest.approx(entry["total_return"], abs=1e-6)
        peak = np.maximum.accumulate(np.concatenate([[initial], equity]))[1:]
        assert (equity / peak - 1).min() == pytest.approx(entry["max_drawdown"], abs=1e-6)
        seam = curve["window_start"].ne(curve["window_start"].shift()).to_numpy()
        rets = (equity[1:] / equity[:-1] - 1)[~seam[1:]]  # no return across a window seam
        sharpe = rets.mean() / rets.std(ddof=1) * math.sqrt(bars_per_year("4h"))
        assert sharpe == pytest.approx(entry["sharpe"], abs=1e-3)
        assert len(curve) == sum(r["metrics"]["n_decisions"] for r in data["runs"]
                                 if r["pair"] == pair)  # fmt: skip


def _btc_index(shared_data: Path, timeframe: str) -> pd.DatetimeIndex:
    market = shared_data / "market" / "binance"
    path = find_ohlcv_file(market, "BTC/USDT", timeframe)
    return read_ohlcv_file(path, pair="BTC/USDT", timeframe=timeframe).frame.index


def _btc_args(
    shared_data: Path, timeframe: str, start: pd.Timestamp, *, months: int, window: int,
    out: Path,
) -> list[str]:  # fmt: skip
    """``eval ablation`` of BTC/USDT, mode off, over ``months`` from ``start``."""
    return ["eval", "ablation", "--data-dir", str(shared_data / "market" / "binance"),
            "--pairs", "BTC/USDT", "--timeframes", timeframe, "--start", f"{start:%Y-%m-%d}",
            "--end", f"{start + pd.DateOffset(months=months):%Y-%m-%d}",
            "--window-months", str(window), "--modes", "off", "--out", str(out)]  # fmt: skip


def test_cli_cuts_the_last_window_at_the_data_and_refuses_a_pair_without_candles(
    shared_data: Path, tmp_path: Path
) -> None:
    last = _btc_index(shared_data, "4h")[-1]
    start = (last - pd.Timedelta(days=10)).normalize()
    out = tmp_path / "ablation.json"
    args = _btc_args(shared_data, "4h", start, months=2, window=1, out=out)
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    data = json.loads(out.read_text())
    (run,) = data["runs"]  # the second window has no candles: skipped
    assert datetime.fromisoformat(run["window_end"]) == last + pd.Timedelta(hours=4)
    assert [s["window_start"][:10] for s in data["skipped"]] == [
        f"{start + pd.DateOffset(months=1):%Y-%m-%d}"
    ]
    # both said, in the JSON's warnings and on stdout: the chained numbers cover ten days
    assert [w["window_start"][:10] for w in data["cut"]] == [f"{start:%Y-%m-%d}"]
    skipped, cut = [w for w in data["warnings"] if "BTC/USDT 4h" in w]
    assert cut.endswith(f"..{run['window_end'][:16]}") and "run only where the data is" in cut
    assert "not run, no candles in the window" in skipped
    assert f"WARNING: {cut}" in result.output and f"WARNING: {skipped}" in result.output
    args[args.index("--start") + 1], args[args.index("--end") + 1] = "2030-01-01", "2030-03-01"
    result = CliRunner().invoke(app, args)
    assert result.exit_code != 0 and isinstance(result.exception, DataError)
    assert "no candles of BTC/USDT 4h in 2030-01-01..2030-03-01" in str(result.exception)


def test_cli_says_a_window_that_begins_before_the_data(shared_data: Path, tmp_path: Path) -> None:
    first = _btc_index(shared_data, "1d")[0]
    start = (first - pd.DateOffset(months=2)).normalize()
    out = tmp_path / "ablation.json"
    result = CliRunner().invoke(
        app, _btc_args(shared_data, "1d", start, months=6, window=6, out=out)
    )
    assert result.exit_code == 0, result.output
    data = json.loads(out.read_text())
    assert [w["data_start"][:10] for w in data["cut"]] == [f"{first:%Y-%m-%d}"]
    (said,) = [w for w in data["warnings"] if "run only where the data is" in w]
    assert (
        said.startswith(f"BTC/USDT 1d {start:%Y-%m-%d}..") and f"WARNING: {said}" in result.output
    )


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


def test_cli_writes_no_complete_json_without_its_page(shared_data: Path, tmp_path: Path) -> None:
    """A reviewer's ``--html /proc/nope/a.html`` passed the checks as root (``os.access``
    says yes), failed after the run, and left a JSON that said ``complete``."""
    market = str(shared_data / "market" / "binance")
    out = tmp_path / "a.json"
    args = ["eval", "ablation", "--data-dir", market, "--pairs", "ETH/USDT",
            "--timeframes", "1d", "--start", "2022-01-01", "--end", "2022-02-01",
            "--window-months", "1", "--modes", "off", "--out", str(out),
            "--html", "/proc/nope/a.html"]  # fmt: skip
    result = CliRunner().invoke(app, args)
    assert result.exit_code != 0
    assert not out.exists() or not json.loads(out.read_text()).get("complete")


def test_cli_reads_any_spelling_of_a_pair_and_checks_its_outputs_first(
    shared_data: Path, tmp_path: Path
) -> None:
    market = str(shared_data / "market" / "binance")
    out = tmp_path / "ablation.json"
    args = ["eval", "ablation", "--data-dir", market, "--pairs", "btc_usdt,BTC/USDT",
            "--timeframes", "1d", "--start", "2022-05-01", "--end", "2022-06-01",
            "--window-months", "1", "--modes", "off", "--out", str(out)]  # fmt: skip
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    data = json.loads(out.read_text())
    assert list(data["summary"]) == ["BTC/USDT"] and len(data["runs"]) == 1  # one pair, once
    (tmp_path / "a_file").write_text("x")
    copy = tmp_path / "candles"
    copy.mkdir()
    shutil.copyfile(f"{market}/BTC_USDT-1d.csv.gz", copy / "BTC_USDT-1d.csv.gz")
    (tmp_path / "trades").mkdir()  # a copy of the news inputs too
    shutil.copyfile(shared_data / "trades" / "fear_greed_index.csv",
                    tmp_path / "trades" / "fear_greed_index.csv")  # fmt: skip
    for where, problem in [
        (["--out", str(tmp_path / "a_file" / "x.json")], "a_file is not a directory"),
        (["--out", str(tmp_path)], "would replace a directory"),
        (["--html", str(tmp_path / "a_file" / "x.html")], "a_file is not a directory"),
        (["--out", str(tmp_path / "page.html")], "the HTML page would overwrite it"),
        (["--pairs", "BTC"], "--pairs: 'BTC' is not a pair"),
        # the run's own candles: an output had replaced them (or made a second file); a
        # copy of them, so a regression cannot write over the shared data
        (["--data-dir", str(copy), "--out", str(copy / "BTC_USDT-1d.csv.gz")],
         "this run reads its candles, fills or news there"),
        (["--data-dir", str(copy), "--html", str(copy / "BTC_USDT-1d.json")],
         "this run reads its candles, fills or news there"),
        (["--data-dir", str(copy), "--data-root", str(tmp_path), "--out",
          str(tmp_path / "trades" / "fear_greed_index.csv")],
         "this run reads its candles, fills or news there"),
    ]:  # fmt: skip
        bad = [*args, *where]  # the later of a repeated option wins
        result = CliRunner().invoke(app, bad)
        assert isinstance(result.exception, (ConfigError, DataError)), result.output
        assert problem in str(result.exception)
        assert not (tmp_path / "page.html").exists()
    assert sorted(p.name for p in copy.iterdir()) == ["BTC_USDT-1d.csv.gz"]
    assert (tmp_path / "trades" / "fear_greed_index.csv").read_bytes() == (
        shared_data / "trades" / "fear_greed_index.csv"
    ).read_bytes()


def test_a_chat_model_that_never_answers_is_loud_in_the_summary_and_the_page(
    shared_data: Path, tmp_path: Path
) -> None:
    dead = start_chat_server()
    dead.reject_formats = {"json_schema", "json_object", None}  # HTTP 500 to everything
    out = tmp_path / "ablation.json"
    args = ["eval", "ablation", "--data-dir", str(shared_data / "market" / "binance"),
            "--pairs", "BTC/USDT", "--timeframes", "4h", "--start", "2022-05-01",
            "--end", "2022-05-03", "--modes", "off", "--out", str(out)]  # fmt: skip
    env = {
        "SENTINEL_AGENT__POLICY": "llm",
        "SENTINEL_LLM__BASE_URL": dead.base_url,
        "SENTINEL_LLM__MODEL": "m",
        "SENTINEL_LLM__MAX_RETRIES": "0",
    }
    try:
        result = CliRunner().invoke(app, args, env=env)
    finally:
        dead.shutdown()
        dead.server_close()
    assert result.exit_code == 3, result.output  # every file written, and said: no ablation
    assert result.output.splitlines()[-1].startswith(
        "FAILED: 1 of 1 runs (first: BTC/USDT 4h 2022-05-01 off: the LLM answered 0 of 12"
    )
    data = json.loads(out.read_text())
    assert data["complete"] is True
    off = data["summary"]["BTC/USDT"]["4h"]["off"]
    assert off["llm_decisions"] == 12 and off["llm_answered_share"] == 0.0
    assert off["total_return"] == 0.0  # flat, and the summary says why
    (said,) = data["warnings"]
    assert "the LLM answered 0 of 12 decisions" in said
    page = out.with_suffix(".html").read_text()
    assert page.count('class="warn"') == 1 and "the LLM answered 0 of 12" in page
    assert data["summary"]["BTC/USDT"]["4h"]["buy_and_hold"]["llm_answered_share"] is None


def test_the_page_never_writes_a_share_below_the_floor_as_the_floor() -> None:
    """1,899 of 2,000 answered against a 95% floor had read "95.0%" in the page's table."""
    from backend.eval.ablation_report import _summary_table

    row = _summary_table({"all": {"llm_answered_share": 0.9495}}, min_share=0.95)
    assert "<td>94.95%</td>" in row and "95.0%" not in row
    assert "<td>100%</td>" in _summary_table({"all": {"llm_answered_share": 1.0}}, min_share=0.95)


TRADER_ETH_SOL = "0x083384f897ee0f19899168e3b1bec365f52a9012"


@pytest.mark.data
def test_windows_the_fills_do_not_cover_are_said(shared_data: Path) -> None:
    """The ETH/SOL trader's fills run 2024-11-11 .. 2025-02-03: monthly windows from
    October 2024 to April 2025 are said where the persona is the seed note alone (all of
    October, the start of November) or stays as of the last fill (March); the months
    the fills cover, and February (the last fill inside it), are not."""
    trader, fills = load_trader_fills(shared_data / "trades" / "hyperliquid_fills.csv", "0x083384")
    windows = walk_forward_windows(
        datetime(2024, 10, 1, tzinfo=UTC), datetime(2025, 4, 1, tzinfo=UTC), months=1
    )
    said = fills_span_warnings(trader, fills, windows)
    assert [line.split(":")[0] for line in said] == [
        "window 2024-10-01", "window 2024-11-01", "window 2025-03-01",
    ]  # fmt: skip
    assert "seed note alone" in said[0] and "2024-11-11..2025-02-03" in said[0]
    assert "10 days into it" in said[1]
    assert "after the last fill" in said[2] and "(2025-02-03)" in said[2]
    assert fills_span_warnings(trader, [], windows) == [
        f"no fill of {trader}: every window's persona is the seed note alone"
    ]


@pytest.mark.slow
def test_cli_with_a_real_trader_scores_persona_alignment(shared_data: Path, tmp_path: Path) -> None:
    """ETH/USDT 4h, Oct and Nov 2024, off and all, as the ETH/SOL trader (fills from
    2024-11-11): October runs before the first fill (the persona is the note alone)."""
    out, page = tmp_path / "ablation.json", tmp_path / "pages" / "curves.html"
    args = ["eval", "ablation", "--data-dir", str(shared_data / "market" / "binance"),
            "--pairs", "ETH/USDT", "--timeframes", "4h", "--start", "2024-10-01",
            "--end", "2024-12-01", "--window-months", "1", "--modes", "off,all",
            "--trader", "0x083384F8", "--fills", str(shared_data / "trades" /
            "hyperliquid_fills.csv"), "--out", str(out), "--html", str(page)]  # fmt: skip
    # the hashing embedder: MiniLM embedding the memories of these 732 decisions, cold, was
    # most of this test's time (13 s -> 5 s alone); the other CLI tests here run the default
    env = {"SENTINEL_EMBEDDING__PROVIDER": "hashing"}
    result = CliRunner().invoke(app, args, env=env)
    assert result.exit_code == 0, result.output
    data = json.loads(out.read_text())
    assert data["complete"] is True and data["trader"] == TRADER_ETH_SOL
    assert data["modes"] == ["off", "all"] and len(data["runs"]) == 4
    assert {r["mode"] for r in data["runs"]} == {"off", "all"}
    assert "buy_and_hold is not the candles' first-to-last-close return" in data["chaining"]
    # October ends before the first fill, November holds it: both said, and printed
    before, inside, news = data["warnings"]
    assert news.startswith("headlines (news shocks): none in the run's 2024-10-01..2024-12-01")
    assert before.startswith("window 2024-10-01: no fill of 0x083384") and before in result.output
    assert inside.startswith("window 2024-11-01: the first fill of 0x083384")
    assert "on 2024-11-11, 10 days into it" in inside and inside in result.output
    for run in data["runs"]:
        assert 0 <= run["persona_alignment"] <= 1
        assert all(0 <= v <= 1 for v in run["persona_alignment_parts"].values())
        october = run["window_start"].startswith("2024-10")
        if october:  # no fill known by the window end: the reference is the seed note's
            assert set(run["persona_alignment_parts"]) == {"constraints"}
        else:  # ETH is the trader's main asset; an aggressive risk tolerance
            assert run["persona_alignment_parts"]["assets"] == 1.0
            assert {"constraints", "assets", "risk"} <= set(run["persona_alignment_parts"])
    summary = data["summary"]["ETH/USDT"]["4h"]
    assert set(summary) == {"off", "all", "buy_and_hold"}
    for entry in summary.values():
        assert 0 <= entry["persona_alignment"] <= 1 and entry["max_drawdown"] <= 0
    # the trader is mostly short: buy-and-hold's long share is far from theirs
    assert summary["buy_and_hold"]["persona_alignment_parts"]["long_share"] < 0.2
    paired = data["comparison"]["ETH/USDT"]["4h"]["all_vs_off"]
    assert paired["windows"] == 2 and paired["ci95"] is None  # too few windows for one
    chained = summary["all"]["sharpe"] - summary["off"]["sharpe"]
    assert paired["sharpe_diff_chained"] == pytest.approx(chained, abs=1e-4)
    html = page.read_text()
    assert html.count("<img") == 1 and "persona alignment" in html
    assert "http://" not in html and "https://" not in html and "<script" not in html


def test_a_curve_drawn_under_another_is_named() -> None:
    """A reviewer saw no ``off`` curve on a page where it equalled ``persona``'s."""
    from backend.eval.ablation_report import _hidden_curves

    index = pd.date_range("2022-01-01", periods=3, freq="4h", tz="UTC")
    same, other = pd.Series([1.0, 2.0, 3.0], index=index), pd.Series([1.0, 2.5, 3.0], index=index)
    line = _hidden_curves({"off": same, "persona": same.copy(), "all": other})
    assert "persona is identical to off" in line and "all" not in line
    assert _hidden_curves({"off": same, "all": other}) == ""

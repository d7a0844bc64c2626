"""``sentinel eval ablation`` (registered by :mod:`backend.cli.eval`, whose docstring
describes the command's files and checks): the memory ablation over walk-forward windows,
:mod:`backend.eval.ablation`."""

from __future__ import annotations

import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, cast

import typer
from rich.console import Console
from rich.table import Table

from backend.cli._common import (
    DEPENDENCY_FAILED,
    check_data_root,
    data_root_for,
    news_inputs,
    news_warnings,
    parse_pair,
    parse_utc,
    settings,
    split_values,
    write_json,
)
from backend.errors import ConfigError
from backend.files import check_writable

__all__ = ["ablation"]


def ablation(
    pairs: Annotated[str, typer.Option(help="Comma-separated ccxt symbols.")],
    timeframes: Annotated[str, typer.Option(help="Comma-separated timeframes, e.g. 1h,4h.")],
    out: Annotated[Path, typer.Option(help="JSON file to write.")],
    data_dir: Annotated[
        Path | None,
        typer.Option(help="Directory of BASE_QUOTE-TIMEFRAME files (default: data.market_dir)."),
    ] = None,
    start: Annotated[str, typer.Option(help="First window start (UTC).")] = "2021-01-01",
    end: Annotated[str, typer.Option(help="Last window end (UTC, exclusive).")] = "2026-01-01",
    window_months: Annotated[int, typer.Option(min=1, max=120, help="Window length.")] = 6,
    modes: Annotated[
        str, typer.Option(help="Comma-separated: off, persona, persona_working, all.")
    ] = "off,persona,persona_working,all",
    data_root: Annotated[
        Path | None, typer.Option(help="Data root with news/ and trades/ (default: derived).")
    ] = None,
    trader: Annotated[
        str | None,
        typer.Option(help="Trader id (or a unique prefix) in --fills: the agent's persona."),
    ] = None,
    fills: Annotated[
        Path | None, typer.Option(help="Hyperliquid fills CSV of --trader (both or neither).")
    ] = None,
    html: Annotated[
        Path | None,
        typer.Option(help="HTML page of the chained equity curves (default: --out as .html)."),
    ] = None,
) -> None:
    """Backtest walk-forward windows with each memory mode, beside buy-and-hold.

    The modes are memory off, persona only, persona + working, and all three
    tiers. With --trader and --fills the persona is that trader's as known at
    each bar, and persona alignment is scored against the trader's profile as
    of each window's end."""
    from backend.backtest.metrics import dependency_failure, run_warning
    from backend.data import OHLCV_FORMATS, find_ohlcv_file, ohlcv_filename, read_ohlcv_file
    from backend.embeddings import build_embedder
    from backend.eval.ablation import (
        MODES,
        fills_span_warnings,
        load_trader_fills,
        run_ablation,
        walk_forward_windows,
    )
    from backend.eval.ablation_report import write_ablation_curves, write_ablation_html
    from backend.eval.models import AblationMode, WindowRun
    from backend.memory import coverage_notes, load_news

    cfg = settings()
    chosen = list(dict.fromkeys(split_values(modes, name="modes")))  # each mode once
    unknown = [m for m in chosen if m not in MODES]
    if unknown:
        raise ConfigError(f"--modes: unknown {', '.join(unknown)} (expected {', '.join(MODES)})")
    if (trader is None) != (fills is None):
        raise ConfigError("--trader and --fills go together: give both or neither")
    first, last = parse_utc(start, name="start"), parse_utc(end, name="end")
    if first >= last:
        raise ConfigError(f"--start {start} must be before --end {end}")
    try:
        windows = walk_forward_windows(first, last, months=window_months)
    except (ValueError, OverflowError) as exc:  # pandas' times end in 2262; Python's in 9999
        raise ConfigError(f"--start {start} --end {end}: no windows there ({exc})") from None
    trader_id, trader_fills = (
        load_trader_fills(fills, trader, not_after=datetime.now(UTC))  # the CLI's clock
        if trader is not None and fills is not None
        else (None, [])
    )
    page = html if html is not None else out.with_suffix(".html")
    if page.resolve() == out.resolve():
        raise ConfigError(f"--out {out}: the HTML page would overwrite it; give --html elsewhere")
    check_data_root(data_root)
    check_writable(out, what="JSON file")  # before the first run, not after it
    check_writable(page, what="HTML page")
    curves = out.with_suffix(".curves.csv")
    if curves.resolve() in (out.resolve(), page.resolve()):
        raise ConfigError(f"--out {out}: its curves CSV {curves} would overwrite an output")
    check_writable(curves, what="curves CSV")
    progress = out.with_name(out.stem + ".partial.json")  # out is replaced only when done
    if progress.resolve() in (out.resolve(), page.resolve(), curves.resolve()):
        raise ConfigError(f"--out {out}: its progress file {progress} would overwrite an output")
    check_writable(progress, what="progress JSON file")
    candles = data_dir if data_dir is not None else cfg.data.market_dir
    symbols = dict.fromkeys(parse_pair(p, name="pairs") for p in split_values(pairs, name="pairs"))
    root = data_root if data_root is not None else data_root_for(candles, cfg)
    news = news_inputs(root, cfg)
    inputs = {  # an output there had replaced the run's candles (or made a second file)
        (Path(candles) / ohlcv_filename(pair, tf, fmt)).resolve()
        for pair in symbols
        for tf in split_values(timeframes, name="timeframes")
        for fmt in OHLCV_FORMATS
    } | {Path(p).resolve() for p in [fills, *news.values()] if p is not None}
    for label, path in (
        ("--out", out), ("--html", page), ("the curves CSV of --out", curves),
        ("the progress file of --out", progress),
    ):  # fmt: skip
        if path.resolve() in inputs:
            raise ConfigError(f"{label} {path}: this run reads its candles, fills or news there")
    frames = {
        (pair, tf): read_ohlcv_file(find_ohlcv_file(candles, pair, tf), pair=pair, timeframe=tf)
        for pair in symbols
        for tf in split_values(timeframes, name="timeframes")
    }
    embedder = build_embedder(cfg.embedding)  # its disk cache serves the repeated texts
    err = Console(stderr=True)
    header = {"command": " ".join(["sentinel", *sys.argv[1:]]), "complete": False, "news": news}

    def checkpoint(run: WindowRun, runs: list[WindowRun]) -> None:
        m = run.metrics
        err.print(
            f"{run.pair} {run.timeframe} {run.window_start:%Y-%m-%d} {run.mode}: "
            f"{m.total_return:+.2%} (buy and hold {m.buy_and_hold_return:+.2%}), "
            f"{m.n_trades} trades, {run.violations} violations, "
            f"alignment {run.persona_alignment:.2f}, {run.run_s:.0f} s"
        )
        write_json(progress, {**header, "runs": [r.model_dump(mode="json") for r in runs]})

    outcome = run_ablation(
        cfg,
        ohlcv=frames,
        data_root=root,
        windows=windows,
        modes=cast(list[AblationMode], chosen),
        embedder=embedder,
        on_run=checkpoint,
        trader_id=trader_id,
        fills=trader_fills,
    )
    result = outcome.to_dict()
    if fills is not None:
        result["fills_path"] = str(fills)
    result["policy"] = cfg.agent.policy
    result["warnings"] = warnings = (
        (fills_span_warnings(trader_id, trader_fills, windows) if trader_id is not None else [])
        + news_warnings(news, root)
        + coverage_notes(load_news(cfg.data, root), windows[0][0], windows[-1][1])
        + outcome.window_warnings()
        + [
            f"{r.pair} {r.timeframe} {r.window_start:%Y-%m-%d} {r.mode}: {said}"
            for r in (o.run for o in outcome.outputs)
            if (said := run_warning(r.metrics, min_share=cfg.llm.min_answered_share))
        ]
    )
    # the page and the curves first: a failed write of either (a reviewer's HTML path
    # the checks had passed as root) had left a JSON that said "complete" without them
    write_ablation_html(outcome, page, warnings=warnings, min_llm_share=cfg.llm.min_answered_share)
    write_ablation_curves(outcome, curves)
    write_json(out, {**header, "complete": True, **result})
    progress.unlink(missing_ok=True)
    table = Table(
        "pair", "tf", "mode", "return", "Sharpe", "Sortino", "max DD", "trades", "violations",
        "alignment", title=f"written to {out}, {page} and {curves}",
    )  # fmt: skip
    for pair, by_tf in result["summary"].items():
        for tf, by_mode in by_tf.items():
            for mode, s in by_mode.items():
                table.add_row(
                    pair,
                    tf,
                    mode,
                    f"{s['total_return']:+.2%}",
                    f"{s['sharpe']:.2f}",
                    f"{s['sortino']:.2f}",
                    f"{s['max_drawdown']:.2%}",
                    str(s["n_trades"]),
                    str(s["violations"]),
                    f"{s['persona_alignment']:.3f}",
                )
    Console(width=max(Console().width, 132)).print(table)  # not cut to 80 columns in a pipe
    for said in warnings[:5]:  # a dead LLM or store must not pass as a quiet "+0.00%"
        print(f"WARNING: {said}")
    if len(warnings) > 5:
        print(f"WARNING: and {len(warnings) - 5} more (the JSON's warnings)")
    share = cfg.llm.min_answered_share
    failed = [
        f"{r.pair} {r.timeframe} {r.window_start:%Y-%m-%d} {r.mode}: {why}"
        for r in (o.run for o in outcome.outputs)
        if (why := dependency_failure(r.metrics, min_share=share))
    ]
    if failed:  # written, but no ablation of memory: said last, whatever came before
        print(f"FAILED: {len(failed)} of {len(outcome.outputs)} runs (first: {failed[0]})")
        raise typer.Exit(DEPENDENCY_FAILED)

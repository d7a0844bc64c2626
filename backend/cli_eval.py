"""``sentinel eval ...``: evaluations of the memory, each writing one JSON file.

A typer sub-app; ``backend.cli`` registers it with ``app.add_typer(cli_eval.app,
name="eval")`` and its ``main()`` turns a :class:`~backend.errors.SentinelError` into one
line on stderr and exit status 2::

    sentinel eval ablation --data-dir ../shared/data/market/binance \\
        --pairs BTC/USDT,ETH/USDT,SOL/USDT --timeframes 1h,4h --out runs/ablation.json \\
        [--start 2021-01-01 --end 2026-01-01 --window-months 6 --modes off,persona,...]
    sentinel eval persona --fills ../shared/data/trades/hyperliquid_fills.csv \\
        --out runs/persona_validity.json [--horizon-days 30 --recent-days 7 --every-days N]

Output files are written atomically (a temporary file in the same directory, then
``os.replace``); the ablation rewrites its file after every run with ``"complete":
false`` until the last one. A table of the headline numbers goes to stdout.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Annotated, Any, cast

import typer
from rich.console import Console
from rich.table import Table

from backend.errors import ConfigError

__all__ = ["ablation", "app", "persona", "write_json"]

app = typer.Typer(help="Evaluate the memory (ablation, persona validity).", no_args_is_help=True)


def write_json(path: Path, payload: dict[str, Any]) -> None:
    """Write ``payload`` as indented JSON to ``path`` atomically (parents created)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(payload, handle, indent=1)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _split(text: str, *, name: str) -> list[str]:
    items = [part.strip() for part in text.split(",") if part.strip()]
    if not items:
        raise ConfigError(f"--{name}: give at least one value (comma-separated)")
    return items


def _fmt(value: Any, spec: str) -> str:
    return "-" if value is None else format(value, spec)


@app.command("ablation")
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
) -> None:
    """Backtest the same walk-forward windows with memory off, persona only, persona +
    working, and all three tiers; side by side with buy-and-hold."""
    from backend.cli import parse_utc, settings
    from backend.cli_backtest import data_root_for
    from backend.data import find_ohlcv_file, read_ohlcv_file
    from backend.embeddings import build_embedder
    from backend.eval._memo import MemoEmbedder
    from backend.eval.ablation import MODES, run_ablation, walk_forward_windows
    from backend.eval.models import AblationMode, WindowRun

    cfg = settings()
    chosen = _split(modes, name="modes")
    unknown = [m for m in chosen if m not in MODES]
    if unknown:
        raise ConfigError(f"--modes: unknown {', '.join(unknown)} (expected {', '.join(MODES)})")
    first, last = parse_utc(start, name="start"), parse_utc(end, name="end")
    if first >= last:
        raise ConfigError(f"--start {start} must be before --end {end}")
    windows = walk_forward_windows(first, last, months=window_months)
    candles = data_dir if data_dir is not None else cfg.data.market_dir
    frames = {
        (pair, tf): read_ohlcv_file(find_ohlcv_file(candles, pair, tf), pair=pair, timeframe=tf)
        for pair in _split(pairs, name="pairs")
        for tf in _split(timeframes, name="timeframes")
    }
    root = data_root if data_root is not None else data_root_for(candles, cfg)
    embedder = MemoEmbedder(build_embedder(cfg.embedding))
    err = Console(stderr=True)
    header = {"command": " ".join(["sentinel", *sys.argv[1:]]), "complete": False}

    def checkpoint(run: WindowRun, runs: list[WindowRun]) -> None:
        m = run.metrics
        err.print(
            f"{run.pair} {run.timeframe} {run.window_start:%Y-%m-%d} {run.mode}: "
            f"{m.total_return:+.2%} (buy and hold {m.buy_and_hold_return:+.2%}), "
            f"{m.n_trades} trades, {run.violations} violations, {run.run_s:.0f} s"
        )
        write_json(out, {**header, "runs": [r.model_dump(mode="json") for r in runs]})

    result = run_ablation(
        cfg,
        ohlcv=frames,
        data_root=root,
        windows=windows,
        modes=cast(list[AblationMode], chosen),
        embedder=embedder,
        on_run=checkpoint,
    )
    write_json(out, {**header, "complete": True, **result})
    table = Table("pair", "tf", "mode", "return", "Sharpe", "max DD", "trades", "violations")
    for pair, by_tf in result["summary"].items():
        for tf, by_mode in by_tf.items():
            for mode, s in by_mode.items():
                table.add_row(
                    pair,
                    tf,
                    mode,
                    f"{s['total_return']:+.2%}",
                    f"{s['sharpe']:.2f}",
                    f"{s['max_drawdown']:.2%}",
                    str(s["n_trades"]),
                    str(s["violations"]),
                )
    Console().print(table)


@app.command("persona")
def persona(
    fills: Annotated[Path, typer.Option(help="Fills CSV in the Hyperliquid export format.")],
    out: Annotated[Path, typer.Option(help="JSON file to write.")],
    horizon_days: Annotated[int, typer.Option(min=1, max=3650, help="Prediction horizon.")] = 30,
    recent_days: Annotated[int, typer.Option(min=1, max=3650, help="recent7d look-back.")] = 7,
    every_days: Annotated[
        int | None,
        typer.Option(min=1, max=3650, help="Evaluate every N days (default: month starts)."),
    ] = None,
) -> None:
    """Persona predictive validity: predict each trader's next 30 days from the profile
    at t (persona), the other traders' average (prior) and the last 7 days (recent7d)."""
    from backend.data.fills import load_hyperliquid_fills
    from backend.eval.persona_validity import METHODS, evaluate_persona_validity

    result = evaluate_persona_validity(
        load_hyperliquid_fills(fills),
        horizon_days=horizon_days,
        recent_days=recent_days,
        every_days=every_days,
    )
    result["config"]["fills_path"] = str(fills)
    write_json(out, result)
    table = Table(
        "method", "top-3 hit", "top-3 overlap", "long-share MAE", "|ln notional|", "holding acc.",
        "points", title=f"{result['evaluation_points']} points, {len(result['config']['traders'])}"
        f" trader(s); written to {out}",
    )  # fmt: skip
    for method in METHODS:
        s = result["methods"][method]
        table.add_row(
            method,
            _fmt(s["top3_asset_hit_rate"], ".3f"),
            _fmt(s["top3_asset_overlap"], ".3f"),
            _fmt(s["long_share_mae"], ".3f"),
            _fmt(s["median_notional_abs_log_error"], ".3f"),
            _fmt(s["holding_bucket_accuracy"], ".3f"),
            str(s["n_points"]),
        )
    Console().print(table)

"""``sentinel replay-trades``: replay a real trader's fills; write the persona timeline."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import pandas as pd
import typer
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from backend.cli._common import console, parse_utc, settings, store_settings
from backend.config import Settings
from backend.errors import ConfigError
from backend.files import check_writable, write_files_atomic
from backend.replay import SERIES, ReplayResult, replay_trades, trader_fills

__all__ = ["plot_timeline", "replay_trades_cli", "replay_trades_command", "write_replay"]


def plot_timeline(result: ReplayResult, path: Path) -> None:
    """PNG of the tracked persona numbers per version, big wins (green) / losses (red)."""
    fig, axes = plt.subplots(len(SERIES), 1, figsize=(10, 2.2 * len(SERIES)), sharex=True)
    frame = result.versions
    for ax, name in zip(axes, SERIES, strict=True):
        if not frame.empty and frame[name].notna().any():
            ax.step(pd.to_datetime(frame["as_of"], utc=True), frame[name], where="post")
        ax.set_ylabel(name.replace("_", " "), fontsize=8)
        for ep in result.episodes:
            ax.axvline(
                ep.occurred_at,
                color="green" if ep.event_type == "big_win" else "red",
                alpha=0.3,
                linewidth=0.8,
            )
    axes[0].set_title(
        f"Persona timeline of {result.trader_id[:12]}… ({result.fills:,} fills, {result.days} days)"
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


REPLAY_FILES = (
    "persona_timeline.csv", "persona_versions.csv", "persona_timeline.png", "episodes.jsonl",
)  # fmt: skip
"""The files :func:`write_replay` writes into its directory."""


def write_replay(result: ReplayResult, out: Path) -> dict[str, object]:
    """Write ``persona_timeline.csv`` (changes), ``persona_versions.csv``,
    ``persona_timeline.png`` and ``episodes.jsonl`` into ``out``, all or none
    (:func:`~backend.files.write_files_atomic`); returns a summary (``warning``: said
    when the trader has too few closing trades for big wins and losses to be judged, so
    "0 big wins" is not read as none happening; ``resumed_days``: days already in a
    reused store)."""

    def fill(stage: Path) -> None:
        result.changes.to_csv(stage / "persona_timeline.csv", index=False)
        result.versions.to_csv(stage / "persona_versions.csv", index=False)
        plot_timeline(result, stage / "persona_timeline.png")
        with (stage / "episodes.jsonl").open("w", encoding="utf-8") as fh:
            for ep in result.episodes:
                fh.write(ep.model_dump_json() + "\n")

    write_files_atomic(out, REPLAY_FILES, fill, what="replay's files")
    last = result.versions.iloc[-1].to_dict() if not result.versions.empty else {}
    return {
        "trader_id": result.trader_id,
        "fills": result.fills,
        "days": result.days,
        "versions": int(result.profile.version) if result.profile else 0,
        "changes": len(result.changes),
        "big_wins": sum(e.event_type == "big_win" for e in result.episodes),
        "big_losses": sum(e.event_type == "big_loss" for e in result.episodes),
        "resumed_days": result.resumed_days,
        "closing_trades": result.closing_trades,
        "warning": (
            f"big wins and losses not detected: {result.closing_trades} closing trades, "
            f"the detector judges none before {result.min_history}"
            if result.closing_trades < result.min_history
            else None
        ),
        "final": {k: (v.isoformat() if isinstance(v, datetime) else v) for k, v in last.items()},
        "out": str(out),
    }


def replay_trades_command(
    settings: Settings,
    *,
    fills_path: Path,
    trader: str,
    out: Path,
    until: datetime | None,
    store_path: Path | None,
    quiet: bool,
) -> dict[str, object]:
    """Composition for the command: load fills, build the memory system, replay, write.
    The progress bar (off when ``quiet``) goes to stderr, so stdout stays the summary."""
    from backend.compose import build_memory_system
    from backend.data import load_hyperliquid_fills
    from backend.data.fills import account_id

    fills = load_hyperliquid_fills(fills_path, not_after=datetime.now(UTC))  # the CLI's clock
    trader = account_id(trader)
    trader_fills(fills, trader_id=trader, until=until, source=fills_path)  # before any store
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out}: a file is there, not a directory")
    for name in REPLAY_FILES:
        check_writable(out / name, what="replay output")
    run_settings = (
        store_settings(settings, store_path) if store_path is not None else settings.throwaway()
    )
    with (
        build_memory_system(run_settings) as system,
        Progress(console=Console(stderr=True), disable=quiet, transient=True) as bar,
    ):
        task = bar.add_task(f"replaying {trader[:12]}…", total=None)
        result = replay_trades(
            system,
            fills,
            trader_id=trader,
            detectors=settings.memory.detectors,
            until=until,
            progress=lambda done, total: bar.update(task, completed=done, total=total),
        )
    return write_replay(result, out)


def replay_trades_cli(
    trader: Annotated[str, typer.Option(help="Trader (account) id in the fills file.")],
    fills: Annotated[Path, typer.Option(help="Hyperliquid fills export (CSV).")],
    out: Annotated[Path, typer.Option(help="Output folder.")],
    until: Annotated[str | None, typer.Option(help="Replay fills up to this UTC time.")] = None,
    store_path: Annotated[Path | None, typer.Option(help="Keep the memory store here.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print a JSON summary.")] = False,
) -> None:
    """Replay a trader's fills day by day and write the persona timeline.

    The persona evolves with the fills, big wins and losses become episodes,
    and the timeline is written as a table and a plot."""

    summary = replay_trades_command(
        settings(),
        fills_path=fills,
        trader=trader,
        out=out,
        until=parse_utc(until, name="until") if until else None,
        store_path=store_path,
        quiet=as_json,
    )
    if as_json:
        print(json.dumps(summary, default=str))
        return
    table = Table("", "value", title=f"persona replay of {trader}")
    for key in ("fills", "days", "resumed_days", "versions", "changes", "big_wins", "big_losses"):
        table.add_row(key, str(summary[key]))
    final = summary["final"]
    if isinstance(final, dict):
        for key, value in final.items():
            table.add_row(f"final {key}", str(value))
    console.print(table)
    console.print(f"timeline: {out / 'persona_timeline.csv'}, plot: {out / 'persona_timeline.png'}")
    if summary["warning"]:
        console.print(f"WARNING: {summary['warning']}", markup=False)

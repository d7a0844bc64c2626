"""``sentinel backtest``: replay one pair's candles through the DeepTraderManager.

``backend.cli`` registers the command with ``app.command("backtest")(backtest)``; its
``main()`` turns a :class:`~backend.errors.SentinelError` (a damaged data file is a
:class:`~backend.errors.DataError` naming the file) into one line on stderr, exit 2::

    sentinel backtest --pair BTC/USDT --timeframe 1h --start 2022-01-01 --end 2022-03-01 \\
        --data-dir ../shared/data/market/binance --out runs/btc-2022q1 [--memory on|off] \\
        [--policy rule|llm] [--trader ID [--fills FILLS.csv]] [--json]

It reads ``DATA_DIR/BTC_USDT-1h.*`` (any supported format), runs
:func:`~backend.backtest.engine.run_backtest` over the bars with open time in
``[start, end)`` and writes ``metrics.json``, ``trades.csv``, ``fills.csv``,
``decisions.jsonl``, ``equity.csv``, ``memory_changes.csv`` and ``report.html`` into
``OUT``. A rich progress bar goes to stderr (not
with ``--json``); stdout gets the headline metrics and the report's path, or with
``--json`` the metrics JSON as its last line. A run whose LLM answered less than
``llm.min_answered_share`` of its decisions, or whose memory worked at less than that
share of them, exits 3 (:data:`~backend.cli._common.DEPENDENCY_FAILED`) after writing every output.

The maker is given the data ROOT (``news/``, ``trades/``), not the candle directory:
``--data-root``, else :func:`data_root_for` (``DATA_DIR/../..`` for the
``ROOT/market/binance`` layout). The composition is :func:`run_backtest_command`; the
decision maker comes from ``backend.compose.build_trader_manager``
(imported lazily) unless a ``maker_factory`` with the same signature is passed (tests).
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, Protocol

import pandas as pd
import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from backend.backtest.engine import (
    BacktestResult,
    ProgressCallback,
    run_backtest,
    select_window,
    window_cut,
)
from backend.backtest.metrics import dependency_failure, run_warning, share_text
from backend.backtest.models import DecisionMaker
from backend.backtest.report import check_run_dir, write_run
from backend.cli._common import (
    DEPENDENCY_FAILED,
    check_data_root,
    console,
    data_root_for,
    news_inputs,
    news_warnings,
    parse_pair,
    parse_trader,
    parse_utc,
    settings,
)
from backend.config import Settings
from backend.data import Fill, OHLCVFrame, find_ohlcv_file, read_ohlcv_file
from backend.errors import ConfigError, EmbeddingError, StoreError, dependency_failed
from backend.memory import FearGreedIndex, HeadlineIndex, News, coverage_notes, load_news
from backend.types import quote_asset

log = logging.getLogger(__name__)

__all__ = [
    "MakerFactory",
    "backtest",
    "data_root_for",
    "default_maker_factory",
    "run_backtest_command",
]


class MakerFactory(Protocol):
    """``build_trader_manager``'s signature: the maker and a function that closes it."""

    def __call__(
        self,
        settings: Settings,
        *,
        ohlcv: OHLCVFrame,
        data_dir: Path,
        memory: bool,
        policy: str,
        store_path: Path | None,
        fills: Sequence[Fill] = (),
    ) -> tuple[DecisionMaker, Callable[[], None]]: ...


def default_maker_factory() -> MakerFactory:
    """``backend.compose.build_trader_manager``, the composition root's builder (imported
    when a backtest runs, not when the CLI starts: ``sentinel --help`` stays quick)."""
    from backend.compose import build_trader_manager

    return build_trader_manager


def _optional_call(maker: object, name: str) -> Any:
    method = getattr(maker, name, None)
    return method() if callable(method) else None


def _persona_timeline(maker: object, notes: list[str]) -> Any:
    """The maker's persona timeline for the report, read from the store after the run;
    ``None``, with a note (``notes``) and a warning, when the store or the embedder
    fails: a reviewer's store failing at that read had ended a finished run with exit 2
    and none of its files written. A wrong call or setup (look-ahead, tenant scope,
    another embedder) still raises."""
    try:
        return _optional_call(maker, "persona_timeline")
    except (StoreError, EmbeddingError) as exc:
        if not dependency_failed(exc):
            raise
        note = f"persona timeline not written: the memory store failed ({exc})"
        log.warning("%s", note)
        notes.append(note)
        return None


def _news_of(maker: object, settings: Settings, root: Path) -> News:
    """The news the maker reads: the manager's own (it loaded them), else loaded from
    ``root`` (a test's maker; loading them again cost every run ~0.4 s)."""
    headlines, fear_greed = getattr(maker, "headlines", False), getattr(maker, "fear_greed", False)
    if isinstance(headlines, HeadlineIndex | None) and isinstance(
        fear_greed, FearGreedIndex | None
    ):
        return News(headlines, fear_greed)
    return load_news(settings.data, root)


def run_backtest_command(
    settings: Settings,
    *,
    pair: str,
    timeframe: str,
    start: datetime | None,
    end: datetime | None,
    data_dir: Path,
    out: Path,
    memory: bool,
    policy: str,
    maker_factory: MakerFactory | None = None,
    store_path: Path | None = None,
    data_root: Path | None = None,
    progress: ProgressCallback | None = None,
    fills: Sequence[Fill] = (),
    trader_named: bool = False,
) -> BacktestResult:
    """Load the candles, build the maker, run the backtest, write the run into ``out``.

    ``data_dir`` holds the candle file; the maker factory gets ``data_root`` (default
    :func:`data_root_for`) as its ``data_dir``. ``settings.agent`` is overridden with
    ``memory``/``policy`` before the maker is built.
    The maker's optional ``salient_events()`` and ``persona_timeline()`` feed the report;
    its close function always runs. ``fills``: the trader's (``agent.trader_id``), given
    to the persona as known at each bar; a window they do not cover is a note.
    ``trader_named`` (``--trader``): a store with no memory of that trader, so that the
    run's persona is the seed note alone, is a note too (a reviewer's run under another
    trader's id was the default run to the byte, with nothing said). Raises DataError
    (naming the file) for a missing or damaged candle file or an empty window,
    ConfigError for bad options.
    """
    if policy not in ("rule", "llm"):
        raise ConfigError(f"--policy: expected rule or llm, got {policy!r}")
    if start is not None and end is not None and start >= end:
        raise ConfigError(f"--start {start.isoformat()} must be before --end {end.isoformat()}")
    check_run_dir(out)  # before the run, not after it
    check_data_root(data_root)
    path = find_ohlcv_file(data_dir, pair, timeframe)
    ohlcv = read_ohlcv_file(path, pair=pair, timeframe=timeframe)
    first_row, stop_row = select_window(ohlcv, start=start, end=end)
    agent = settings.agent.model_copy(update={"memory": memory, "policy": policy})
    settings = settings.model_copy(update={"agent": agent})
    factory = maker_factory if maker_factory is not None else default_maker_factory()
    root = data_root if data_root is not None else data_root_for(data_dir, settings)
    missing = news_warnings(news_inputs(root, settings), root)
    if (cut := window_cut(ohlcv, start=start, end=end)) is not None:
        log.warning("%s", cut)  # on stderr when it runs, and in the report's notes
        missing.append(cut)
    bars = ohlcv.frame.index
    window = (bars[first_row].to_pydatetime(), bars[stop_row - 1].to_pydatetime())
    if not memory and (trader_named or store_path is not None):
        said = (  # a reviewer's --memory off run traded SOL the trader had excluded
            "memory off: the stored persona of trader "
            f"{settings.agent.trader_id} is not read, nor --fills; the run's constraints "
            "are the default constraints note's"
        )
        log.warning("%s", said)
        missing.append(said)
    if fills and memory:
        from backend.eval.ablation import fills_span_warnings

        for said in fills_span_warnings(settings.agent.trader_id, fills, [window]):
            log.warning("%s", said)
            missing.append(said)
    maker, close = factory(
        settings,
        ohlcv=ohlcv,
        data_dir=root,
        memory=memory,
        policy=policy,
        store_path=store_path,
        fills=fills,
    )
    for said in coverage_notes(_news_of(maker, settings, root), *window):
        log.warning("%s", said)
        missing.append(said)
    try:
        result = run_backtest(
            ohlcv,
            maker,
            settings=settings.backtest,
            trader_id=settings.agent.trader_id,
            start=start,
            end=end,
            progress=progress,
        )
        if memory and trader_named and not fills and getattr(maker, "seeded", False):
            kept = (
                f", now recorded in {store_path} as that trader's persona (evidence "
                "default-constraints-...)"
                if store_path is not None
                else ""
            )
            said = (
                f"no memory of trader {settings.agent.trader_id} in the store before the "
                f"first bar: the run's persona is the default constraints note alone{kept} "
                "(give --fills with the trader's fills, or a --store-path where `sentinel "
                "replay-trades` wrote its persona)"
            )
            log.warning("%s", said)
            missing.append(said)
        events = _optional_call(maker, "salient_events")
        timeline = _persona_timeline(maker, missing)
    finally:
        close()
    write_run(
        result,
        out,
        title=f"Backtest {pair} {timeframe}: policy {policy}, memory {'on' if memory else 'off'}",
        events=list(events) if events else None,
        persona_timeline=timeline if isinstance(timeline, pd.DataFrame) else None,
        min_llm_share=settings.llm.min_answered_share,
        memory=memory,
        outcome_horizon_bars=settings.agent.outcome_horizon_bars,
        notes=missing,
    )
    return result


def _on_off(value: str | None, *, default: bool) -> bool:
    if value is None:
        return default
    lowered = value.strip().lower()
    if lowered not in ("on", "off"):
        raise ConfigError(f"--memory: expected on or off, got {value!r}")
    return lowered == "on"


def _headline(result: BacktestResult, out: Path, *, min_share: float) -> Table:
    m = result.metrics
    table = Table("metric", "strategy", "buy and hold", title=f"{result.symbol} {result.timeframe}")
    table.add_row("total return", f"{m.total_return:+.2%}", f"{m.buy_and_hold_return:+.2%}")
    table.add_row("max drawdown", f"{m.max_drawdown:.2%}", f"{m.buy_and_hold_max_drawdown:.2%}")
    table.add_row("CAGR", f"{m.cagr:+.2%}", "")
    table.add_row("Sharpe / Sortino", f"{m.sharpe:.2f} / {m.sortino:.2f}", "")
    table.add_row("trades / win rate", f"{m.n_trades} / {m.win_rate:.1%}", "")
    table.add_row("decisions / violations", f"{m.n_decisions} / {m.constraint_violations}", "")
    table.add_row("time in market", f"{m.exposure:.1%}", "")
    quote = quote_asset(result.symbol)
    table.add_row(
        f"fees / final equity ({quote})", f"{m.fees_paid:,.2f} / {m.final_equity:,.2f}", ""
    )
    if m.llm_answered_share is not None:
        said = share_text(m.llm_answered_share, against=min_share)
        table.add_row("LLM answered", f"{said} of {m.llm_decisions}", "")
    if m.memory_error_decisions:
        table.add_row("memory failed at", f"{m.memory_error_decisions} decisions", "")
    table.caption = f"report: {out / 'report.html'}"
    return table


def backtest(
    pair: Annotated[str, typer.Option(help="ccxt symbol, e.g. BTC/USDT.")],
    timeframe: Annotated[str, typer.Option(help="Candle timeframe, e.g. 1h.")],
    out: Annotated[Path, typer.Option(help="Output directory of the run (created).")],
    start: Annotated[
        str | None, typer.Option(help="First bar open time (UTC), e.g. 2022-01-01; default: all.")
    ] = None,
    end: Annotated[
        str | None, typer.Option(help="Bars opening before this (UTC); default: all.")
    ] = None,
    data_dir: Annotated[
        Path | None,
        typer.Option(help="Directory of BASE_QUOTE-TIMEFRAME files (default: data.market_dir)."),
    ] = None,
    memory: Annotated[str | None, typer.Option(help="on or off (default: agent.memory).")] = None,
    policy: Annotated[str | None, typer.Option(help="rule or llm (default: agent.policy).")] = None,
    data_root: Annotated[
        Path | None,
        typer.Option(help="Data root with news/ and trades/ (default: derived, see docs)."),
    ] = None,
    store_path: Annotated[
        Path | None, typer.Option(help="Memory store directory (default: the manager's).")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the metrics JSON.")] = False,
    trader: Annotated[
        str | None,
        typer.Option(help="Trader whose memory the run uses (default: agent.trader_id)."),
    ] = None,
    fills: Annotated[
        Path | None,
        typer.Option(
            help="Hyperliquid fills CSV of --trader (id or unique prefix): the persona "
            "learns them as known at each bar."
        ),
    ] = None,
) -> None:
    """Backtest the DeepTraderManager on one pair: fills at the next open, fees, slippage."""

    cfg = settings()
    if fills is not None and trader is None:
        raise ConfigError("--fills needs --trader: whose fills of the file to use")
    trader_fills: list[Fill] = []
    if trader is not None and fills is not None:
        from backend.eval.ablation import load_trader_fills

        trader, trader_fills = load_trader_fills(fills, trader, not_after=datetime.now(UTC))
    if trader is not None:  # e.g. a persona `replay-trades` built into the same --store-path
        agent = cfg.agent.model_copy(update={"trader_id": parse_trader(trader)})
        cfg = cfg.model_copy(update={"agent": agent})
    first = parse_utc(start, name="start") if start else None
    last = parse_utc(end, name="end") if end else None
    use_memory = _on_off(memory, default=cfg.agent.memory)
    chosen_policy = policy if policy is not None else cfg.agent.policy
    bar = Progress(
        TextColumn("backtest"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=Console(stderr=True),
        disable=as_json,
        transient=True,  # gone when stopped: an error mid-run stays the one line on stderr
    )
    task = bar.add_task("bars", total=None)
    every = 1 if chosen_policy == "llm" else 200  # a model's decision takes seconds

    def progress(done: int, total: int) -> None:
        if not bar.live.is_started:  # started by the first bar: errors before stay one line
            bar.start()
        if done == total or done % every == 0:
            bar.update(task, completed=done, total=total)

    try:
        result = run_backtest_command(
            cfg,
            pair=parse_pair(pair),
            timeframe=timeframe,
            start=first,
            end=last,
            data_dir=data_dir if data_dir is not None else cfg.data.market_dir,
            out=out,
            memory=use_memory,
            policy=chosen_policy,
            store_path=store_path,
            data_root=data_root,
            progress=progress,
            fills=trader_fills,
            trader_named=trader is not None,
        )
    finally:
        if bar.live.is_started:  # stopping one never started prints an empty line
            bar.stop()
    share = cfg.llm.min_answered_share
    warning = run_warning(result.metrics, min_share=share)
    if as_json:
        if warning is not None:  # stdout's last line stays the JSON
            print(f"WARNING: {warning}", file=sys.stderr)
        print(json.dumps(result.metrics.model_dump(mode="json")))
    else:
        console.print(_headline(result, out, min_share=share))
        if warning is not None:
            print(f"WARNING: {warning}")
    if dependency_failure(result.metrics, min_share=share) is not None:
        raise typer.Exit(DEPENDENCY_FAILED)  # the outputs are written; the figures are no run

"""The ``sentinel`` command line (typer): the composition root.

Only this module (with its sub-apps) and the scheduler's jobs read the clock; everything
below it takes ``as_of`` as an argument. Errors of the package (:class:`SentinelError`)
print one line on stderr and exit with status 2; ``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Literal

import typer
from rich.console import Console
from rich.table import Table

from backend import cli_eval
from backend.cli_backtest import backtest
from backend.cli_llm import llm_app
from backend.cli_mcp import mcp_command
from backend.cli_persona import persona_app
from backend.cli_replay import replay_trades_cli
from backend.cli_service import paper, scheduler_app
from backend.config import Settings, load_settings
from backend.errors import ConfigError, SentinelError

__all__ = ["app", "main"]

app = typer.Typer(
    name="sentinel",
    help="CryptoSentinel memory: hierarchical memory for an LLM crypto-trading agent.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
data_app = typer.Typer(help="Market data: download and check OHLCV files.", no_args_is_help=True)
memory_app = typer.Typer(help="Inspect the Khala memory store.", no_args_is_help=True)
app.add_typer(data_app, name="data")
app.add_typer(memory_app, name="memory")
app.add_typer(persona_app, name="persona")
app.add_typer(cli_eval.app, name="eval")
app.add_typer(llm_app, name="llm")
app.command("replay-trades")(replay_trades_cli)
app.command("backtest")(backtest)
app.add_typer(scheduler_app, name="scheduler")
app.command("paper")(paper)
app.command("mcp")(mcp_command)

console = Console()


class _State:
    settings: Settings | None = None
    config_path: Path | None = None


_state = _State()


def settings() -> Settings:
    """Settings loaded once per invocation (``--config`` or ``config/default.yaml`` + env)."""
    if _state.settings is None:
        _state.settings = load_settings(_state.config_path)
    return _state.settings


def parse_utc(value: str, *, name: str) -> datetime:
    """Parse ``2024-01-01`` or ISO-8601; naive values are taken as UTC."""
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise ConfigError(f"--{name}: not an ISO-8601 date/time: {value!r}") from None
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


@app.callback()
def _root(
    config: Annotated[
        Path | None, typer.Option("--config", help="YAML config (default config/default.yaml).")
    ] = None,
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks and debug logs.")] = False,
) -> None:
    _state.config_path = config
    _state.settings = None
    logging.basicConfig(
        level=logging.DEBUG if debug else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    if not debug:
        import bm25s  # noqa: F401  (it sets its own logger to DEBUG on import)

        for noisy in ("bm25s", "chromadb", "httpx", "urllib3"):
            logging.getLogger(noisy).setLevel(logging.WARNING)


@app.command()
def demo(
    data_dir: Annotated[
        Path | None, typer.Option(help="Shared data directory (default: data.data_dir).")
    ] = None,
    store_path: Annotated[
        Path | None, typer.Option(help="Embedded store directory (default: store.path).")
    ] = None,
) -> None:
    """Smoke job of the memory layer on the real data: ingest, search, print what it found."""
    from backend.demo import run_demo

    cfg = settings()
    if store_path is not None:
        cfg = cfg.model_copy(update={"store": cfg.store.model_copy(update={"path": store_path})})
    run_demo(cfg, data_dir=data_dir or cfg.data.data_dir, console=console)


@data_app.command("download")
def data_download(
    pair: Annotated[str, typer.Option(help="ccxt symbol, e.g. BTC/USDT.")],
    timeframe: Annotated[str, typer.Option(help="Candle timeframe, e.g. 1h.")],
    since: Annotated[str, typer.Option(help="First candle open time (UTC), e.g. 2024-01-01.")],
    data_dir: Annotated[Path, typer.Option(help="Directory of BASE_QUOTE-TIMEFRAME files.")],
    exchange: Annotated[str | None, typer.Option(help="ccxt exchange id.")] = None,
    until: Annotated[str | None, typer.Option(help="End (UTC); default: now.")] = None,
    fmt: Annotated[str, typer.Option("--format", help="csv, csv.gz, feather, parquet.")] = "csv.gz",
    api_url: Annotated[
        str | None, typer.Option(help="Point the exchange API at this base URL.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print a JSON summary.")] = False,
) -> None:
    """Download closed candles through ccxt ``fetch_ohlcv`` (paged) into a data file."""
    from backend.data import download_ohlcv, make_exchange, write_ohlcv

    cfg = settings().exchange
    start = parse_utc(since, name="since")
    end = parse_utc(until, name="until") if until else datetime.now(UTC)
    ex = make_exchange(
        exchange or cfg.id, api_base_url=api_url or cfg.api_base_url, timeout_ms=cfg.timeout_ms
    )
    frame = download_ohlcv(ex, pair, timeframe, since=start, until=end)
    path = write_ohlcv(frame, data_dir, pair, timeframe, fmt=fmt)
    summary = {
        "path": str(path),
        "rows": len(frame),
        "first": frame.index[0].isoformat() if len(frame) else None,
        "last": frame.index[-1].isoformat() if len(frame) else None,
    }
    if as_json:
        print(json.dumps(summary))
    else:
        console.print(f"wrote {summary['rows']} candles to {path}")


@data_app.command("check")
def data_check(
    pair: Annotated[str, typer.Option(help="e.g. BTC/USDT")],
    timeframe: Annotated[str, typer.Option(help="e.g. 1h")],
    data_dir: Annotated[Path, typer.Option(help="Directory of BASE_QUOTE-TIMEFRAME files.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Validate an OHLCV file and report its gaps and repairs (never fills gaps)."""
    from backend.data import load_ohlcv

    loaded = load_ohlcv(data_dir, pair, timeframe)
    report = {
        "path": str(loaded.source),
        "rows": len(loaded.frame),
        "first": loaded.frame.index[0].isoformat() if len(loaded.frame) else None,
        "last": loaded.frame.index[-1].isoformat() if len(loaded.frame) else None,
        "gaps": [g.model_dump(mode="json") for g in loaded.gaps],
        "missing_candles": sum(g.missing for g in loaded.gaps),
        "repairs": list(loaded.repairs),
    }
    if as_json:
        print(json.dumps(report))
        return
    console.print(
        f"{report['path']}: {report['rows']} candles {report['first']} .. {report['last']}, "
        f"{len(loaded.gaps)} gaps ({report['missing_candles']} missing candles)"
    )
    for gap in loaded.gaps[:20]:
        console.print(f"  gap after {gap.start.isoformat()}: {gap.missing} missing")


@memory_app.command("search")
def memory_search(
    trader: Annotated[str, typer.Option(help="Trader id whose memories to search.")],
    query: Annotated[str, typer.Option(help="Query text.")],
    as_of: Annotated[str | None, typer.Option(help="UTC time fence; default: now.")] = None,
    method: Annotated[str, typer.Option(help="dense, bm25 or hybrid.")] = "hybrid",
    top_k: Annotated[int, typer.Option(min=1, max=1000)] = 10,
    kind: Annotated[str | None, typer.Option(help="Only this kind (e.g. news).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON lines.")] = False,
) -> None:
    """Search one trader's memories (never another trader's) as of a time."""
    from backend.embeddings import build_embedder
    from backend.storage import open_store

    if method not in ("dense", "bm25", "hybrid"):
        raise ConfigError(f"--method: expected dense, bm25 or hybrid, got {method!r}")
    cfg = settings()
    fence = parse_utc(as_of, name="as-of") if as_of else datetime.now(UTC)
    store = open_store(cfg.store, build_embedder(cfg.embedding))
    searched: Literal["dense", "bm25", "hybrid"] = method  # type: ignore[assignment]
    hits = store.search(
        trader,
        query,
        as_of=fence,
        top_k=top_k,
        method=searched,
        filters={"kind": kind} if kind else None,
    )
    if as_json:
        for hit in hits:
            print(hit.model_dump_json())
        return
    table = Table("rank", "sim", "created_at", "kind", "text")
    for hit in hits:
        table.add_row(
            str(hit.rank),
            f"{hit.similarity:.3f}",
            hit.record.created_at.isoformat(),
            hit.record.kind,
            hit.record.text[:100],
        )
    console.print(table)


def main() -> None:
    """Console entry point: runs :data:`app`, turning errors into one line and exit 2."""
    debug = "--debug" in sys.argv[1:]
    try:
        app(standalone_mode=False)
    except SentinelError as exc:
        if debug:
            raise
        print(f"sentinel: error: {' '.join(str(exc).split())}", file=sys.stderr)
        sys.exit(2)
    except typer.Abort:
        print("sentinel: aborted", file=sys.stderr)
        sys.exit(130)
    except typer.TyperException as exc:  # typer's own click: a mistyped command or option
        show = getattr(exc, "show", None)
        if callable(show):
            show()  # the usage line and the problem, as click prints them
        else:
            print(f"sentinel: error: {exc}", file=sys.stderr)
        sys.exit(int(getattr(exc, "exit_code", 2)))
    except Exception as exc:  # a bug: still one line unless --debug
        if debug:
            raise
        message = " ".join(str(exc).split())
        print(
            f"sentinel: internal error: {type(exc).__name__}: {message} (rerun with --debug)",
            file=sys.stderr,
        )
        sys.exit(1)

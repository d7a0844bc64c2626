"""``sentinel data``: download and check OHLCV files."""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer

from backend.cli._common import console, parse_pair, parse_utc, settings
from backend.errors import ConfigError

__all__ = ["data_app"]

data_app = typer.Typer(help="Market data: download and check OHLCV files.", no_args_is_help=True)


@data_app.command("download")
def data_download(
    pair: Annotated[str, typer.Option(help="ccxt symbol, e.g. BTC/USDT.")],
    timeframe: Annotated[str, typer.Option(help="Candle timeframe, e.g. 1h.")],
    since: Annotated[str, typer.Option(help="First candle open time (UTC), e.g. 2024-01-01.")],
    data_dir: Annotated[Path, typer.Option(help="Directory of BASE_QUOTE-TIMEFRAME files.")],
    exchange: Annotated[str | None, typer.Option(help="ccxt exchange id.")] = None,
    until: Annotated[str | None, typer.Option(help="End (UTC); default: now.")] = None,
    fmt: Annotated[
        str, typer.Option("--format", help="csv.gz, csv, feather, parquet, json.gz or json.")
    ] = "csv.gz",
    api_url: Annotated[
        str | None, typer.Option(help="Point the exchange API at this base URL.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print a JSON summary.")] = False,
) -> None:
    """Download closed candles through ccxt fetch_ohlcv (paged) into a data file.

    The file keeps the candles it already holds (the new ones win at the same open
    time); a file of the pair in another format is an error. --until after now is
    now: a candle still forming is never written."""
    from backend.compose import build_exchange
    from backend.data import (
        OHLCV_FORMATS,
        download_ohlcv,
        find_gaps,
        ohlcv_filename,
        update_ohlcv,
    )

    cfg = settings()
    pair = parse_pair(pair)
    if fmt not in OHLCV_FORMATS:
        known = ", ".join(OHLCV_FORMATS)
        raise ConfigError(f"--format: unknown OHLCV format {fmt!r} (one of {known})")
    ohlcv_filename(pair, timeframe, fmt)  # a bad --timeframe before any request
    start = parse_utc(since, name="since")
    now = datetime.now(UTC)  # a later --until had written the forming candle as closed
    end = min(parse_utc(until, name="until"), now) if until else now
    if start >= end:
        raise ConfigError(
            f"--since {start.isoformat()} is not before the end {end.isoformat()} "
            "(--until, or now): no candle to download"
        )
    ex = build_exchange(cfg, exchange, api_url=api_url, credentials=False)  # public candles
    frame = download_ohlcv(ex, pair, timeframe, since=start, until=end, complete=True)
    path, held = update_ohlcv(frame, data_dir, pair, timeframe, fmt=fmt)
    summary = {
        "path": str(path),
        "rows": len(frame),
        "file_rows": held,
        "first": frame.index[0].isoformat() if len(frame) else None,
        "last": frame.index[-1].isoformat() if len(frame) else None,
    }
    gaps = find_gaps(frame, timeframe)  # logged at INFO only: said, as data check says them
    summary["missing_candles"] = sum(g.missing for g in gaps)
    if as_json:
        print(json.dumps(summary))
    else:
        console.print(f"wrote {len(frame)} candles to {path} ({held} in the file)")
    if gaps:
        first = gaps[0]
        print(
            f"sentinel: note: the exchange has no candles in {len(gaps)} hole(s) of the "
            f"range ({summary['missing_candles']} missing; the first after "
            f"{first.start.isoformat()}), left as holes (sentinel data check lists them)",
            file=sys.stderr,
        )


@data_app.command("check")
def data_check(
    pair: Annotated[str, typer.Option(help="e.g. BTC/USDT")],
    timeframe: Annotated[str, typer.Option(help="e.g. 1h")],
    data_dir: Annotated[Path, typer.Option(help="Directory of BASE_QUOTE-TIMEFRAME files.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Validate an OHLCV file and report its gaps and repairs (never fills gaps)."""
    from backend.data import load_ohlcv

    settings()  # a bad --config is an error here too, although no setting is read
    loaded = load_ohlcv(data_dir, parse_pair(pair), timeframe)
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

"""OHLCV candle files in a freqtrade-style data directory.

Files are named ``BASE_QUOTE-TIMEFRAME.{csv,csv.gz,feather,parquet,json,json.gz}`` (freqtrade's
``pair_to_filename``: ``BTC/USDT`` 1h -> ``BTC_USDT-1h.csv.gz``). Every load validates and
returns an :class:`~backend.data.models.OHLCVFrame` whose ``frame`` has a UTC
``DatetimeIndex`` named ``date`` of candle OPEN times (strictly increasing) and float64
columns ``open, high, low, close`` (quote currency) and ``volume`` (base currency).

Safe repairs (logged on logger ``backend.data`` and listed in ``OHLCVFrame.repairs``): rows
out of time order are stably sorted; exact duplicate rows are dropped. Gaps (missing
candles) are detected, logged at INFO and reported in ``OHLCVFrame.gaps``, never filled.
Anything else wrong raises :class:`~backend.errors.DataError` with file, row and field.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from backend.data._candles import (
    VALUE_COLUMNS,
    coerce_dates,
    coerce_numbers,
    find_gaps,
    grid_origin,
    timeframe_seconds,
    validate_candles,
)
from backend.data._ohlcv_formats import HANDLERS, handler_for
from backend.data.models import OHLCVFrame
from backend.errors import DataError

__all__ = [
    "OHLCV_FORMATS",
    "find_gaps",
    "find_ohlcv_file",
    "grid_origin",
    "load_ohlcv",
    "ohlcv_filename",
    "read_ohlcv_file",
    "timeframe_seconds",
    "write_ohlcv",
]

OHLCV_FORMATS: tuple[str, ...] = tuple(HANDLERS)
"""Supported file formats, in the order ``find_ohlcv_file`` looks for them."""

_PAIR_SEPARATORS = ("/", " ", ".", "@", "$", "+", ":")


def ohlcv_filename(pair: str, timeframe: str, fmt: str = "csv.gz") -> str:
    """File name of ``pair``'s candles: ``ohlcv_filename("BTC/USDT", "1h")`` ->
    ``"BTC_USDT-1h.csv.gz"`` (freqtrade's ``pair_to_filename``: ``/ .@$+:`` and spaces
    become ``_``).

    Raises DataError for an empty pair, an invalid timeframe or an unknown ``fmt``.
    """
    if not pair.strip():
        raise DataError("empty pair", field="pair")
    timeframe_seconds(timeframe)
    if fmt not in HANDLERS:
        raise DataError(
            f"unknown OHLCV format {fmt!r} (expected one of {', '.join(HANDLERS)})",
            field="fmt",
        )
    stem = pair
    for char in _PAIR_SEPARATORS:
        stem = stem.replace(char, "_")
    return f"{stem}-{timeframe}.{fmt}"


def find_ohlcv_file(data_dir: str | Path, pair: str, timeframe: str) -> Path:
    """The one candle file of ``pair``/``timeframe`` in ``data_dir`` (any supported format).

    Raises DataError listing every name looked for if there is none, or naming them if
    several formats exist for the same pair and timeframe (ambiguous: remove the stale one).
    """
    directory = Path(data_dir)
    candidates = [directory / ohlcv_filename(pair, timeframe, fmt) for fmt in HANDLERS]
    found = [path for path in candidates if path.is_file()]
    if not found:
        looked = ", ".join(path.name for path in candidates)
        raise DataError(
            f"no OHLCV file for {pair} {timeframe} (looked for {looked})", path=directory
        )
    if len(found) > 1:
        names = ", ".join(path.name for path in found)
        raise DataError(
            f"several OHLCV files for {pair} {timeframe} ({names}); keep only one",
            path=directory,
        )
    return found[0]


def read_ohlcv_file(path: str | Path, *, pair: str, timeframe: str) -> OHLCVFrame:
    """Load and validate one candle file; the format comes from its suffix.

    Dates may be ISO-8601 strings (``2020-09-20T00:00:00Z``; no offset = UTC) or epoch
    numbers (>= 1e11 milliseconds, else seconds). Raises DataError (file, row = 1-based
    line with header = 1, field) for: missing/unreadable file, truncated gzip, bytes that
    are not UTF-8, empty file, header without rows, missing or unexpected columns,
    unparseable date, non-numeric/NaN/inf value, price <= 0, volume < 0, high < low,
    high < max(open, close), low > min(open, close), a time off the timeframe grid, or one
    time with two different candles.
    """
    file = Path(path)
    return handler_for(file).read(file, pair=pair, timeframe=timeframe)


def load_ohlcv(data_dir: str | Path, pair: str, timeframe: str) -> OHLCVFrame:
    """:func:`find_ohlcv_file` + :func:`read_ohlcv_file`."""
    return read_ohlcv_file(
        find_ohlcv_file(data_dir, pair, timeframe), pair=pair, timeframe=timeframe
    )


def write_ohlcv(
    frame: pd.DataFrame | OHLCVFrame,
    data_dir: str | Path,
    pair: str,
    timeframe: str,
    *,
    fmt: str = "csv.gz",
) -> Path:
    """Validate ``frame`` and write it as ``data_dir/ohlcv_filename(pair, timeframe, fmt)``.

    ``frame`` is the canonical shape (``date`` UTC index or column of open times, float
    columns ``open..volume``) or an :class:`OHLCVFrame`. The write is atomic (temp file in
    ``data_dir`` + ``os.replace``); CSV is written like the shared files
    (``date,open,high,low,close,volume``, ``date`` as ``2020-09-20T00:00:00Z``; ``.csv.gz``
    gzip with mtime 0, so identical data gives identical bytes). ``data_dir`` is created if
    needed. Returns the path written. Raises DataError if ``frame`` is invalid (row =
    position + 2) or the file cannot be written.
    """
    data = frame.frame if isinstance(frame, OHLCVFrame) else frame
    path = Path(data_dir) / ohlcv_filename(pair, timeframe, fmt)
    source = f"{path} (frame to write)"
    if "date" in data.columns:
        data = data.set_index("date")
    missing = [c for c in VALUE_COLUMNS if c not in data.columns]
    if missing or not isinstance(data.index, pd.DatetimeIndex):
        raise DataError(
            f"frame must have a DatetimeIndex 'date' and columns {', '.join(VALUE_COLUMNS)}"
            + (f" (missing {', '.join(missing)})" if missing else ""),
            path=source,
        )
    if data.empty:
        raise DataError("no candles to write", path=source)
    rows = np.arange(len(data), dtype=np.int64) + 2
    dates = coerce_dates(pd.Series(data.index), rows=rows, source=source)
    values = coerce_numbers(data.reset_index(drop=True), rows=rows, source=source)
    candles = validate_candles(dates, values, rows=rows, timeframe=timeframe, source=source)
    HANDLERS[fmt].write(candles.frame, path)
    return path


def update_ohlcv(
    frame: pd.DataFrame, data_dir: str | Path, pair: str, timeframe: str, *, fmt: str
) -> tuple[Path, int]:
    """:func:`write_ohlcv` of ``frame`` merged with the candles the pair's file in
    ``data_dir`` already holds (a candle of ``frame`` wins at the same open time): a
    download of one day into a file of years had replaced the years. Returns the path
    and the number of candles written. Raises DataError when ``data_dir`` holds the
    pair's candles in another format (a second file made every reader refuse the
    directory) or the file there is invalid; nothing is written then."""
    directory = Path(data_dir)
    target = directory / ohlcv_filename(pair, timeframe, fmt)
    held = [directory / ohlcv_filename(pair, timeframe, f) for f in HANDLERS]
    other = [p for p in held if p.is_file() and p != target]
    if other:
        raise DataError(
            f"already holds {pair} {timeframe} as {other[0].name}: download with its "
            f"format, or move it (two files of one pair make the directory unreadable)",
            path=directory,
        )
    if target.is_file() and not frame.empty:
        old = read_ohlcv_file(target, pair=pair, timeframe=timeframe).frame
        merged = pd.concat([old, frame])
        frame = merged[~merged.index.duplicated(keep="last")].sort_index()
    elif target.is_file():
        frame = read_ohlcv_file(target, pair=pair, timeframe=timeframe).frame
    return write_ohlcv(frame, directory, pair, timeframe, fmt=fmt), len(frame)

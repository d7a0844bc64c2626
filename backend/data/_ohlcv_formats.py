"""OHLCV file handlers, one per format (freqtrade's ``IDataHandler`` pattern).

The base class :class:`OHLCVHandler` owns validation and atomic writes; subclasses only
turn bytes into raw columns and a canonical frame into bytes.
"""

from __future__ import annotations

import gzip
import json
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np
import pandas as pd

from backend.data._candles import (
    OHLCV_COLUMNS,
    VALUE_COLUMNS,
    coerce_dates,
    coerce_numbers,
    timeframe_seconds,
    validate_candles,
)
from backend.data._csvio import read_csv_table
from backend.data.models import OHLCVFrame
from backend.errors import DataError
from backend.files import write_atomic


@dataclass(frozen=True)
class RawCandles:
    """Columns as stored in a file, before validation; ``rows`` = line of each record."""

    dates: pd.Series
    values: pd.DataFrame
    rows: np.ndarray


class OHLCVHandler(ABC):
    """Read/write one OHLCV file format; reading always validates (see ``validate_candles``)."""

    fmt: ClassVar[str]

    def read(self, path: Path, *, pair: str, timeframe: str) -> OHLCVFrame:
        """Load and validate ``path``; raises DataError (file, row, field) on bad content."""
        timeframe_seconds(timeframe)
        raw = self._read_raw(path)
        dates = coerce_dates(raw.dates, rows=raw.rows, source=path)
        values = coerce_numbers(raw.values, rows=raw.rows, source=path)
        candles = validate_candles(dates, values, rows=raw.rows, timeframe=timeframe, source=path)
        return OHLCVFrame(
            pair=pair,
            timeframe=timeframe,
            frame=candles.frame,
            gaps=candles.gaps,
            repairs=candles.repairs,
            source=path,
        )

    def write(self, frame: pd.DataFrame, path: Path) -> None:
        """Write a canonical frame atomically (:func:`backend.files.write_atomic`).
        Raises :class:`DataError` naming the file when it cannot be written."""
        write_atomic(path, lambda tmp: self._write_raw(frame, tmp), what="OHLCV file")

    @abstractmethod
    def _read_raw(self, path: Path) -> RawCandles:
        """Raw ``date`` column and value columns of ``path`` (DataError if unreadable)."""

    @abstractmethod
    def _write_raw(self, frame: pd.DataFrame, path: Path) -> None:
        """Serialise a canonical frame to ``path``."""


class CsvHandler(OHLCVHandler):
    """``date,open,high,low,close,volume`` text, ``date`` as ``2020-09-20T00:00:00Z``."""

    fmt = "csv"

    def _read_raw(self, path: Path) -> RawCandles:
        table = read_csv_table(path, required=OHLCV_COLUMNS, exact=True)
        return RawCandles(
            dates=table.frame["date"],
            values=table.frame[list(VALUE_COLUMNS)],
            rows=table.lines,
        )

    def _write_raw(self, frame: pd.DataFrame, path: Path) -> None:
        path.write_bytes(self._encode(frame))

    @staticmethod
    def _encode(frame: pd.DataFrame) -> bytes:
        index = pd.DatetimeIndex(frame.index).tz_convert("UTC")
        out = pd.DataFrame({"date": index.strftime("%Y-%m-%dT%H:%M:%SZ")})
        for column in VALUE_COLUMNS:  # shortest round-trip repr, "11056.0" -> "11056"
            text = frame[column].astype("float64").map(repr).to_numpy()
            out[column] = pd.Series(text).str.replace(r"\.0$", "", regex=True)
        return out.to_csv(index=False, lineterminator="\n").encode("utf-8")


class CsvGzHandler(CsvHandler):
    """Gzip-compressed CSV (the format of the shared Binance files)."""

    fmt = "csv.gz"

    def _write_raw(self, frame: pd.DataFrame, path: Path) -> None:
        path.write_bytes(gzip.compress(self._encode(frame), mtime=0))


class _ArrowHandler(OHLCVHandler):
    """Columnar formats: a ``date`` column (datetime64 UTC or epoch) and the value columns.

    Their records have no line numbers: errors give ``row`` = record position + 2, i.e. the
    line the record would have in a CSV export with a header.
    """

    def _read_raw(self, path: Path) -> RawCandles:
        if not path.is_file():
            raise DataError("file not found", path=path)
        if path.stat().st_size == 0:
            raise DataError("file is empty", path=path, row=1)
        try:
            table = self._load(path)
        except DataError:
            raise
        except Exception as err:  # pyarrow raises many unrelated types for corrupt files
            raise DataError(f"cannot read {self.fmt} file: {err}", path=path) from None
        if "date" not in table.columns and table.index.name == "date":
            table = table.reset_index()
        columns = [str(c) for c in table.columns]
        missing = [c for c in OHLCV_COLUMNS if c not in columns]
        unexpected = [c for c in columns if c not in OHLCV_COLUMNS]
        if missing or unexpected:
            raise DataError(
                f"missing column(s) {missing}, unexpected column(s) {unexpected} "
                f"(expected {', '.join(OHLCV_COLUMNS)})",
                path=path,
                row=1,
                field=(missing or unexpected)[0],
            )
        if table.empty:
            raise DataError("no data rows", path=path, row=2)
        return RawCandles(
            dates=table["date"].reset_index(drop=True),
            values=table[list(VALUE_COLUMNS)].reset_index(drop=True),
            rows=np.arange(len(table), dtype=np.int64) + 2,
        )

    @staticmethod
    def _columns(frame: pd.DataFrame) -> pd.DataFrame:
        out = frame[list(VALUE_COLUMNS)].astype("float64").reset_index()
        out["date"] = pd.DatetimeIndex(out["date"]).tz_convert("UTC").as_unit("ns")
        return out[list(OHLCV_COLUMNS)]

    @abstractmethod
    def _load(self, path: Path) -> pd.DataFrame:
        """Read the file with pandas/pyarrow."""


class FeatherHandler(_ArrowHandler):
    """Apache Arrow IPC (freqtrade's default ``feather`` data format)."""

    fmt = "feather"

    def _load(self, path: Path) -> pd.DataFrame:
        return pd.read_feather(path)

    def _write_raw(self, frame: pd.DataFrame, path: Path) -> None:
        self._columns(frame).to_feather(path)


class ParquetHandler(_ArrowHandler):
    """Apache Parquet."""

    fmt = "parquet"

    def _load(self, path: Path) -> pd.DataFrame:
        return pd.read_parquet(path)

    def _write_raw(self, frame: pd.DataFrame, path: Path) -> None:
        self._columns(frame).to_parquet(path, index=False)


class JsonHandler(_ArrowHandler):
    """freqtrade's ``json`` data format: one JSON array of ``[date, open, high, low, close,
    volume]`` rows, ``date`` in ms since the epoch (UTC). Errors name ``row`` = the row's
    position + 2, as for the columnar formats."""

    fmt = "json"

    def _load(self, path: Path) -> pd.DataFrame:
        rows = json.loads(self._bytes(path))
        if not isinstance(rows, list):
            raise DataError("expected a JSON array of [date, o, h, l, c, v] rows", path=path)
        for i, row in enumerate(rows):
            if not isinstance(row, list) or len(row) != len(OHLCV_COLUMNS):
                raise DataError(
                    f"expected [date, open, high, low, close, volume], got {str(row)[:80]}",
                    path=path,
                    row=i + 2,
                )
            for name, value in zip(OHLCV_COLUMNS, row, strict=True):
                if isinstance(value, bool):  # JSON true/false would read as 1.0/0.0
                    raise DataError(f"not a number: {value!r}", path=path, row=i + 2, field=name)
        return pd.DataFrame(rows, columns=list(OHLCV_COLUMNS))

    def _bytes(self, path: Path) -> bytes:
        return path.read_bytes()

    def _write_raw(self, frame: pd.DataFrame, path: Path) -> None:
        path.write_bytes(self._encode(frame))

    @staticmethod
    def _encode(frame: pd.DataFrame) -> bytes:
        out = _ArrowHandler._columns(frame)
        ms = pd.DatetimeIndex(out["date"]).as_unit("ms").asi8.tolist()
        values = out[list(VALUE_COLUMNS)].to_numpy(dtype="float64").tolist()
        rows = [[t, *v] for t, v in zip(ms, values, strict=True)]
        return json.dumps(rows, separators=(",", ":")).encode("utf-8")


class JsonGzHandler(JsonHandler):
    """Gzip-compressed :class:`JsonHandler` (freqtrade's ``jsongz``: ``.json.gz`` files)."""

    fmt = "json.gz"

    def _bytes(self, path: Path) -> bytes:
        return gzip.decompress(path.read_bytes())

    def _write_raw(self, frame: pd.DataFrame, path: Path) -> None:
        path.write_bytes(gzip.compress(self._encode(frame), mtime=0))


HANDLERS: dict[str, OHLCVHandler] = {
    handler.fmt: handler
    for handler in (
        CsvGzHandler(),
        CsvHandler(),
        FeatherHandler(),
        ParquetHandler(),
        JsonGzHandler(),
        JsonHandler(),
    )
}
"""Handlers by file-name suffix, in the order :func:`find_ohlcv_file` looks for them."""


def handler_for(path: Path) -> OHLCVHandler:
    """The handler whose suffix ``path`` ends with (DataError listing formats otherwise)."""
    name = path.name
    for fmt, handler in HANDLERS.items():
        if name.endswith("." + fmt):
            return handler
    raise DataError(
        f"unsupported OHLCV file type (expected one of: {', '.join('.' + f for f in HANDLERS)})",
        path=path,
    )

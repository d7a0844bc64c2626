"""Shared CSV plumbing: bytes -> text -> an all-string pandas table with file line numbers.

Every loader goes through :func:`read_csv_table`, so a missing file, a truncated gzip, an
undecodable byte or a malformed line becomes a :class:`~backend.errors.DataError` naming
the file and the 1-based line (header = line 1), never a raw gzip/pandas/Unicode error.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import io
import re
import warnings
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from backend.errors import DataError

_PARSER_LINE = re.compile(r"line (\d+)")


@dataclass(frozen=True)
class CsvTable:
    """Cells of a CSV file as strings (``""`` for empty), with the line each row starts on."""

    path: Path
    frame: pd.DataFrame
    lines: np.ndarray  # int64, same length as frame: 1-based line number of each row

    def line(self, position: int) -> int:
        """Line number of the row at ``position`` (0-based position in ``frame``)."""
        return int(self.lines[position])


def _longer_than_header(text: str) -> tuple[int, int | None, int]:
    """``(header fields, 1-based line, its fields)`` of the first line with more fields
    than the header (``None``, 0 when there is none: the caller's message still holds)."""
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        width = len(next(reader, []))
        for fields in reader:
            if len(fields) > width:
                return width, reader.line_num, len(fields)
    except csv.Error:
        return 0, None, 0
    return width, None, 0


def _shorter_than_header(text: str) -> tuple[int, int | None, int]:
    """``(header fields, 1-based line, its fields)`` of the first non-blank record with
    fewer fields than the header (``None``, 0 when there is none). pandas pads such a row
    with empty cells, so a row cut short (a file truncated mid-line, a field lost) would
    otherwise load as a row of empty fields."""
    if '"' not in text:  # no quoting: a record is a line (~30 ms for 44k rows, half of csv.reader)
        if "\r" in text:
            text = text.replace("\r\n", "\n").replace("\r", "\n")
        lines = text.split("\n")
        commas = [line.count(",") for line in lines]
        width = commas[0] + 1
        for number, count in enumerate(commas[1:], start=2):
            if count + 1 < width and lines[number - 1].replace(",", "").strip():
                return width, number, count + 1
        return width, None, 0
    reader = csv.reader(io.StringIO(text, newline=""))
    width = 0
    try:
        width = len(next(reader, []))
        end = 1
        for fields in reader:
            start, end = end + 1, reader.line_num
            if len(fields) < width and any(field.strip() for field in fields):
                return width, start, len(fields)
    except csv.Error:  # pandas parsed it: leave the verdict to the loaders' own checks
        return width, None, 0
    return width, None, 0


def _unterminated_quote_line(text: str) -> int:
    """1-based line where the last record starts: a quote never closed swallows the rest
    of the file into that record (pandas names it by its 0-based record number)."""
    reader = csv.reader(io.StringIO(text, newline=""))  # "\r" line ends too, as pandas
    start, end = 1, 0
    try:
        for _ in reader:
            start, end = end + 1, reader.line_num
    except csv.Error:  # where csv and pandas part ways: the line the reader got to
        return end + 1
    return start


def read_text(path: Path) -> str:
    """Read ``path`` as UTF-8 text (optional BOM), gunzipping ``*.gz`` files in memory.

    Raises DataError for a missing/unreadable file, a truncated or corrupt gzip stream, or
    a byte sequence that is not UTF-8 (with the line it is on).
    """
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise DataError("file not found", path=path) from None
    except OSError as err:
        raise DataError(f"cannot read file: {err.strerror or err}", path=path) from None
    if path.name.endswith(".gz"):
        try:
            data = gzip.decompress(data)
        except (EOFError, OSError, zlib.error) as err:
            raise DataError(f"truncated or corrupt gzip file ({err})", path=path) from None
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = data.count(b"\n", 0, err.start) + 1
        raise DataError(
            f"not valid UTF-8 (byte 0x{data[err.start]:02x} at offset {err.start})",
            path=path,
            row=line,
        ) from None


def read_csv_table(
    path: Path, *, required: Sequence[str], exact: bool = False, allow_empty: bool = False
) -> CsvTable:
    """Parse a CSV file into strings, checking the header.

    ``required`` columns must all be present (``exact``: and no others). Blank lines are
    skipped. Raises DataError for an empty file, a header without rows (unless
    ``allow_empty``: an export with no rows yet is then an empty table), missing or
    unexpected columns (named) or a line with too many or too few fields (with its line
    number: a row cut short is refused, not padded with empty cells).
    """
    text = read_text(path)
    if not text.strip():
        raise DataError("file is empty", path=path, row=1)
    try:
        with warnings.catch_warnings():
            # every data line one field longer than the header: pandas made the first
            # field an index (a column silently dropped, or all of them shifted by one)
            warnings.simplefilter("error", pd.errors.ParserWarning)
            frame = pd.read_csv(
                io.StringIO(text),
                dtype=str,
                keep_default_na=False,
                skip_blank_lines=False,
                index_col=False,
            )
    except pd.errors.ParserWarning:
        width, row, fields = _longer_than_header(text)
        raise DataError(
            f"malformed CSV line: expected {width} fields, saw {fields}", path=path, row=row
        ) from None
    except pd.errors.ParserError as err:
        if "EOF inside string" in str(err):
            raise DataError(
                'malformed CSV line: a quote (") opened here is never closed',
                path=path,
                row=_unterminated_quote_line(text),
            ) from None
        match = _PARSER_LINE.search(str(err))
        row = int(match.group(1)) if match else None
        raise DataError(f"malformed CSV line: {err}".strip(), path=path, row=row) from None
    except (ValueError, pd.errors.EmptyDataError) as err:  # pragma: no cover - defensive
        raise DataError(f"cannot parse CSV: {err}", path=path) from None
    frame.columns = pd.Index([str(c).strip() for c in frame.columns])
    columns = list(frame.columns)
    missing = [c for c in required if c not in columns]
    unexpected = [c for c in columns if c not in required] if exact else []
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"missing column(s) {', '.join(missing)}")
        if unexpected:
            parts.append(f"unexpected column(s) {', '.join(unexpected)}")
        raise DataError(
            f"{'; '.join(parts)} (expected {', '.join(required)}; found {', '.join(columns)})",
            path=path,
            row=1,
            field=(missing or unexpected)[0],
        )
    width, short, fields = _shorter_than_header(text)
    if short is not None:
        raise DataError(
            f"missing value: the line has {fields} of the header's {width} fields (cut short?)",
            path=path,
            row=short,
            field=columns[fields] if fields < len(columns) else None,
        )
    # A quoted field may span lines: each row starts after the newlines of the rows before.
    newlines = np.zeros(len(frame), dtype=np.int64)
    if '"' in text:
        for column in frame.columns:
            newlines += frame[column].str.count("\n").to_numpy(dtype=np.int64)
    lines = (
        2 + np.arange(len(frame), dtype=np.int64) + np.concatenate(([0], np.cumsum(newlines)))[:-1]
    )
    blank = (frame == "").all(axis=1).to_numpy()
    if blank.any():
        frame = frame.loc[~blank].reset_index(drop=True)
        lines = lines[~blank]
    if frame.empty and not allow_empty:
        raise DataError("header but no data rows", path=path, row=2)
    return CsvTable(path=path, frame=frame, lines=lines)


def first_bad(mask: pd.Series | np.ndarray) -> int | None:
    """Position of the first ``True`` in a boolean mask, or None."""
    values = np.asarray(mask, dtype=bool)
    if not values.any():
        return None
    return int(np.argmax(values))


def require_non_empty(table: CsvTable, columns: Iterable[str]) -> None:
    """Raise DataError at the first empty cell of ``columns``."""
    for column in columns:
        pos = first_bad(table.frame[column].str.strip() == "")
        if pos is not None:
            raise DataError("missing value", path=table.path, row=table.line(pos), field=column)


def parse_numbers(table: CsvTable, column: str) -> pd.Series:
    """Column as finite float64; DataError at the first empty, non-numeric or NaN/inf cell."""
    text = table.frame[column].str.strip()
    values = pd.to_numeric(text, errors="coerce").astype("float64")
    bad = ~np.isfinite(values.to_numpy())
    pos = first_bad(bad)
    if pos is not None:
        raw = text.iloc[pos]
        reason = "missing value" if raw == "" else f"not a finite number: {raw[:40]!r}"
        raise DataError(reason, path=table.path, row=table.line(pos), field=column)
    return values


def end_of_minute(stamps: pd.Series) -> pd.Series:
    """Minute-precision ``stamps`` moved to the end of their minute: an event stamped
    ``04:00`` may have happened at ``04:00:59``, so it is surely known only at ``04:01``,
    and no as-of cut (a bar closing at ``04:00``) may read it before (headlines, fills)."""
    return stamps + pd.Timedelta(minutes=1)


def parse_dates(table: CsvTable, column: str, *, fmt: str, expected: str) -> pd.Series:
    """Column parsed with ``strftime`` format ``fmt`` as naive datetimes (the caller sets
    the zone); DataError at the first empty or unparseable cell, saying ``expected``, or
    at the first date outside 1678..2261 (what ``datetime64[ns]`` holds: a year 3024 had
    ended in an internal ``OutOfBoundsDatetime``)."""
    text = table.frame[column].str.strip()
    parsed = pd.to_datetime(text, format=fmt, errors="coerce")
    pos = first_bad(parsed.isna())
    if pos is not None:
        raw = text.iloc[pos]
        reason = "missing value" if raw == "" else f"unparseable date {raw!r} (expected {expected})"
        raise DataError(reason, path=table.path, row=table.line(pos), field=column)
    pos = first_bad(~in_ns_range(parsed))
    if pos is not None:
        raise DataError(
            f"date {text.iloc[pos]!r} is out of range (years 1678..2261)",
            path=table.path, row=table.line(pos), field=column,
        )  # fmt: skip
    return parsed


def in_ns_range(dates: pd.Series) -> pd.Series:
    """Whether each of ``dates`` (parsed, any unit) lies in the years ``datetime64[ns]``
    holds (1678..2261: a margin inside its 1677-09-21..2262-04-11)."""
    years = dates.dt.year
    inside: pd.Series = (years >= 1678) & (years <= 2261)
    return inside


def stable_ids(keys: pd.DataFrame, *, prefix: str = "") -> list[str]:
    """Stable ids: sha256 of each row's key cells plus an occurrence counter.

    The counter (0 for the first occurrence of a key in file order, 1 for the next exact
    duplicate, ...) keeps ids unique while re-importing the same or an extended export
    yields the same ids. Returns 32 hex characters (128 bits) per row.
    """
    occurrence = keys.groupby(list(keys.columns), sort=False, dropna=False).cumcount()
    ids = []
    for row, count in zip(keys.itertuples(index=False, name=None), occurrence, strict=True):
        payload = "\x1f".join([*map(str, row), str(count)])
        ids.append(prefix + hashlib.sha256(payload.encode("utf-8")).hexdigest()[:32])
    return ids

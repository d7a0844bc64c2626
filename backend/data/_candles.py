"""Candle validation shared by the file loaders and the exchange downloader.

Input: raw dates (ISO-8601 strings, epoch numbers or datetimes) and raw numbers, with the
row each came from. Output: the canonical frame (UTC ``DatetimeIndex`` ``date`` of candle
open times, strictly increasing; float64 ``open, high, low, close, volume``), the gaps, and
notes of the safe repairs applied (stable sort; exact duplicate rows dropped).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import ccxt
import numpy as np
import pandas as pd

from backend.data._csvio import in_ns_range
from backend.data.models import Gap
from backend.errors import DataError

logger = logging.getLogger("backend.data")

OHLCV_COLUMNS = ("date", "open", "high", "low", "close", "volume")
VALUE_COLUMNS = ("open", "high", "low", "close", "volume")
PRICE_COLUMNS = ("open", "high", "low", "close")

_NS_PER_S = 1_000_000_000
_MS_THRESHOLD = 1e11  # epoch numbers >= this are milliseconds (1973-03-03 on), else seconds
_MAX_EPOCH_MS = 9.2e12  # datetime64[ns] ends in 2262
_MONDAY_OFFSET_S = 4 * 86_400  # 1970-01-01 was a Thursday; weekly candles open on Mondays


def timeframe_seconds(timeframe: str) -> int:
    """Length of a ccxt/freqtrade timeframe (``1m``, ``5m``, ``1h``, ``4h``, ``1d``, ``1w``,
    ``1M``...) in SECONDS, via ``ccxt.Exchange.parse_timeframe`` (so ``1M`` = 30 days, ccxt's
    convention; alignment and gaps of ``M``/``y`` candles use calendar months/years).

    Raises DataError (field ``timeframe``) for an unparseable or non-positive timeframe.
    """
    try:
        seconds = int(ccxt.Exchange.parse_timeframe(timeframe))
    except (ValueError, IndexError, TypeError, ccxt.BaseError):
        seconds = 0
    if seconds <= 0:
        raise DataError(
            f"invalid timeframe {timeframe!r} (expected e.g. 1m, 15m, 1h, 4h, 1d, 1w)",
            field="timeframe",
        )
    return seconds


def grid_origin(timeframe: str) -> datetime:
    """The UTC open time the candles of a fixed-length ``timeframe`` count from (the
    grid of :func:`period_steps`): the epoch, or Monday 1970-01-05 for weeks (Binance's
    weekly candles open on Mondays; a paper job counted weeks from the epoch, a
    Thursday, and decided each weekly bar three days late)."""
    timeframe_seconds(timeframe)  # a bad one is a DataError here too
    offset = _MONDAY_OFFSET_S if timeframe.endswith("w") else 0
    return datetime.fromtimestamp(offset, tz=UTC)


def empty_ohlcv() -> pd.DataFrame:
    """An empty frame of the canonical shape."""
    index = pd.DatetimeIndex([], dtype="datetime64[ns, UTC]", name="date")
    return pd.DataFrame({c: pd.Series([], dtype="float64") for c in VALUE_COLUMNS}, index=index)


def period_steps(dates: pd.DatetimeIndex, timeframe: str) -> tuple[np.ndarray, np.ndarray]:
    """``(steps, aligned)``: candle ordinal of each open time and whether it is on the grid.

    Fixed-length timeframes count from the epoch (weeks from Monday 1970-01-05); ``M``/``y``
    count calendar months/years. Consecutive candles differ by exactly one step.
    """
    seconds = timeframe_seconds(timeframe)
    unit, amount = timeframe[-1], int(timeframe[:-1])
    if unit in ("M", "y"):
        midnight = np.asarray(dates == dates.normalize())
        if unit == "M":
            ordinal = np.asarray(dates.year * 12 + dates.month - 1, dtype=np.int64)
            on_start = midnight & np.asarray(dates.day == 1)
        else:
            ordinal = np.asarray(dates.year, dtype=np.int64)
            on_start = midnight & np.asarray((dates.month == 1) & (dates.day == 1))
        return ordinal // amount, on_start & (ordinal % amount == 0)
    ns = dates.as_unit("ns").asi8 - (_MONDAY_OFFSET_S * _NS_PER_S if unit == "w" else 0)
    period = seconds * _NS_PER_S
    return ns // period, ns % period == 0


def close_times(dates: pd.DatetimeIndex, timeframe: str) -> pd.DatetimeIndex:
    """Close time (= next open time) of candles opening at ``dates`` (calendar-aware)."""
    seconds = timeframe_seconds(timeframe)
    unit, amount = timeframe[-1], int(timeframe[:-1])
    if unit == "M":
        return dates + pd.DateOffset(months=amount)
    if unit == "y":
        return dates + pd.DateOffset(years=amount)
    return dates + pd.Timedelta(seconds=seconds)


def find_gaps(frame: pd.DataFrame, timeframe: str) -> list[Gap]:
    """Holes in a candle frame indexed by UTC open time (the canonical shape).

    Returns one :class:`Gap` per run of missing candles (start/end = open times of the
    candles around the hole, ``missing`` = candles absent). Never fills anything. Raises
    DataError if the index is not a ``DatetimeIndex``.
    """
    if not isinstance(frame.index, pd.DatetimeIndex):
        raise DataError("frame index must be a DatetimeIndex of candle open times", field="date")
    index = frame.index
    if index.tz is None:
        index = index.tz_localize("UTC")
    index = index.tz_convert("UTC").unique().sort_values()
    steps, _ = period_steps(index, timeframe)
    jumps = np.diff(steps)
    gaps = []
    for pos in np.flatnonzero(jumps > 1):
        gaps.append(
            Gap(
                start=index[int(pos)].to_pydatetime(),
                end=index[int(pos) + 1].to_pydatetime(),
                missing=int(jumps[pos] - 1),
            )
        )
    return gaps


_ZONE = r"(?:Z|[T ][\d:.]+[+-]\d{2}(?::?\d{2})?)$"
"""The time zone an ISO-8601 time ends with (``Z``, ``+02:00``, ``-0500``, ``+02``; after
a time: ``2024-10-29`` ends in no zone)."""


def coerce_dates(raw: pd.Series, *, rows: np.ndarray, source: str | Path) -> pd.Series:
    """Parse candle open times to ``datetime64[ns, UTC]``.

    Accepts datetimes (naive = UTC), ISO-8601 strings (``2020-09-20T00:00:00Z``; no offset =
    UTC; offsets converted) or epoch numbers: values >= 1e11 are milliseconds, smaller ones
    seconds (decided per value by magnitude). Raises DataError at the first bad row, and
    at the first string date that has a time zone where the first has none, or the other
    way round (a row without one among ``Z`` rows had been read as UTC without a word).
    """
    if isinstance(raw.dtype, pd.DatetimeTZDtype) or pd.api.types.is_datetime64_dtype(raw):
        dates = pd.Series(pd.DatetimeIndex(raw))
        dates = dates.dt.tz_localize("UTC") if dates.dt.tz is None else dates.dt.tz_convert("UTC")
        _in_range(dates, rows=rows, source=source)
        return _no_missing(dates.dt.as_unit("ns"), rows=rows, source=source)
    text = None if pd.api.types.is_numeric_dtype(raw) else raw.astype(str).str.strip()
    if text is not None and bool((text == "").any()):
        pos = int(np.argmax((text == "").to_numpy()))
        raise DataError("missing value", path=source, row=int(rows[pos]), field="date")
    numbers = pd.Series(pd.to_numeric(raw if text is None else text, errors="coerce"))
    if bool(numbers.notna().all()):
        values = numbers.to_numpy(dtype="float64")
        seconds = values < _MS_THRESHOLD  # * 1e9 must fit int64 (9.2e9 s is 2262)
        bad = ~np.isfinite(values) | (values < 0) | (values >= _MAX_EPOCH_MS)
        bad |= seconds & (values >= _MAX_EPOCH_MS / 1000)
        if bad.any():
            pos = int(np.argmax(bad))
            raise DataError(
                f"epoch date out of range: {values[pos]!r}",
                path=source,
                row=int(rows[pos]),
                field="date",
            )
        ns = np.where(values >= _MS_THRESHOLD, values * 1e6, values * 1e9).round()
        return pd.Series(pd.to_datetime(ns.astype(np.int64), unit="ns", utc=True))
    if text is None:  # a numeric column with NaN holes
        pos = int(np.argmax(numbers.isna().to_numpy()))
        raise DataError("missing value", path=source, row=int(rows[pos]), field="date")
    zoned = text.str.contains(_ZONE, regex=True).to_numpy()
    if zoned.any() and not zoned.all():  # "no offset = UTC" is a file's choice, not a row's
        pos = int(np.argmax(zoned != zoned[0]))
        raise DataError(
            f"date {text.iloc[pos]!r} {'has' if zoned[pos] else 'has no'} time zone, "
            f"unlike the file's first date {text.iloc[0]!r}",
            path=source,
            row=int(rows[pos]),
            field="date",
        )
    dates = pd.to_datetime(text, format="ISO8601", utc=True, errors="coerce")
    bad = dates.isna().to_numpy()
    if bad.any():
        pos = int(np.argmax(bad))
        shown = "" if pd.isna(text.iloc[pos]) else str(text.iloc[pos])
        reason = "missing value" if shown in ("", "nan", "None") else f"unparseable date {shown!r}"
        raise DataError(reason, path=source, row=int(rows[pos]), field="date")
    _in_range(dates, rows=rows, source=source)
    return dates.dt.as_unit("ns").reset_index(drop=True)


def _in_range(dates: pd.Series, *, rows: np.ndarray, source: str | Path) -> None:
    """DataError at the first date ``datetime64[ns]`` cannot hold (:func:`in_ns_range`)."""
    bad = (~in_ns_range(dates) & dates.notna()).to_numpy()
    if bad.any():
        pos = int(np.argmax(bad))
        raise DataError(
            f"date {dates.iloc[pos]} is out of range (years 1678..2261)",
            path=source, row=int(rows[pos]), field="date",
        )  # fmt: skip


def _no_missing(dates: pd.Series, *, rows: np.ndarray, source: str | Path) -> pd.Series:
    bad = dates.isna().to_numpy()
    if bad.any():
        pos = int(np.argmax(bad))
        raise DataError("missing value", path=source, row=int(rows[pos]), field="date")
    return dates.reset_index(drop=True)


def coerce_numbers(raw: pd.DataFrame, *, rows: np.ndarray, source: str | Path) -> pd.DataFrame:
    """The five value columns as finite float64; DataError at the first bad cell."""
    out = {}
    for column in VALUE_COLUMNS:
        col = raw[column]
        if pd.api.types.is_bool_dtype(col) and len(col):  # numeric to pandas: read as 1.0/0.0
            raise DataError(
                f"not a number: a boolean column ({col.iloc[0]!r})",
                path=source,
                row=int(rows[0]),
                field=column,
            )
        text = None if pd.api.types.is_numeric_dtype(col) else col.astype(str).str.strip()
        values = pd.to_numeric(text if text is not None else col, errors="coerce")
        values = pd.Series(values, dtype="float64").reset_index(drop=True)
        bad = ~np.isfinite(values.to_numpy())
        if bad.any():
            pos = int(np.argmax(bad))
            cell = text.iloc[pos] if text is not None else col.iloc[pos]
            shown = "" if pd.isna(cell) else str(cell)  # a null of a JSON/columnar file
            if shown in ("", "None"):
                reason = "missing value"
            elif shown.lower().lstrip("+-") in ("nan", "inf", "infinity"):
                reason = f"NaN/infinite value {shown!r}"
            else:
                reason = f"not a number: {shown[:40]!r}"
            raise DataError(reason, path=source, row=int(rows[pos]), field=column)
        out[column] = values
    return pd.DataFrame(out)


@dataclass(frozen=True)
class Candles:
    """Validated candles: canonical frame, gaps found, repair notes."""

    frame: pd.DataFrame
    gaps: tuple[Gap, ...]
    repairs: tuple[str, ...]


def validate_candles(
    dates: pd.Series,
    values: pd.DataFrame,
    *,
    rows: np.ndarray,
    timeframe: str,
    source: str | Path,
) -> Candles:
    """Check candle invariants, apply safe repairs, detect gaps.

    ``dates``: ``datetime64[ns, UTC]``; ``values``: finite float64 ``VALUE_COLUMNS``;
    ``rows``: the row (file line) of each entry, for messages. Raises DataError (path, row,
    field) for non-positive prices, negative volume, ``high < low``, ``high < max(open,
    close)``, ``low > min(open, close)``, a time off the timeframe grid, or two candles with
    the same time and different values. Logs repairs at WARNING and gaps at INFO.
    """
    for column in PRICE_COLUMNS:
        _fail_first(values[column] <= 0, "price must be > 0", column, rows, source, values)
    _fail_first(values["volume"] < 0, "volume must be >= 0", "volume", rows, source, values)
    high, low = values["high"], values["low"]
    _fail_first(high < low, "high < low", "high", rows, source, values)
    body_top = values[["open", "close"]].max(axis=1)
    body_bottom = values[["open", "close"]].min(axis=1)
    _fail_first(high < body_top, "high < max(open, close)", "high", rows, source, values)
    _fail_first(low > body_bottom, "low > min(open, close)", "low", rows, source, values)
    index = pd.DatetimeIndex(dates)
    _, aligned = period_steps(index, timeframe)
    if not aligned.all():
        pos = int(np.argmax(~aligned))
        raise DataError(
            f"candle time {index[pos].isoformat()} is not aligned to the {timeframe} timeframe",
            path=source,
            row=int(rows[pos]),
            field="date",
        )

    repairs: list[str] = []
    table = values.assign(date=index, _row=rows).reset_index(drop=True)
    if not table["date"].is_monotonic_increasing:
        moved = int((table["date"].diff() < pd.Timedelta(0)).sum())
        table = table.sort_values("date", kind="stable").reset_index(drop=True)
        repairs.append(f"sorted rows into time order ({moved} were out of order)")
    exact = table.duplicated(subset=list(OHLCV_COLUMNS), keep="first")
    if exact.any():
        table = table.loc[~exact].reset_index(drop=True)
        repairs.append(f"dropped {int(exact.sum())} exact duplicate row(s)")
    clash = table.duplicated(subset="date", keep=False)
    if clash.any():
        _fail_conflict(table.loc[clash], source)
    for note in repairs:
        logger.warning("%s: %s", source, note)

    frame = table.set_index("date")[list(VALUE_COLUMNS)]
    frame.index = pd.DatetimeIndex(frame.index, name="date").as_unit("ns")
    gaps = find_gaps(frame, timeframe)
    if gaps:
        logger.info(
            "%s: %d gap(s), %d missing %s candle(s); first %s -> %s (not filled)",
            source,
            len(gaps),
            sum(g.missing for g in gaps),
            timeframe,
            gaps[0].start.isoformat(),
            gaps[0].end.isoformat(),
        )
    return Candles(frame=frame, gaps=tuple(gaps), repairs=tuple(repairs))


def _fail_first(
    mask: pd.Series,
    reason: str,
    field: str,
    rows: np.ndarray,
    source: str | Path,
    values: pd.DataFrame,
) -> None:
    bad = mask.to_numpy(dtype=bool)
    if bad.any():
        pos = int(np.argmax(bad))
        shown = ", ".join(f"{c}={float(values[c].iloc[pos])!r}" for c in VALUE_COLUMNS)
        raise DataError(f"{reason} ({shown})", path=source, row=int(rows[pos]), field=field)


def _fail_conflict(clashing: pd.DataFrame, source: str | Path) -> None:
    """Raise for the first candle time that occurs with different values."""
    first_time = clashing["date"].iloc[0]
    group = clashing.loc[clashing["date"] == first_time]
    first, second = group.iloc[0], group.iloc[1]
    field = next((c for c in VALUE_COLUMNS if first[c] != second[c]), "date")
    raise DataError(
        f"duplicate candle time {first_time.isoformat()} with different values "
        f"({field} {_plain(first[field])!r} at row {int(first['_row'])} "
        f"vs {_plain(second[field])!r})",
        path=source,
        row=int(second["_row"]),
        field=field,
    )


def _plain(value: object) -> object:
    """A numpy scalar as the Python value it holds (``95.0``, not ``np.float64(95.0)``)."""
    return value.item() if isinstance(value, np.generic) else value

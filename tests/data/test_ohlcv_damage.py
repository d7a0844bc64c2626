"""OHLCV loader: every kind of damaged file gives a DataError with file, row and field."""

from __future__ import annotations

import gzip
import logging
from pathlib import Path

import pandas as pd
import pytest

from backend.data import find_gaps, read_ohlcv_file, timeframe_seconds
from backend.errors import DataError

HEADER = "date,open,high,low,close,volume"
GOOD = [
    "2024-01-01T00:00:00Z,100,110,95,105,12.5",
    "2024-01-01T01:00:00Z,105,106,101,102,3",
    "2024-01-01T02:00:00Z,102,104,100,103,0",
    "2024-01-01T03:00:00Z,103,108,102,107,7.25",
    "2024-01-01T04:00:00Z,107,107,99,100,1",
]


def write(tmp_path: Path, lines: list[str], name: str = "BTC_USDT-1h.csv") -> Path:
    path = tmp_path / name
    data = ("\n".join(lines) + "\n").encode("utf-8")
    path.write_bytes(gzip.compress(data) if name.endswith(".gz") else data)
    return path


def replace(row: int, line: str) -> list[str]:
    """The good file with data row ``row`` (1-based file line, header = 1) replaced."""
    lines = [HEADER, *GOOD]
    lines[row - 1] = line
    return lines


def load(path: Path) -> pd.DataFrame:
    return read_ohlcv_file(path, pair="BTC/USDT", timeframe="1h").frame


def test_good_fixture_loads(tmp_path: Path) -> None:
    frame = load(write(tmp_path, [HEADER, *GOOD]))
    assert len(frame) == 5
    assert frame["close"].tolist() == [105.0, 102.0, 103.0, 107.0, 100.0]


DAMAGE = [
    # (id, lines, row, field, words in the message)
    ("unparseable date", replace(4, "2024-13-45T02:00:00Z,102,104,100,103,0"), 4, "date", "date"),
    ("empty date", replace(3, ",105,106,101,102,3"), 3, "date", "missing"),
    ("empty epoch", [HEADER, "1704067200,1,1,1,1,1", ",1,1,1,1,1"], 3, "date", "missing"),
    ("text in number", replace(3, "2024-01-01T01:00:00Z,105,106,101,abc,3"), 3, "close", "number"),
    ("empty number", replace(5, "2024-01-01T03:00:00Z,103,,102,107,7.25"), 5, "high", "missing"),
    ("NaN", replace(2, "2024-01-01T00:00:00Z,NaN,110,95,105,12.5"), 2, "open", "NaN"),
    # one row without the file's time zone had been read as UTC without a word
    (
        "naive among Z",
        replace(4, "2024-01-01T02:00:00,102,104,100,103,0"),
        4,
        "date",
        "has no time zone",
    ),
    (
        "zoned among naive",
        [HEADER, *(g.replace("Z,", ",", 1) for g in GOOD[:2]), GOOD[2]],
        4,
        "date",
        "has time zone",
    ),
    ("inf", replace(6, "2024-01-01T04:00:00Z,107,inf,99,100,1"), 6, "high", "infinite"),
    ("zero price", replace(4, "2024-01-01T02:00:00Z,102,104,0,103,0"), 4, "low", "> 0"),
    ("negative price", replace(2, "2024-01-01T00:00:00Z,-1,110,95,105,1"), 2, "open", "> 0"),
    ("negative volume", replace(3, "2024-01-01T01:00:00Z,105,106,101,102,-3"), 3, "volume", ">= 0"),
    ("high < low", replace(3, "2024-01-01T01:00:00Z,105,100,106,102,3"), 3, "high", "high < low"),
    ("high < open", replace(5, "2024-01-01T03:00:00Z,109,108,102,107,7"), 5, "high", "max(open"),
    ("low > close", replace(6, "2024-01-01T04:00:00Z,107,107,101,100,1"), 6, "low", "min(open"),
    ("misaligned", replace(4, "2024-01-01T02:30:00Z,102,104,100,103,0"), 4, "date", "aligned"),
    ("short line", replace(4, "2024-01-01T02:00:00Z,102,104,100,103"), 4, "volume", "missing"),
    ("long line", replace(5, "2024-01-01T03:00:00Z,103,108,102,107,7.25,9"), 5, None, "malformed"),
    # every line one field long (a reviewer's): pandas had read the first as an index,
    # dropping a column or shifting them all by one, with no error or the wrong field
    ("every line long", [HEADER, *(g + "," for g in GOOD)], 2, None, "expected 6 fields, saw 7"),
    ("every line led", [HEADER, *("x," + g for g in GOOD)], 2, None, "expected 6 fields, saw 7"),
    # a quote never closed (pandas names the 0-based record: "row 3" was line 4)
    ("open quote", replace(4, '2024-01-01T02:00:00Z,"102,104,100,103,0'), 4, None, "never closed"),
    (
        "open quote, earlier field on two lines",
        [
            HEADER,
            GOOD[0],
            '"2024-01-01T01:00:00Z",105,106,101,102,"3',
            '"',
            GOOD[2],
            '2024-01-01T03:00:00Z,"103,108,102,107,7.25',
            GOOD[4],
        ],
        6,
        None,
        "never closed",
    ),
    ("header only", [HEADER], 2, None, "no data rows"),
    (
        "missing column",
        [HEADER.removesuffix(",volume"), *(g.rsplit(",", 1)[0] for g in GOOD)],
        1,
        "volume",
        "volume",
    ),
    ("missing name", [HEADER.removesuffix(",volume"), *GOOD], 2, None, "expected 5 fields"),
    ("wrong column", ["timestamp,open,high,low,close,volume", *GOOD], 1, "date", "timestamp"),
    ("extra column", [HEADER + ",trades", *(g + ",5" for g in GOOD)], 1, "trades", "unexpected"),
    (
        "conflicting duplicate",
        [HEADER, *GOOD[:3], "2024-01-01T01:00:00Z,105,106,101,104,3", *GOOD[3:]],
        5,
        "close",
        "different values",
    ),
]


@pytest.mark.parametrize(
    ("lines", "row", "field", "words"), [d[1:] for d in DAMAGE], ids=[d[0] for d in DAMAGE]
)
def test_damaged_csv_raises_data_error_with_location(
    tmp_path: Path, lines: list[str], row: int, field: str | None, words: str
) -> None:
    path = write(tmp_path, lines)
    with pytest.raises(DataError) as caught:
        load(path)
    err = caught.value
    assert err.path == str(path)
    assert err.row == row
    assert err.field == field
    assert words.lower() in str(err).lower()
    assert str(path) in str(err) and f"row {row}" in str(err)


def test_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "BTC_USDT-1h.csv"
    path.write_bytes(b"")
    with pytest.raises(DataError, match="empty") as caught:
        load(path)
    assert caught.value.path == str(path)


def test_truncated_gzip_names_the_file(tmp_path: Path) -> None:
    good = write(tmp_path, [HEADER, *GOOD], name="BTC_USDT-1h.csv.gz")
    data = good.read_bytes()
    good.write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match="gzip") as caught:
        load(good)
    assert caught.value.path == str(good)


def test_not_gzip_at_all(tmp_path: Path) -> None:
    path = tmp_path / "BTC_USDT-1h.csv.gz"
    path.write_bytes(("\n".join([HEADER, *GOOD])).encode())
    with pytest.raises(DataError, match="gzip"):
        load(path)


def test_undecodable_byte_gives_its_line(tmp_path: Path) -> None:
    path = tmp_path / "BTC_USDT-1h.csv"
    lines = [HEADER, *GOOD]
    raw = "\n".join(lines).encode()
    bad_line_start = raw.index(GOOD[3].encode())
    path.write_bytes(raw[: bad_line_start + 5] + b"\xff\xfe" + raw[bad_line_start + 5 :])
    with pytest.raises(DataError, match="UTF-8") as caught:
        load(path)
    assert caught.value.row == 5


def test_missing_file_and_unknown_suffix(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="not found"):
        load(tmp_path / "BTC_USDT-1h.csv")
    other = tmp_path / "BTC_USDT-1h.h5"
    other.write_text("[]")
    with pytest.raises(DataError, match="unsupported"):
        load(other)


def test_freqtrade_json_rows_and_their_errors(tmp_path: Path) -> None:
    """freqtrade's json format: [[ms, open, high, low, close, volume], ...]."""
    path = tmp_path / "BTC_USDT-1h.json"
    path.write_text("[[1600560000000,11000,11100,10900,11050,12.5],"
                    "[1600563600000,11050,11200,11000,11150,3]]")  # fmt: skip
    frame = load(path)
    assert list(frame.index.strftime("%Y-%m-%dT%H:%MZ")) == [
        "2020-09-20T00:00Z",
        "2020-09-20T01:00Z",
    ]
    assert frame["close"].tolist() == [11050.0, 11150.0]
    path.write_text("[[1600560000000,11000,11100,10900,11050,12.5],[1600563600000,11050]]")
    with pytest.raises(DataError, match=r"expected \[date, open") as caught:
        load(path)
    assert caught.value.row == 3
    path.write_text("[[1600560000000,null,11,9,10,1]]")  # a column of nulls only
    with pytest.raises(DataError, match="missing value") as caught:
        load(path)
    assert (caught.value.row, caught.value.field) == (2, "open")
    path.write_text(
        "[[1600560000000,11000,11100,10900,11050,1],[1600563600000,11050,11200,11000,null,3]]"
    )  # a null among numbers
    with pytest.raises(DataError, match="missing value") as caught:
        load(path)
    assert (caught.value.row, caught.value.field) == (3, "close")
    path.write_text("[[1600560000000,11000,11100,10900,11050,true]]")
    with pytest.raises(DataError, match="not a number: True") as caught:
        load(path)
    assert caught.value.field == "volume"
    path.write_text("[[null,11,12,9,10,1]]")
    with pytest.raises(DataError, match="missing value") as caught:
        load(path)
    assert caught.value.field == "date"
    path.write_text('{"date": 1}')
    with pytest.raises(DataError, match="JSON array"):
        load(path)
    path.write_text("[[1600560000000,11000,")
    with pytest.raises(DataError, match="cannot read json file"):
        load(path)


def test_invalid_timeframe(tmp_path: Path) -> None:
    path = write(tmp_path, [HEADER, *GOOD])
    for bad in ("", "h", "0h", "1x", "abc"):
        with pytest.raises(DataError, match="timeframe") as caught:
            read_ohlcv_file(path, pair="BTC/USDT", timeframe=bad)
        assert caught.value.field == "timeframe"
    assert timeframe_seconds("4h") == 14_400 and timeframe_seconds("1w") == 604_800


def test_unsorted_rows_are_sorted_and_logged(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = write(tmp_path, [HEADER, GOOD[2], GOOD[0], GOOD[4], GOOD[1], GOOD[3]])
    with caplog.at_level(logging.WARNING, logger="backend.data"):
        loaded = read_ohlcv_file(path, pair="BTC/USDT", timeframe="1h")
    assert loaded.frame.equals(load(write(tmp_path, [HEADER, *GOOD], name="good.csv")))
    assert len(loaded.repairs) == 1 and "sorted" in loaded.repairs[0]
    assert any("sorted" in r.getMessage() for r in caplog.records)


def test_exact_duplicates_are_dropped_and_recorded(tmp_path: Path) -> None:
    lines = [HEADER, GOOD[0], GOOD[1], GOOD[1], GOOD[2], GOOD[3], GOOD[3], GOOD[4]]
    loaded = read_ohlcv_file(write(tmp_path, lines), pair="BTC/USDT", timeframe="1h")
    assert len(loaded.frame) == 5
    assert loaded.repairs == ("dropped 2 exact duplicate row(s)",)


def test_same_values_written_differently_count_as_exact_duplicates(tmp_path: Path) -> None:
    lines = [HEADER, *GOOD, "2024-01-01T04:00:00+00:00,107.0,107,99.00,100,1.0"]
    loaded = read_ohlcv_file(write(tmp_path, lines), pair="BTC/USDT", timeframe="1h")
    assert len(loaded.frame) == 5 and "duplicate" in loaded.repairs[0]


def test_blank_lines_are_ignored_but_rows_still_point_at_file_lines(tmp_path: Path) -> None:
    lines = [HEADER, GOOD[0], "", GOOD[1], "2024-01-01T02:00:00Z,102,104,100,x,0"]
    with pytest.raises(DataError) as caught:
        load(write(tmp_path, lines))
    assert caught.value.row == 5


def test_gaps_are_found_not_filled(tmp_path: Path) -> None:
    loaded = read_ohlcv_file(
        write(tmp_path, [HEADER, GOOD[0], GOOD[3], GOOD[4]]), pair="BTC/USDT", timeframe="1h"
    )
    assert len(loaded.frame) == 3
    assert [(g.start.hour, g.end.hour, g.missing) for g in loaded.gaps] == [(0, 3, 2)]
    assert loaded.repairs == ()


@pytest.mark.parametrize(
    "dates",
    [
        ["1704067200", "1704070800", "1704074400"],  # epoch seconds
        ["1704067200000", "1704070800000", "1704074400000"],  # epoch milliseconds
        ["2024-01-01 00:00:00", "2024-01-01T01:00", "2024-01-01T02:00:00.000"],  # naive=UTC
        ["2024-01-01 00:00:00Z", "2024-01-01T01:00:00Z", "2024-01-01T03:00:00+01:00"],
    ],
    ids=["epoch-s", "epoch-ms", "iso-naive", "iso-zoned"],
)
def test_date_formats(tmp_path: Path, dates: list[str]) -> None:
    values = ["100,110,95,105,1", "105,106,101,102,3", "102,104,100,103,0"]
    lines = [HEADER, *(f"{d},{v}" for d, v in zip(dates, values, strict=True))]
    frame = load(write(tmp_path, lines))
    assert list(frame.index) == list(
        pd.date_range("2024-01-01", periods=3, freq="h", tz="UTC", name="date")
    )


def test_weekly_and_monthly_alignment(tmp_path: Path) -> None:
    weekly = [HEADER, "2024-01-01T00:00:00Z,1,2,1,2,1", "2024-01-15T00:00:00Z,2,3,2,3,1"]
    loaded = read_ohlcv_file(write(tmp_path, weekly, "w.csv"), pair="X/Y", timeframe="1w")
    assert [g.missing for g in loaded.gaps] == [1]  # 2024-01-01 is a Monday
    monthly = [HEADER, "2024-01-01T00:00:00Z,1,2,1,2,1", "2024-04-01T00:00:00Z,2,3,2,3,1"]
    loaded = read_ohlcv_file(write(tmp_path, monthly, "m.csv"), pair="X/Y", timeframe="1M")
    assert [g.missing for g in loaded.gaps] == [2]
    with pytest.raises(DataError, match="aligned"):
        read_ohlcv_file(write(tmp_path, weekly, "w2.csv"), pair="X/Y", timeframe="1M")


def test_find_gaps_on_a_plain_frame() -> None:
    index = pd.DatetimeIndex(
        ["2024-01-01 00:00", "2024-01-01 04:00", "2024-01-01 08:00", "2024-01-02 00:00"],
        tz="UTC",
        name="date",
    )
    frame = pd.DataFrame({"close": [1.0, 2.0, 3.0, 4.0]}, index=index)
    gaps = find_gaps(frame, "4h")
    assert [(g.start.hour, g.end.day, g.missing) for g in gaps] == [(8, 2, 3)]
    with pytest.raises(DataError):
        find_gaps(frame.reset_index(), "4h")


def test_arrow_formats_damage(tmp_path: Path) -> None:
    for name in ("BTC_USDT-1h.feather", "BTC_USDT-1h.parquet"):
        path = tmp_path / name
        path.write_bytes(b"this is not an arrow file")
        with pytest.raises(DataError, match="cannot read") as caught:
            load(path)
        assert caught.value.path == str(path)
        path.write_bytes(b"")
        with pytest.raises(DataError, match="empty"):
            load(path)
    frame = pd.DataFrame({"date": pd.date_range("2024", periods=2, freq="h", tz="UTC")})
    frame["open"] = frame["high"] = frame["low"] = frame["close"] = 1.0
    frame.to_parquet(tmp_path / "bad-cols.parquet")
    with pytest.raises(DataError, match="volume") as caught:
        load(tmp_path / "bad-cols.parquet")
    assert caught.value.field == "volume"
    frame["volume"] = [1.0, -1.0]
    frame.to_feather(tmp_path / "neg.feather")
    with pytest.raises(DataError, match=">= 0") as caught:
        load(tmp_path / "neg.feather")
    assert (caught.value.row, caught.value.field) == (3, "volume")


def test_a_boolean_column_is_not_a_number(tmp_path: Path) -> None:
    """pandas counts booleans as numbers: a flag column in the volume slot read as 1.0 / 0.0."""
    frame = pd.DataFrame({"date": pd.date_range("2024", periods=2, freq="h", tz="UTC")})
    frame["open"] = frame["high"] = frame["low"] = frame["close"] = 1.0
    frame["volume"] = [True, False]
    for name in ("BTC_USDT-1h.feather", "BTC_USDT-1h.parquet"):
        path = tmp_path / name
        getattr(frame, "to_" + name.rsplit(".", 1)[1])(path)
        with pytest.raises(DataError, match="not a number: a boolean column") as caught:
            load(path)
        assert (caught.value.row, caught.value.field) == (2, "volume")


@pytest.mark.parametrize("end", ["\r", "\r\n"])
def test_an_open_quote_is_found_whatever_the_line_ends(tmp_path: Path, end: str) -> None:
    """Old Mac line ends ("\\r" only): the reader that finds the line of an open quote had
    ended in an internal csv error where pandas reads the file."""
    lines = [HEADER, GOOD[0], '"' + GOOD[1], GOOD[2]]
    path = tmp_path / "BTC_USDT-1h.csv"
    path.write_bytes((end.join(lines) + end).encode())
    with pytest.raises(DataError, match="never closed") as caught:
        load(path)
    assert caught.value.row == 3

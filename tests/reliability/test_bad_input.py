"""Issue 7.2 — bad input: a clear domain error (file, row, field) or a documented repair,
never an unhandled exception, never a partial write to memory; every CLI command turns
it into one line and exit status 2.

- **Real-world damage**, by name, to OHLCV, fills and headline files: truncated gzip,
  not gzip at all, wrong delimiter (``;``, tab), day-first or month-first dates, epoch
  timestamps in ms (a documented repair: read by magnitude) and in µs (an error),
  undecodable bytes, huge numbers (``1e400``), an empty file, a header with no rows, a
  file cut mid-row.
- **Cell-level properties** (hypothesis): any value in any cell of an OHLCV file (floats
  incl. NaN/inf/huge, dates in many formats and epochs of every unit, arbitrary text).
- Notes, config files and LLM outputs: ``test_bad_input_values.py``; every CLI command:
  ``test_bad_input_cli.py``.

(Byte-level fuzzing of the loaders is tests/data/test_fuzz.py; the OHLCV damage table
with exact rows and fields is tests/data/test_ohlcv_damage.py.)
"""

from __future__ import annotations

import gzip
import tempfile
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from backend.data import load_headlines, load_hyperliquid_fills, read_ohlcv_file
from backend.errors import DataError

HEADER = "date,open,high,low,close,volume"
ROWS = [f"2024-01-01T{h:02d}:00:00Z,100,110,95,105,12.5" for h in range(6)]
FILLS_HEADER = (
    "Account,Coin,Execution Price,Size Tokens,Size USD,Side,Timestamp IST,Start Position,"
    "Direction,Closed PnL,Transaction Hash,Order ID,Crossed,Fee,Trade ID,Timestamp"
)
FILL_ROWS = [
    f"0xabc,BTC,95000,0.01,950,BUY,0{d}-12-2024 22:50,0,Open Long,0,0xe{d},5201770663{d},TRUE,"
    f"0.1,8.95E+14,1.73E+12"
    for d in range(1, 6)
]
NEWS_HEADER = "date,source,subject,title,url"
NEWS_ROWS = [f"{d}-7-2022 04:24,CryptoNews,bitcoin,Headline {d},https://x/{d}" for d in range(1, 6)]
MINIMAL = settings(
    max_examples=60,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)


def text_of(header: str, rows: list[str]) -> bytes:
    return ("\n".join([header, *rows]) + "\n").encode()


def damaged(header: str, rows: list[str], kind: str, *, date_col: int, num_col: int) -> bytes:
    """The file with one named kind of real-world damage."""

    def cell(row: str, col: int, value: str) -> str:
        parts = row.split(",")
        parts[col] = value
        return ",".join(parts)

    good = text_of(header, rows)
    if kind == "wrong-delimiter":
        return good.replace(b",", b";")
    if kind == "tab-delimiter":
        return good.replace(b",", b"\t")
    if kind == "day-first-dates":
        return text_of(header, [cell(r, date_col, "13/01/2024 00:00") for r in rows])
    if kind == "month-first-dates":
        return text_of(header, [cell(r, date_col, "12-13-2024 22:50") for r in rows])
    if kind == "iso-dates":
        return text_of(header, [cell(r, date_col, "2024-12-02T22:50:00Z") for r in rows])
    if kind == "epoch-us":
        return text_of(
            header,
            [cell(r, date_col, str(1704067200000000 + i * 3600000000)) for i, r in enumerate(rows)],
        )
    if kind == "undecodable":
        return good[: len(good) // 2] + b"\xff\xfe\x80" + good[len(good) // 2 :]
    if kind == "huge-number":
        return text_of(header, [*rows[:2], cell(rows[2], num_col, "1e400"), *rows[3:]])
    if kind == "empty":
        return b""
    if kind == "header-only":
        return text_of(header, [])
    if kind == "cut-mid-row":
        return good[: len(good) - len(rows[-1]) // 2 - 1]
    raise AssertionError(kind)


OHLCV_DAMAGE = [
    "wrong-delimiter",
    "tab-delimiter",
    "day-first-dates",
    "epoch-us",
    "undecodable",
    "huge-number",
    "empty",
    "header-only",
    "cut-mid-row",
]
FILL_DAMAGE = [
    "wrong-delimiter",
    "month-first-dates",
    "iso-dates",
    "undecodable",
    "huge-number",
    "empty",
    "header-only",
    "cut-mid-row",
]
NEWS_DAMAGE = [
    "wrong-delimiter",
    "month-first-dates",
    "iso-dates",
    "undecodable",
    "empty",
    "header-only",
]


def ohlcv_file(tmp: Path, kind: str, *, gz: bool = False) -> Path:
    path = tmp / ("BTC_USDT-1h.csv.gz" if gz else "BTC_USDT-1h.csv")
    data = damaged(HEADER, ROWS, kind, date_col=0, num_col=4)
    path.write_bytes(gzip.compress(data) if gz else data)
    return path


def assert_located(err: DataError, path: Path) -> None:
    assert err.path is not None and err.path.startswith(str(path))
    assert str(path) in str(err)


@pytest.mark.parametrize("kind", OHLCV_DAMAGE)
@pytest.mark.parametrize("gz", [False, True], ids=["csv", "csv.gz"])
def test_ohlcv_damage_is_a_located_data_error(kind: str, gz: bool, tmp_path: Path) -> None:
    path = ohlcv_file(tmp_path, kind, gz=gz)
    with pytest.raises(DataError) as caught:
        read_ohlcv_file(path, pair="BTC/USDT", timeframe="1h")
    assert_located(caught.value, path)
    if kind not in ("empty", "header-only", "wrong-delimiter", "tab-delimiter"):
        assert caught.value.row is not None and caught.value.row >= 2


def test_truncated_and_fake_gzip(tmp_path: Path) -> None:
    path = tmp_path / "BTC_USDT-1h.csv.gz"
    data = gzip.compress(text_of(HEADER, ROWS))
    for broken in (data[: len(data) // 2], data[:-9], text_of(HEADER, ROWS)):
        path.write_bytes(broken)
        with pytest.raises(DataError, match="gzip") as caught:
            read_ohlcv_file(path, pair="BTC/USDT", timeframe="1h")
        assert_located(caught.value, path)


def test_epoch_units_are_a_documented_repair(tmp_path: Path) -> None:
    """Seconds and milliseconds (even mixed in one file) are read by magnitude."""
    seconds = [1704067200 + 3600 * i for i in range(6)]
    for dates in (
        seconds,
        [s * 1000 for s in seconds],
        [s * (1000 if i % 2 else 1) for i, s in enumerate(seconds)],
    ):
        rows = [f"{d},100,110,95,105,1" for d in dates]
        path = tmp_path / "BTC_USDT-1h.csv"
        path.write_bytes(text_of(HEADER, rows))
        frame = read_ohlcv_file(path, pair="BTC/USDT", timeframe="1h").frame
        assert frame.index[0] == datetime(2024, 1, 1, tzinfo=UTC) and len(frame) == 6


@pytest.mark.parametrize("kind", FILL_DAMAGE)
def test_fill_damage_is_a_located_data_error(kind: str, tmp_path: Path) -> None:
    path = tmp_path / "fills.csv"
    path.write_bytes(damaged(FILLS_HEADER, FILL_ROWS, kind, date_col=6, num_col=4))
    with pytest.raises(DataError) as caught:
        load_hyperliquid_fills(path)
    assert_located(caught.value, path)


@pytest.mark.parametrize("kind", NEWS_DAMAGE)
def test_headline_damage_is_a_located_data_error(kind: str, tmp_path: Path) -> None:
    path = tmp_path / "news.csv"
    path.write_bytes(damaged(NEWS_HEADER, NEWS_ROWS, kind, date_col=0, num_col=3))
    with pytest.raises(DataError) as caught:
        load_headlines(path)
    assert_located(caught.value, path)


def test_a_date_beyond_what_pandas_holds_is_a_located_data_error(tmp_path: Path) -> None:
    """A reviewer's rows: a year 2300 candle, an epoch of seconds one digit too long, a
    fill of 3024 and a headline of 3022 had ended in an internal OutOfBoundsDatetime (or
    a 'NaT is not aligned' message after a RuntimeWarning), with no file, row or field."""
    ohlcv = tmp_path / "BTC_USDT-1h.csv"
    epochs = [f"{1704067200 + 3600 * i},100,110,95,105,1" for i in range(6)]
    for rows in (
        [*ROWS[:3], "2300-01-01T00:00:00Z,100,110,95,105,1", *ROWS[3:]],
        [*epochs[:3], "16005744000,100,110,95,105,1", *epochs[3:]],
    ):
        ohlcv.write_bytes(text_of(HEADER, rows))
        with pytest.raises(DataError, match="out of range") as caught:
            read_ohlcv_file(ohlcv, pair="BTC/USDT", timeframe="1h")
        assert (caught.value.row, caught.value.field) == (5, "date")
    fills = tmp_path / "fills.csv"
    rows = [*FILL_ROWS[:2], FILL_ROWS[2].replace("-12-2024 ", "-12-3024 "), *FILL_ROWS[3:]]
    fills.write_bytes(text_of(FILLS_HEADER, rows))
    with pytest.raises(DataError, match="out of range") as caught:
        load_hyperliquid_fills(fills)
    assert (caught.value.row, caught.value.field) == (4, "Timestamp IST")
    news = tmp_path / "news.csv"
    news.write_bytes(text_of(NEWS_HEADER, [*NEWS_ROWS[:4], NEWS_ROWS[4].replace("-2022", "-3022")]))
    with pytest.raises(DataError, match="out of range") as caught:
        load_headlines(news)
    assert (caught.value.row, caught.value.field) == (6, "date")


# ------------------------------------------------------------------ cell-level properties

_moments = st.datetimes(
    min_value=datetime(1960, 1, 1), max_value=datetime(2300, 1, 1), timezones=st.just(UTC)
)
cell_values = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.sampled_from(["1e400", "-1e400", "1e308", "9" * 400, "0x1A", "1,5", "", " ", "N/A"]),
    st.text(max_size=12),
    _moments.map(lambda d: d.strftime("%d/%m/%Y %H:%M")),
    _moments.map(lambda d: d.strftime("%m-%d-%Y %H:%M")),
    _moments.map(lambda d: d.isoformat()),
    st.builds(
        lambda d, unit: str(int(d.timestamp() * unit)),
        _moments,
        st.sampled_from([1, 1e3, 1e6, 1e9]),
    ),
)


@MINIMAL
@given(
    row=st.integers(0, len(ROWS) - 1),
    col=st.integers(0, 5),
    value=cell_values,
)
def test_any_cell_value_loads_validly_or_fails_located(row: int, col: int, value: str) -> None:
    rows = list(ROWS)
    parts = rows[row].split(",")
    parts[col] = value.replace(",", ";").replace("\n", " ").replace('"', "'")
    rows[row] = ",".join(parts)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "BTC_USDT-1h.csv"
        path.write_bytes(text_of(HEADER, rows))
        try:
            loaded = read_ohlcv_file(path, pair="BTC/USDT", timeframe="1h")
        except DataError as err:
            assert_located(err, path)
            assert err.row is not None and 1 <= err.row <= len(rows) + 1
            assert err.field is None or err.field in HEADER.split(",")
            return
    frame = loaded.frame
    assert frame.index.is_monotonic_increasing and frame.index.is_unique
    assert frame.notna().all().all() and (frame[["open", "high", "low", "close"]] > 0).all().all()

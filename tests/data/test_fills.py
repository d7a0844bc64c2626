"""Hyperliquid fills export: the real file, stable ids, and damaged fixtures."""

from __future__ import annotations

import csv
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
import pytest

from backend.data import FILL_COLUMNS, Fill, fills_to_frame, load_hyperliquid_fills
from backend.errors import DataError

ACCOUNTS = {
    "0x513b8629fe877bb581bf244e326a047b249c4ff1",
    "0x083384f897ee0f19899168e3b1bec365f52a9012",
    "0xae5eacaf9c6b9111fd53034a602c192a04e082ed",
}


@pytest.fixture(scope="module")
def fills_csv(shared_data: Path) -> Path:
    return shared_data / "trades" / "hyperliquid_fills.csv"


@pytest.fixture(scope="module")
def fills(fills_csv: Path) -> list[Fill]:
    return load_hyperliquid_fills(fills_csv)


@pytest.fixture(scope="module")
def raw_rows(fills_csv: Path) -> list[dict[str, str]]:
    with fills_csv.open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def test_every_row_imports(fills: list[Fill], raw_rows: list[dict[str, str]]) -> None:
    assert len(raw_rows) == 14_199
    assert len(fills) == 14_199
    assert len({f.id for f in fills}) == 14_199
    assert {f.trader_id for f in fills} == ACCOUNTS
    assert Counter(f.trader_id for f in fills) == Counter(r["Account"] for r in raw_rows)
    timestamps = [f.timestamp for f in fills]
    assert timestamps == sorted(timestamps)


def test_field_mapping_of_the_first_row(fills: list[Fill], raw_rows: list[dict[str, str]]) -> None:
    row = raw_rows[0]  # @107 spot buy at "02-12-2024 22:50" IST
    (fill,) = [
        f
        for f in fills
        if f.tx_hash == row["Transaction Hash"] and f.price == float(row["Execution Price"])
    ]
    # 22:50 IST - 5:30, at the end of the minute: surely known only then (no look-ahead)
    assert fill.datetime == datetime(2024, 12, 2, 17, 21, tzinfo=UTC)
    assert fill.timestamp == int(fill.datetime.timestamp() * 1000)
    assert (fill.symbol, fill.market_type, fill.side) == ("@107", "spot", "buy")
    assert (fill.direction, fill.raw_direction) == ("buy", "Buy")
    assert (fill.amount, fill.cost, fill.fee_cost) == (986.87, 7872.16, 0.34540448)
    # a spot buy's fee is taken from the coin bought: @107 units, not USDC
    assert (fill.fee_currency, fill.taker_or_maker, fill.order) == ("@107", "taker", "52017706630")
    sells = [f for f in fills if f.market_type == "spot" and f.side == "sell"]
    perps = [f for f in fills if f.market_type == "perp"]
    assert {f.fee_currency for f in sells} == {f.fee_currency for f in perps} == {"USDC"}
    assert (fill.realized_pnl, fill.start_position) == (0.0, 0.0)
    assert fill.trader_id == "0xae5eacaf9c6b9111fd53034a602c192a04e082ed"
    assert fill.source == "hyperliquid"


def test_directions_symbols_and_quirks(fills: list[Fill], raw_rows: list[dict[str, str]]) -> None:
    directions = Counter(f.direction for f in fills)
    raw = Counter(r["Direction"] for r in raw_rows)
    assert directions["open_long"] == raw["Open Long"]
    assert directions["close_short"] == raw["Close Short"]
    assert directions["flip_long_to_short"] == raw["Long > Short"] == 2
    assert directions["flip_short_to_long"] == raw["Short > Long"] == 2
    assert directions["other"] == raw["Spot Dust Conversion"] == 1
    spot = [f for f in fills if f.market_type == "spot"]
    assert len(spot) == sum(r["Coin"].startswith("@") for r in raw_rows)
    assert all(f.symbol.startswith("@") for f in spot)
    perp_symbols = {f.symbol for f in fills if f.market_type == "perp"}
    assert "BTC/USDC:USDC" in perp_symbols
    assert all(s.endswith("/USDC:USDC") for s in perp_symbols)
    (dust,) = [f for f in fills if f.direction == "other"]
    assert dust.tx_hash is None  # the all-zero hash is not a transaction
    shared_orders = Counter((f.trader_id, f.order) for f in fills)
    assert max(shared_orders.values()) > 1  # several fills per order, still distinct ids
    assert fills[0].datetime >= datetime(2024, 1, 1, tzinfo=UTC)
    assert fills[-1].datetime < datetime(2025, 6, 1, tzinfo=UTC)


def test_frame(fills: list[Fill]) -> None:
    frame = fills_to_frame(fills[::-1])
    assert list(frame.columns) == list(FILL_COLUMNS)
    assert len(frame) == 14_199
    assert str(frame["datetime"].dtype) == "datetime64[ns, UTC]"
    assert frame["timestamp"].is_monotonic_increasing
    same_minute = frame.loc[frame["timestamp"] == frame["timestamp"].iloc[0], "id"].tolist()
    reversed_ids = [f.id for f in fills[::-1] if f.timestamp == frame["timestamp"].iloc[0]]
    assert same_minute == reversed_ids  # ties keep the input order
    empty = fills_to_frame([])
    assert list(empty.columns) == list(FILL_COLUMNS) and empty.empty


# --- generated fixtures ------------------------------------------------------------------

HEADER = (
    "Account,Coin,Execution Price,Size Tokens,Size USD,Side,Timestamp IST,Start Position,"
    "Direction,Closed PnL,Transaction Hash,Order ID,Crossed,Fee,Trade ID,Timestamp"
)
TX = "0x" + "ab" * 32
DAMAGED_COLUMNS = "1.0E+15,1.73E+12"  # Trade ID, Timestamp: mangled by a spreadsheet
ROWS = [
    f"0xaaa,BTC,95000,0.01,950,BUY,01-02-2025 10:00,0,Open Long,0,{TX},111,TRUE,0.3,"
    + DAMAGED_COLUMNS,
    f"0xaaa,BTC,95010,0.02,1900.2,BUY,01-02-2025 10:00,0.01,Open Long,0,{TX},111,TRUE,0.6,"
    + DAMAGED_COLUMNS,
    f"0xaaa,BTC,96000,0.03,2880,SELL,01-02-2025 11:15,0.03,Close Long,30,{TX},112,FALSE,-0.1,"
    + DAMAGED_COLUMNS,
]


def write(tmp_path: Path, lines: list[str], name: str = "fills.csv") -> Path:
    path = tmp_path / name
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_ids_are_stable_across_reimports_and_extended_exports(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    base = load_hyperliquid_fills(write(tmp_path, [HEADER, *ROWS]))
    again = load_hyperliquid_fills(write(tmp_path, [HEADER, *ROWS], "again.csv"))
    assert [f.id for f in base] == [f.id for f in again]
    newer = ROWS[0].replace("95000", "95100").replace("10:00", "09:00")
    extended = load_hyperliquid_fills(write(tmp_path, [HEADER, newer, *ROWS, ROWS[2]], "ext.csv"))
    assert {f.id for f in base} < {f.id for f in extended}
    # a row repeating an earlier one exactly (line 6 repeats line 5) is one fill, said
    assert len(extended) == len({f.id for f in extended}) == 4
    assert "dropped 1 row(s) repeating an earlier fill" in caplog.text
    assert "; lines 6)" in caplog.text
    assert extended[0].price == 95100.0  # sorted by time
    maker = next(f for f in base if f.side == "sell")
    assert (maker.taker_or_maker, maker.fee_cost, maker.realized_pnl) == ("maker", -0.1, 30.0)


def test_a_fill_exported_again_with_other_damaged_cells_is_one_fill(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A reviewer's finding: a re-export whose ignored ``Trade ID`` / ``Timestamp`` cells
    differ was not an exact duplicate, got an id of its own, and was counted twice (the
    persona's realised PnL 67,845.62 -> 81,113.95, its holding period 6.2 h -> 15.8 h)."""
    again = ROWS[1].replace(DAMAGED_COLUMNS, "2.0E+15,1.74E+12")
    fills = load_hyperliquid_fills(write(tmp_path, [HEADER, *ROWS, again]))
    assert len(fills) == 3 and "dropped 1 row(s) repeating an earlier fill" in caplog.text
    assert "; lines 5)" in caplog.text
    # two fills of one order at one price and size are two fills: their start positions differ
    twin = ROWS[1].replace(",0.01,Open Long", ",0.03,Open Long")
    assert len(load_hyperliquid_fills(write(tmp_path, [HEADER, *ROWS[:2], twin], "t.csv"))) == 3


def test_extra_columns_and_order_are_irrelevant(tmp_path: Path) -> None:
    with (tmp_path / "a.csv").open("w") as out:
        out.write("\n".join([HEADER, *ROWS]))
    frame = pd.read_csv(tmp_path / "a.csv", dtype=str)
    frame = frame[list(reversed(frame.columns))].assign(Note="x")
    frame.to_csv(tmp_path / "b.csv", index=False)
    ids_a = [f.id for f in load_hyperliquid_fills(tmp_path / "a.csv")]
    ids_b = [f.id for f in load_hyperliquid_fills(tmp_path / "b.csv")]
    assert ids_a == ids_b


def _bad(row: str, column: str, value: str) -> str:
    cells = row.split(",")
    cells[HEADER.split(",").index(column)] = value
    return ",".join(cells)


DAMAGE = [
    ("bad date", "Timestamp IST", "2025-02-01 10:00", "unparseable date"),
    ("impossible date", "Timestamp IST", "31-02-2025 10:00", "unparseable date"),
    ("empty date", "Timestamp IST", "", "missing value"),
    ("text price", "Execution Price", "abc", "not a finite number"),
    ("zero size", "Size Tokens", "0", "> 0"),
    ("negative price", "Execution Price", "-5", "> 0"),
    ("nan fee", "Fee", "nan", "not a finite number"),
    ("empty usd", "Size USD", "", "missing value"),
    ("bad side", "Side", "LONG", "BUY or SELL"),
    ("bad crossed", "Crossed", "maybe", "TRUE or FALSE"),
    ("damaged order id", "Order ID", "5.20E+10", "scientific notation"),
    ("text pnl", "Closed PnL", "n/a", "not a finite number"),
    ("empty account", "Account", "", "missing value"),
    ("negative usd", "Size USD", "-1900.2", ">= 0"),
    ("a long opened by a sell", "Direction", "Close Long", "disagrees with Side"),
]


@pytest.mark.parametrize(
    ("column", "value", "words"), [d[1:] for d in DAMAGE], ids=[d[0] for d in DAMAGE]
)
def test_damaged_rows(tmp_path: Path, column: str, value: str, words: str) -> None:
    path = write(tmp_path, [HEADER, ROWS[0], _bad(ROWS[1], column, value), ROWS[2]])
    with pytest.raises(DataError) as caught:
        load_hyperliquid_fills(path)
    err = caught.value
    assert (err.path, err.row, err.field) == (str(path), 3, column)
    assert words in str(err)


def test_damaged_files(tmp_path: Path) -> None:
    no_fee = HEADER.replace(",Fee,", ",Fees,")
    path = write(tmp_path, [no_fee, *ROWS])
    with pytest.raises(DataError, match=r"missing column.*Fee") as caught:
        load_hyperliquid_fills(path)
    assert (caught.value.row, caught.value.field) == (1, "Fee")
    with pytest.raises(DataError, match="no data rows"):
        load_hyperliquid_fills(write(tmp_path, [HEADER], "h.csv"))
    with pytest.raises(DataError, match="empty"):
        load_hyperliquid_fills(write(tmp_path, [""], "e.csv"))
    latin1 = tmp_path / "l.csv"
    latin1.write_bytes(("\n".join([HEADER, *ROWS, ROWS[0]]) + ",café").encode("latin-1"))
    with pytest.raises(DataError, match="UTF-8") as caught:
        load_hyperliquid_fills(latin1)
    assert caught.value.row == 5
    with pytest.raises(DataError, match="not found"):
        load_hyperliquid_fills(tmp_path / "nope.csv")
    optional = _bad(_bad(ROWS[0], "Start Position", ""), "Closed PnL", "")
    (fill,) = load_hyperliquid_fills(write(tmp_path, [HEADER, optional], "o.csv"))
    assert fill.start_position is None and fill.realized_pnl is None


def test_an_unknown_direction_is_other_and_said(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A reviewer's finding: a misspelt Direction silently became ``other`` (the fill left
    out of the trader's assets, sizing and long share)."""
    odd = _bad(ROWS[1], "Direction", "Opn Long")
    fills = load_hyperliquid_fills(write(tmp_path, [HEADER, ROWS[0], odd, ROWS[2]]))
    assert [f.direction for f in fills] == ["open_long", "other", "close_long"]
    assert "1 row(s) of an unknown Direction (Opn Long)" in caplog.text and "lines 3" in caplog.text
    caplog.clear()
    dust = _bad(_bad(ROWS[2], "Direction", "Spot Dust Conversion"), "Side", "SELL")
    load_hyperliquid_fills(write(tmp_path, [HEADER, ROWS[0], dust], "d.csv"))
    assert "unknown Direction" not in caplog.text


def test_a_fill_after_the_callers_now_is_refused_and_an_address_is_one_trader(
    tmp_path: Path,
) -> None:
    """A reviewer's: a fill dated 2099 (a mistyped year) wrote persona versions as of
    2099, after which every persona write was refused as into the past; and one row of
    the trader's address in capitals made a second trader of it."""
    from datetime import UTC, datetime

    from backend.data.fills import account_id

    address = "0x513b8629fe877bb581bf244e326a047b249c4ff1"
    rows = [row.replace("0xaaa", address) for row in ROWS]
    rows[1] = rows[1].replace(address, address.upper().replace("0X", "0x"))
    future = _bad(rows[2], "Timestamp IST", "05-01-2099 10:00")
    path = write(tmp_path, [HEADER, rows[0], rows[1], future])
    now = datetime(2026, 1, 1, tzinfo=UTC)
    with pytest.raises(DataError, match="a fill from the future") as caught:
        load_hyperliquid_fills(path, not_after=now)
    assert (caught.value.row, caught.value.field) == (4, "Timestamp IST")
    fills = load_hyperliquid_fills(path)  # no clock given: read as it is
    assert {f.trader_id for f in fills} == {address}
    assert account_id(address.upper().replace("0X", "0x")) == address
    assert account_id("market-btc") == "market-btc"

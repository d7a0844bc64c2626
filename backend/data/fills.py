"""Trade fills: the Hyperliquid fills export, and a flat frame of any fills.

Hyperliquid export quirks handled here (see ``shared/data/README.md``):

* time comes from ``Timestamp IST`` (``day-month-year hour:minute``, UTC+05:30), converted
  to UTC and put at the end of its minute (``22:50`` IST -> ``17:21:00`` UTC): with minute
  precision a fill is surely known only once its minute is over, so an as-of cut at
  ``17:20`` must not read a fill that may have happened at ``17:20:59`` (194 of the real
  fills sit on a whole hour, a 1h bar's close); the ``Timestamp`` and ``Trade ID`` columns
  were damaged by a spreadsheet (``1.73E+12``) and are ignored;
* ``Coin`` values starting with ``@`` are spot-pair ids (kept as the symbol, e.g. ``@107``,
  market type ``spot``); other coins are USDC-settled perps, ccxt symbol ``BTC/USDC:USDC``;
* several fills share one ``Transaction Hash`` and ``Order ID``, so the fill id is a stable
  hash of (account, tx hash, order id, price, size, start position, occurrence counter).
"""

from __future__ import annotations

import logging
import math
import re
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from backend.data._csvio import (
    CsvTable,
    end_of_minute,
    first_bad,
    parse_dates,
    parse_numbers,
    read_csv_table,
    require_non_empty,
    stable_ids,
)
from backend.data.models import Direction, Fill
from backend.errors import DataError
from backend.types import base_asset

log = logging.getLogger(__name__)

__all__ = ["FILL_COLUMNS", "direction_from_text", "fills_to_frame", "load_hyperliquid_fills"]

HYPERLIQUID_COLUMNS = (
    "Account",
    "Coin",
    "Execution Price",
    "Size Tokens",
    "Size USD",
    "Side",
    "Timestamp IST",
    "Start Position",
    "Direction",
    "Closed PnL",
    "Transaction Hash",
    "Order ID",
    "Crossed",
    "Fee",
)
_DIRECTIONS: dict[str, Direction] = {
    "open long": "open_long",
    "close long": "close_long",
    "open short": "open_short",
    "close short": "close_short",
    "buy": "buy",
    "sell": "sell",
    "long > short": "flip_long_to_short",
    "short > long": "flip_short_to_long",
}
_SIDE_OF: dict[str, str] = {
    "open_long": "buy",
    "close_long": "sell",
    "open_short": "sell",
    "close_short": "buy",
    "buy": "buy",
    "sell": "sell",
    "flip_long_to_short": "sell",
    "flip_short_to_long": "buy",
}
"""The ``Side`` each known direction is (a row saying otherwise is refused)."""
_KNOWN_OTHER = frozenset({"spot dust conversion"})
"""Directions read as ``other`` without a warning (an automatic sweep of dust)."""
_IST_OFFSET = pd.Timedelta(hours=5, minutes=30)
_ZERO_HASH = "0x" + "0" * 64

FILL_COLUMNS: tuple[str, ...] = tuple(Fill.model_fields)
"""Columns of :func:`fills_to_frame`, in order (the :class:`Fill` field names)."""


def account_id(trader: str) -> str:
    """A trader id as the fills loader reads ``Account``: a hex address lower-cased
    (addresses are case-insensitive), anything else as it is."""
    return trader.lower() if re.fullmatch(r"0[xX][0-9a-fA-F]{40}", trader) else trader


def load_hyperliquid_fills(
    path: str | Path,
    *,
    source: str = "hyperliquid",
    allow_empty: bool = False,
    not_after: datetime | None = None,
) -> list[Fill]:
    """Import a Hyperliquid fills CSV export, one :class:`Fill` per row, sorted by time
    (stable: fills of the same minute keep their file order).

    Mapping: ``Account`` -> ``trader_id`` (full address), ``Side`` BUY/SELL -> buy/sell,
    ``Execution Price`` -> ``price`` (USDC), ``Size Tokens`` -> ``amount`` (base units),
    ``Size USD`` -> ``cost`` (USDC), ``Fee`` -> ``fee_cost`` (``fee_currency`` ``USDC``; a
    spot buy's fee is in the coin bought: ``fee_currency`` its base, e.g. ``@107``),
    ``Closed PnL`` -> ``realized_pnl`` (USDC), ``Start Position`` -> ``start_position``
    (signed base units), ``Crossed`` TRUE/FALSE -> taker/maker, ``Order ID`` -> ``order``,
    ``Transaction Hash`` -> ``tx_hash`` (``None`` for the all-zero hash of internal
    transfers), ``Direction`` -> ``direction`` (``Long > Short`` -> ``flip_long_to_short``,
    anything unknown such as ``Spot Dust Conversion`` -> ``other``; the raw text is kept in
    ``raw_direction``). Timestamps have minute precision: ``datetime`` is the end of the
    fill's minute (module doc). A row that repeats an earlier fill (the same account,
    transaction hash, order, price, size and start position, whatever its ignored
    ``Timestamp`` / ``Trade ID`` cells say; or every cell) is dropped with a warning naming
    its line, as the candle reader does with duplicate rows.

    Raises DataError (file, row = 1-based line with header = 1, field) for an unreadable or
    empty file, a header without rows (unless ``allow_empty``: ``[]``, an export with no
    fills yet), missing columns, an empty required cell, an unparseable ``Timestamp IST``,
    a non-numeric or non-finite number, price or size <= 0, an unknown ``Side`` or
    ``Crossed`` value, a negative ``Size USD``, a ``Direction`` that is not the row's
    ``Side`` (``Open Long`` on a SELL), or an ``Order ID`` mangled into scientific notation.
    An unknown ``Direction`` (other than ``Spot Dust Conversion``) is read as ``other``
    with a warning naming its lines. ``not_after`` (the caller's clock: a command's
    now): a fill after it is a DataError too (a mistyped year had written persona
    versions as of 2099, and every later write was then refused as into the past). An
    ``Account`` that is a hex address is lower-cased (addresses are case-insensitive:
    one upper-cased row had split a trader in two).
    """
    file = Path(path)
    table = read_csv_table(file, required=HYPERLIQUID_COLUMNS, allow_empty=allow_empty)
    if table.frame.empty:
        return []
    cells = table.frame
    require_non_empty(table, ["Account", "Coin", "Side", "Timestamp IST", "Direction"])

    utc = _parse_ist(table)
    if not_after is not None:
        limit = pd.Timestamp(not_after)
        _fail_at(table, utc > limit, f"after now ({limit.isoformat()}): a fill from the future",
                 "Timestamp IST")  # fmt: skip
    numbers = {
        column: parse_numbers(table, column)
        for column in ("Execution Price", "Size Tokens", "Size USD", "Fee")
    }
    for column in ("Execution Price", "Size Tokens"):
        _fail_at(table, numbers[column] <= 0, "must be > 0", column)
    _fail_at(table, numbers["Size USD"] < 0, "must be >= 0", "Size USD")
    optional = {
        column: _optional_numbers(table, column) for column in ("Start Position", "Closed PnL")
    }
    side = cells["Side"].str.strip().str.lower()
    _fail_at(table, ~side.isin(["buy", "sell"]), "Side must be BUY or SELL", "Side")
    raw_direction = cells["Direction"].str.strip()
    direction = raw_direction.map(direction_from_text)
    expected = direction.map(_SIDE_OF)
    _fail_at(
        table,
        expected.notna() & (expected != side),
        "Direction disagrees with Side (Open Long, Close Short, Short > Long and spot Buy "
        "are BUY; Close Long, Open Short, Long > Short and Sell are SELL)",
        "Direction",
    )
    unknown = (direction == "other") & ~raw_direction.str.lower().isin(_KNOWN_OTHER)
    if unknown.any():
        where = [table.line(int(i)) for i in np.flatnonzero(unknown.to_numpy())]
        log.warning(
            "%s: %d row(s) of an unknown Direction (%s) read as 'other', not as the trader's "
            "trades (lines %s)",
            file, len(where), ", ".join(sorted(set(raw_direction[unknown]))[:5]),
            ", ".join(map(str, where[:10])) + (" ..." if len(where) > 10 else ""),
        )  # fmt: skip
    crossed = cells["Crossed"].str.strip().str.upper()
    _fail_at(
        table, ~crossed.isin(["TRUE", "FALSE", ""]), "Crossed must be TRUE or FALSE", "Crossed"
    )
    order = cells["Order ID"].str.strip()
    _fail_at(
        table,
        order.str.contains(r"[eE][+-]?\d", regex=True),
        "Order ID in scientific notation (damaged by a spreadsheet)",
        "Order ID",
    )

    account = cells["Account"].str.strip()
    hexed = account.str.fullmatch(r"0[xX][0-9a-fA-F]{40}")
    account = account.where(~hexed, account.str.lower())
    tx_hash = cells["Transaction Hash"].str.strip()
    start = optional["Start Position"]
    keys = pd.DataFrame(
        {
            "account": account,
            "tx": tx_hash,
            "order": order,
            "price": numbers["Execution Price"].map(repr),
            "size": numbers["Size Tokens"].map(repr),
            "start": start.map(repr),
        }
    )
    ids = stable_ids(keys, prefix="hl-")
    symbols = [_symbol(c) for c in cells["Coin"].str.strip().tolist()]
    millis = utc.dt.as_unit("ms").astype("int64").to_numpy()
    columns = zip(
        ids,
        order.tolist(),
        millis.tolist(),
        [ts.to_pydatetime() for ts in utc],
        symbols,
        side.tolist(),
        numbers["Execution Price"].tolist(),
        numbers["Size Tokens"].tolist(),
        numbers["Size USD"].tolist(),
        numbers["Fee"].tolist(),
        crossed.tolist(),
        account.tolist(),
        optional["Closed PnL"].tolist(),
        raw_direction.tolist(),
        direction.tolist(),
        start.tolist(),
        tx_hash.tolist(),
        strict=True,
    )
    fills = []
    for fid, oid, ms, moment, (
        symbol,
        kind,
    ), sd, price, size, cost, fee, cross, acct, pnl, raw, way, sp, tx in columns:
        record: dict[str, Any] = {
            "id": fid,
            "order": oid or None,
            "timestamp": ms,
            "datetime": moment,
            "symbol": symbol,
            "side": sd,
            "price": price,
            "amount": size,
            "cost": cost,
            "fee_cost": fee,
            # a spot buy pays its fee in the coin received: the next fill's start
            # position is start + size - fee (all 558 such pairs of the shared export)
            "fee_currency": base_asset(symbol) if kind == "spot" and sd == "buy" else "USDC",
            "taker_or_maker": {"TRUE": "taker", "FALSE": "maker"}.get(cross),
            "trader_id": acct,
            "realized_pnl": None if math.isnan(pnl) else pnl,
            "direction": way,
            "raw_direction": raw,
            "start_position": None if math.isnan(sp) else sp,
            "market_type": kind,
            "source": source,
            "tx_hash": None if tx in ("", _ZERO_HASH) else tx,
        }
        fills.append(Fill.model_validate(record))
    # the same fill twice (an export written twice, a copy-paste, a re-export whose
    # damaged Timestamp / Trade ID cells differ): one trade, not two. A fill is its
    # account, transaction, order, price, size and start position (no two fills of the
    # real export share them); without a hash or a start position, only an exact copy
    same_fill = keys.duplicated(keep="first") & start.notna() & ~tx_hash.isin(["", _ZERO_HASH])
    repeated = (cells.duplicated(keep="first") | same_fill).to_numpy()
    if repeated.any():
        lines = [table.line(int(i)) for i in np.flatnonzero(repeated)]
        log.warning(
            "%s: dropped %d row(s) repeating an earlier fill (the same account, transaction, "
            "order, price, size and start position, or every cell; lines %s)",
            file, len(lines), ", ".join(map(str, lines[:10])) + (" ..." if len(lines) > 10 else ""),
        )  # fmt: skip
    order_by_time = np.argsort(millis, kind="stable")
    return [fills[int(i)] for i in order_by_time if not repeated[int(i)]]


def direction_from_text(text: str) -> Direction:
    """Map a Hyperliquid/ccxt direction text (``Open Long``, ``Long > Short``, ``buy``...)
    to a :data:`~backend.data.models.Direction`; unknown texts -> ``other``."""
    return _DIRECTIONS.get(" ".join(text.split()).lower(), "other")


def fills_to_frame(fills: list[Fill]) -> pd.DataFrame:
    """One row per fill, columns :data:`FILL_COLUMNS` (``datetime`` as
    ``datetime64[ns, UTC]``), sorted by time then by the order of ``fills`` (stable),
    with a fresh ``RangeIndex``. Units as in :class:`Fill`. Empty input -> empty frame with
    the same columns.
    """
    frame = pd.DataFrame([fill.model_dump() for fill in fills], columns=list(FILL_COLUMNS))
    frame["datetime"] = pd.to_datetime(frame["datetime"], utc=True).dt.as_unit("ns")
    frame["timestamp"] = frame["timestamp"].astype("int64")
    for column in ("price", "amount", "cost", "fee_cost", "realized_pnl", "start_position"):
        frame[column] = frame[column].astype("float64")
    return frame.sort_values("timestamp", kind="stable").reset_index(drop=True)


def _symbol(coin: str) -> tuple[str, str]:
    """ccxt-style symbol and market type of a Hyperliquid ``Coin`` value."""
    if coin.startswith("@") or "/" in coin:
        return coin, "spot"
    return f"{coin}/USDC:USDC", "perp"


def _parse_ist(table: CsvTable) -> pd.Series:
    """``Timestamp IST`` (``02-12-2024 22:50``, day first, UTC+05:30) as UTC datetimes at
    the end of the minute (``2024-12-02 17:21:00``; module doc: no as-of cut reads a fill
    before it surely happened)."""
    local = parse_dates(
        table, "Timestamp IST", fmt="%d-%m-%Y %H:%M", expected="day-month-year hour:minute"
    )
    utc: pd.Series = end_of_minute(local - _IST_OFFSET).dt.tz_localize("UTC").dt.as_unit("ns")
    return utc


def _optional_numbers(table: CsvTable, column: str) -> pd.Series:
    """Numbers where an empty cell means unknown (NaN); anything else must be finite."""
    empty = table.frame[column].str.strip() == ""
    if not empty.any():
        return parse_numbers(table, column)
    filled = CsvTable(table.path, table.frame.loc[~empty], table.lines[~empty.to_numpy()])
    values = pd.Series(np.nan, index=table.frame.index, dtype="float64")
    values.loc[~empty] = parse_numbers(filled, column).to_numpy()
    return values


def _fail_at(table: CsvTable, mask: pd.Series, reason: str, field: str) -> None:
    pos = first_bad(mask)
    if pos is not None:
        shown = table.frame[field].iloc[pos]
        raise DataError(
            f"{reason} (got {shown!r})", path=table.path, row=table.line(pos), field=field
        )

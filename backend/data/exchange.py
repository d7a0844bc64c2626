"""Exchanges through ccxt: construction, candle downloads, fills from ``fetch_my_trades``.

This module never reads the clock: callers pass ``until`` (normally "now"), so downloads
are reproducible and testable. Every ccxt failure (``ccxt.BaseError``: network, HTTP
4xx/5xx, rate limit, bad symbol) becomes :class:`~backend.errors.ExchangeError` naming the
exchange, the pair and a short reason.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import ccxt
import numpy as np
import pandas as pd
from pydantic import ValidationError

from backend.data._candles import (
    VALUE_COLUMNS,
    close_times,
    coerce_dates,
    coerce_numbers,
    empty_ohlcv,
    timeframe_seconds,
    validate_candles,
)
from backend.data.fills import direction_from_text
from backend.data.models import Direction, Fill
from backend.errors import DataError, ExchangeError
from backend.types import EPOCH

__all__ = [
    "check_market",
    "download_ohlcv",
    "fills_from_ccxt_trades",
    "make_exchange",
    "perp_direction",
    "point_exchange_at",
]

_MAX_PAGES = 100_000
_QUERY = re.compile(r"\?[^\s\"']*")


def make_exchange(
    exchange_id: str, *, api_base_url: str | None = None, timeout_ms: int = 10_000
) -> ccxt.Exchange:
    """A ccxt exchange (``"binance"``, ``"hyperliquid"``, ...) with ccxt's rate limiter on
    and a request timeout of ``timeout_ms`` milliseconds; with ``api_base_url`` its API
    URLs are pointed there (see :func:`point_exchange_at`). No credentials are set.

    Raises ExchangeError for an id ccxt does not know or a bad ``api_base_url``.
    """
    if exchange_id not in ccxt.exchanges:
        raise ExchangeError(f"unknown exchange id {exchange_id!r} (see ccxt.exchanges)")
    exchange: ccxt.Exchange = getattr(ccxt, exchange_id)(
        {"enableRateLimit": True, "timeout": int(timeout_ms)}
    )
    if api_base_url is not None:
        point_exchange_at(exchange, api_base_url)
    return exchange


def point_exchange_at(exchange: ccxt.Exchange, base_url: str) -> None:
    """Rewrite every URL in ``exchange.urls["api"]`` (nested dicts/lists of strings) so its
    scheme and host become those of ``base_url``, keeping the path and query:
    ``https://api.binance.com/api/v3`` + ``http://127.0.0.1:8080`` ->
    ``http://127.0.0.1:8080/api/v3``. A path in ``base_url`` is prefixed (for proxies).
    Used for testnets, proxies and loopback tests. Raises ExchangeError for a base URL
    that is not ``http(s)://host[:port][/path]``.
    """
    target = urlsplit(base_url)
    if target.scheme not in ("http", "https") or not target.netloc:
        raise ExchangeError(f"api base URL must be http(s)://host[:port], got {base_url!r}")
    prefix = base_url.rstrip("/")

    def rewrite(value: Any) -> Any:
        if isinstance(value, str):
            parts = urlsplit(value)
            if not parts.scheme or not parts.netloc:
                return value
            return prefix + urlunsplit(("", "", parts.path, parts.query, parts.fragment))
        if isinstance(value, Mapping):
            return {key: rewrite(item) for key, item in value.items()}
        if isinstance(value, list):
            return [rewrite(item) for item in value]
        return value

    exchange.urls = {**exchange.urls, "api": rewrite(exchange.urls["api"])}


def check_market(exchange: ccxt.Exchange, symbol: str, *, timeframe: str | None = None) -> None:
    """Refuse a ``symbol`` the exchange does not list (its markets, loaded once per
    exchange object by ccxt), or a ``timeframe`` its candles do not come in (ccxt's
    ``exchange.timeframes``, when the exchange declares them: a paper run of 7m candles
    on Binance had written its store and state before "Invalid interval"). Raises
    :class:`ExchangeError` naming the exchange and the symbol or timeframe, or the
    failure of loading its markets."""
    offered = getattr(exchange, "timeframes", None)
    if timeframe is not None and offered and timeframe not in offered:
        raise ExchangeError(
            f"{exchange.id} has no {timeframe!r} candles (it has {', '.join(offered)})"
        )
    try:
        markets = exchange.load_markets()
    except ccxt.BaseError as err:
        raise ExchangeError(
            f"{exchange.id}: loading its markets: {type(err).__name__}: {_short(err)}"
        ) from err
    if symbol not in markets:
        raise ExchangeError(f"{exchange.id} lists no market {symbol!r}")


def download_ohlcv(
    exchange: ccxt.Exchange,
    pair: str,
    timeframe: str,
    *,
    since: datetime,
    until: datetime,
    limit: int = 1000,
    complete: bool = False,
) -> pd.DataFrame:
    """Download the CLOSED candles of ``pair`` opening in ``[since, until)`` and closing by
    ``until`` (``open_time + timeframe <= until``).

    Pages through ``exchange.fetch_ohlcv(pair, timeframe, since=ms, limit=limit)`` (ccxt
    unified ``[open_ms, open, high, low, close, volume]`` rows), each page starting at the
    open time after the previous page's last candle, until a page reaches ``until`` or
    comes back empty. ``complete``: an empty page where two candles closing by ``until``
    were due is an :class:`ExchangeError` (nothing returned), not the end of the data (ccxt
    reads an HTML error page as no candles: a reviewer's download ended a month short,
    exit 0); without it (paper trading, which says when steps get no new candle) it
    ends the download. Overlapping candles are deduplicated (the latest page wins), then
    the candles go through the same validation as the file loaders (gaps logged, never
    filled). Returns the canonical frame (UTC ``DatetimeIndex`` ``date`` of open times;
    float64 ``open..close`` in quote currency, ``volume`` in base currency); empty if there
    are no closed candles.

    ``since``/``until`` must be timezone-aware and ``limit`` >= 1 (ValueError otherwise);
    an invalid timeframe raises DataError. Raises ExchangeError for any ccxt error
    (network, HTTP error, rate limit, unknown symbol) or candles that fail validation.
    """
    start_ms, end_ms = _epoch_ms(since, "since"), _epoch_ms(until, "until")
    if limit < 1:
        raise ValueError("limit must be >= 1")
    timeframe_seconds(timeframe)
    where = f"{getattr(exchange, 'id', 'exchange')} {pair} {timeframe}"
    candles: list[list[Any]] = []
    cursor = start_ms
    try:
        for _ in range(_MAX_PAGES):
            if cursor >= end_ms:
                break
            page = exchange.fetch_ohlcv(pair, timeframe, since=cursor, limit=limit)
            if not page:
                # two candles due, not one: an exchange may publish a candle a moment
                # after its close, and --until defaults to now
                due = _next_open_ms(_next_open_ms(cursor, timeframe), timeframe)
                if complete and due <= end_ms:
                    raise ExchangeError(
                        f"{where}: no candles from {_iso(cursor)} although they close by "
                        f"{_iso(end_ms)} (an error page, or no trading for {limit} "
                        "candles: --since after the halt); nothing written"
                    )
                break
            last_open = _open_ms(page[-1], where)
            candles.extend(page)
            next_open = _next_open_ms(last_open, timeframe)
            if next_open >= end_ms or last_open < cursor:
                break
            cursor = next_open
    except ccxt.BaseError as err:
        raise ExchangeError(f"{where}: {type(err).__name__}: {_short(err)}") from err
    if not candles:
        return empty_ohlcv()
    try:
        table = pd.DataFrame([row[:6] for row in candles], columns=["date", *VALUE_COLUMNS])
    except (TypeError, ValueError) as err:
        raise ExchangeError(f"{where}: malformed candles ({err})") from None
    table = table.drop_duplicates(subset="date", keep="last").reset_index(drop=True)
    rows = np.arange(len(table), dtype=np.int64) + 1
    try:
        dates = coerce_dates(table["date"], rows=rows, source=where)
        values = coerce_numbers(table, rows=rows, source=where)
        keep = (dates >= pd.Timestamp(start_ms, unit="ms", tz="UTC")) & (
            pd.Series(close_times(pd.DatetimeIndex(dates), timeframe)) <= pd.Timestamp(until)
        )
        keep_mask = keep.to_numpy()
        if not keep_mask.any():
            return empty_ohlcv()
        result = validate_candles(
            dates[keep_mask].reset_index(drop=True),
            values[keep_mask].reset_index(drop=True),
            rows=rows[keep_mask],
            timeframe=timeframe,
            source=where,
        )
    except DataError as err:
        raise ExchangeError(f"invalid candles from {err}") from None
    return result.frame


def fills_from_ccxt_trades(
    trades: list[dict[str, Any]], *, trader_id: str, source: str
) -> list[Fill]:
    """Convert ccxt unified trades (``exchange.fetch_my_trades(...)``) to :class:`Fill`\\ s,
    sorted by time (stable).

    Uses the unified keys ``id, order, timestamp (ms), symbol, side, price, amount, cost,
    takerOrMaker, fee {cost, currency}`` (or ``fees`` when they share one currency);
    ``cost`` defaults to ``price * amount``. ``direction`` is the exchange's position
    direction when its raw ``info`` carries one (Hyperliquid ``dir``); else, for a spot
    symbol, the side (``buy``/``sell``), and for a perp (a symbol with a settle currency,
    ``BTC/USDT:USDT``) what the fill did to the position before it (``info
    .startPosition``, else the position the trades so far built, from 0): open, close or
    flip (:func:`perp_direction`; a Binance-futures sell that opened a short had read as
    a spot sale, a closing fill). ``info`` also gives ``realized_pnl`` (``closedPnl``;
    Binance futures ``realizedPnl``), ``start_position`` and ``tx_hash``. A trade without
    ``id`` gets a stable hash id.

    Raises ExchangeError naming the trade's position for a trade that cannot be converted.
    """
    fills: list[Fill] = []
    seen: dict[str, int] = {}
    held: dict[str, float] = {}  # a perp symbol's position built so far (base units)
    ordered = sorted(enumerate(trades), key=lambda item: _time_of(item[1]))
    for position, trade in ordered:
        try:
            fill = _fill_from_trade(trade, trader_id=trader_id, source=source, seen=seen)
            info = trade.get("info") or {}
            if fill.market_type == "perp" and not info.get("dir"):
                fill = _perp_fill(fill, held, str(info.get("positionSide") or "").upper())
            fills.append(fill)
        except ValidationError as err:
            first = err.errors()[0]
            field = ".".join(str(part) for part in first["loc"])
            raise ExchangeError(
                f"trade {position} (id {trade.get('id')!r}): field '{field}': {first['msg']}"
            ) from None
        except (KeyError, TypeError, ValueError) as err:
            raise ExchangeError(f"trade {position} (id {trade.get('id')!r}): {err!r}") from None
    return sorted(fills, key=lambda fill: fill.timestamp)


def _perp_fill(fill: Fill, held: dict[str, float], hedge_side: str) -> Fill:
    """``fill`` (a perp trade without a position direction) with its direction: in hedge
    mode (Binance ``positionSide`` LONG/SHORT) a buy opens a long or closes a short; in
    one-way mode, :func:`perp_direction` of the position before it (``startPosition``,
    else ``held``, the trades so far), which is kept as its ``start_position``. A fill
    from a flat book that realised PnL closed a position held before the trades given."""
    buy = fill.side == "buy"
    if hedge_side in ("LONG", "SHORT"):
        opens = buy == (hedge_side == "LONG")
        kind = ("open_" if opens else "close_") + hedge_side.lower()
        return fill.model_copy(update={"direction": kind})
    inferred = fill.start_position is None
    before = held.get(fill.symbol, 0.0) if inferred else float(fill.start_position or 0.0)
    direction = perp_direction(before, fill.side, fill.amount)
    if inferred and before == 0.0 and fill.realized_pnl:  # closed what was held before:
        direction = "close_short" if buy else "close_long"  # at least this much, of an
        before = -fill.amount if buy else fill.amount  # age nobody knows
        held[fill.symbol] = 0.0
    else:
        held[fill.symbol] = before + (fill.amount if buy else -fill.amount)
    return fill.model_copy(update={"direction": direction, "start_position": before})


def _time_of(trade: Mapping[str, Any]) -> int:
    try:
        return int(trade["timestamp"])
    except (KeyError, TypeError, ValueError):
        return 0  # named by the conversion's own error


def perp_direction(before: float, side: str, amount: float) -> Direction:
    """What a perp fill of ``amount`` base units on ``side`` did to a position of
    ``before`` (signed base units): opened (or added to) a long or short, closed (part
    of) one, or flipped it."""
    if abs(before) <= 1e-12 * max(1.0, amount):
        return "open_long" if side == "buy" else "open_short"
    if (before > 0) == (side == "buy"):
        return "open_long" if before > 0 else "open_short"
    if amount <= abs(before) * (1 + 1e-9):
        return "close_long" if before > 0 else "close_short"
    return "flip_long_to_short" if before > 0 else "flip_short_to_long"


def _fill_from_trade(
    trade: Mapping[str, Any], *, trader_id: str, source: str, seen: dict[str, int]
) -> Fill:
    info: Mapping[str, Any] = trade.get("info") or {}
    timestamp = int(trade["timestamp"])
    if not 0 <= timestamp < 9_200_000_000_000:  # what datetime64[ns] holds (2262)
        raise ValueError(f"timestamp {timestamp} ms is out of range (1970..2261)")
    price, amount = float(trade["price"]), float(trade["amount"])
    cost = trade.get("cost")
    fee_cost, fee_currency = _fee(trade)
    side = str(trade["side"])
    raw_direction = str(info.get("dir") or side)
    pnl = info.get("closedPnl", info.get("realizedPnl"))
    start = info.get("startPosition")
    symbol = str(trade["symbol"])
    order = trade.get("order")
    trade_id = trade.get("id")
    if not trade_id:
        key = "\x1f".join(map(str, (trader_id, order, timestamp, price, amount, side, symbol)))
        seen[key] = seen.get(key, -1) + 1
        digest = hashlib.sha256(f"{key}\x1f{seen[key]}".encode()).hexdigest()[:32]
        trade_id = f"{source}-{digest}"
    return Fill(
        id=str(trade_id),
        order=None if order is None else str(order),
        timestamp=timestamp,
        datetime=EPOCH + timedelta(milliseconds=timestamp),
        symbol=symbol,
        side=side,
        price=price,
        amount=amount,
        cost=price * amount if cost is None else float(cost),
        fee_cost=fee_cost,
        fee_currency=fee_currency,
        taker_or_maker=trade.get("takerOrMaker"),
        trader_id=trader_id,
        realized_pnl=None if pnl is None else float(pnl),
        direction=direction_from_text(raw_direction),
        raw_direction=raw_direction,
        start_position=None if start is None else float(start),
        market_type="perp" if ":" in symbol else "spot",
        source=source,
        tx_hash=info.get("hash"),
    )


def _fee(trade: Mapping[str, Any]) -> tuple[float, str | None]:
    fee = trade.get("fee")
    if fee and fee.get("cost") is not None:
        return float(fee["cost"]), fee.get("currency")
    fees = [f for f in trade.get("fees") or [] if f and f.get("cost") is not None]
    currencies = {f.get("currency") for f in fees}
    if len(currencies) == 1:
        return sum(float(f["cost"]) for f in fees), currencies.pop()
    if fees:
        raise ValueError(f"fees in several currencies: {sorted(map(str, currencies))}")
    return 0.0, None


def _epoch_ms(moment: datetime, name: str) -> int:
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError(f"{name} must be a timezone-aware datetime")
    return (moment - EPOCH) // timedelta(milliseconds=1)


def _next_open_ms(open_ms: int, timeframe: str) -> int:
    opened = pd.DatetimeIndex([pd.Timestamp(open_ms, unit="ms", tz="UTC")])
    return int(close_times(opened, timeframe)[0].value // 1_000_000)


def _iso(ms: int) -> str:
    return pd.Timestamp(ms, unit="ms", tz="UTC").isoformat()


def _open_ms(candle: Any, where: str) -> int:
    try:
        return int(candle[0])
    except (TypeError, ValueError, IndexError, KeyError):
        raise ExchangeError(f"{where}: malformed candle {candle!r:.80}") from None


def _short(err: BaseException, limit: int = 200) -> str:
    """One line, query strings elided (signed requests carry signatures there), capped."""
    text = _QUERY.sub("?...", " ".join(str(err).split()))
    return text if len(text) <= limit else text[: limit - 3] + "..."

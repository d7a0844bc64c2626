"""Market, trade and news inputs of CryptoSentinel memory.

* OHLCV candle files in a freqtrade-style data dir (:mod:`backend.data.ohlcv`);
* exchanges through ccxt: candle downloads, fills from ``fetch_my_trades``
  (:mod:`backend.data.exchange`);
* the Hyperliquid fills export (:mod:`backend.data.fills`);
* news headlines and the Fear & Greed index (:mod:`backend.data.news`);
* the models (:mod:`backend.data.models`).

Loaders raise :class:`~backend.errors.DataError` (file, row, field) for bad inputs and
:class:`~backend.errors.ExchangeError` for exchange failures; they log on ``backend.data``.
"""

from __future__ import annotations

from backend.data._candles import close_times, period_steps
from backend.data.exchange import (
    check_market,
    download_ohlcv,
    fills_from_ccxt_trades,
    make_exchange,
    point_exchange_at,
)
from backend.data.fills import FILL_COLUMNS, fills_to_frame, load_hyperliquid_fills
from backend.data.models import Direction, Fill, Gap, Headline, MarketType, OHLCVFrame
from backend.data.news import load_fear_greed, load_headlines
from backend.data.ohlcv import (
    OHLCV_FORMATS,
    find_gaps,
    find_ohlcv_file,
    grid_origin,
    load_ohlcv,
    ohlcv_filename,
    read_ohlcv_file,
    timeframe_seconds,
    update_ohlcv,
    write_ohlcv,
)

__all__ = [
    "FILL_COLUMNS",
    "OHLCV_FORMATS",
    "Direction",
    "Fill",
    "Gap",
    "Headline",
    "MarketType",
    "OHLCVFrame",
    "check_market",
    "close_times",
    "download_ohlcv",
    "fills_from_ccxt_trades",
    "fills_to_frame",
    "find_gaps",
    "find_ohlcv_file",
    "grid_origin",
    "load_fear_greed",
    "load_headlines",
    "load_hyperliquid_fills",
    "load_ohlcv",
    "make_exchange",
    "ohlcv_filename",
    "period_steps",
    "point_exchange_at",
    "read_ohlcv_file",
    "timeframe_seconds",
    "update_ohlcv",
    "write_ohlcv",
]

"""A loopback HTTP server that answers like Binance's public REST API, from real candles.

Serves, for the one pair of a freqtrade-style ``BASE_QUOTE-TIMEFRAME.csv.gz`` file:

* ``GET /api/v3/exchangeInfo`` - a minimal valid spot payload with that symbol (what
  ``ccxt.binance.fetch_markets`` reads), and empty ``/fapi/v1`` / ``/dapi/v1`` variants, so
  ``load_markets()`` works with ccxt's default market types;
* ``GET /api/v3/klines?symbol=&interval=&startTime=&endTime=&limit=`` - the file's candles in
  Binance's wire format ``[openTime, "open", "high", "low", "close", "volume", closeTime,
  "quoteVolume", trades, "takerBase", "takerQuote", "0"]`` (Binance semantics: candles with
  ``startTime <= openTime <= endTime``, default limit 500, max 1000, without ``startTime``
  the latest ones);
* ``GET /api/v3/myTrades?symbol=&startTime=&endTime=&limit=`` - the account trades put in
  ``server.my_trades`` (Binance's wire format: ``symbol, id, orderId, price, qty,
  quoteQty, commission, commissionAsset, time, isBuyer, isMaker, isBestMatch``; same
  window semantics on ``time``, oldest first), and empty lists for the account endpoints
  ccxt's ``load_markets`` asks once credentials are set (currencies, margin pairs).
  Signatures are not checked.

The file is parsed with the standard library (not with ``backend.data``), so tests compare
the package's loaders against an independent reading. Set ``server.fault_status`` (e.g. 500
or 429) to make every request fail, ``server.failing_klines`` to fail some candle
requests; ``server.requests`` records the paths requested.

Usage::

    server, base_url = start_binance_server(path)
    exchange = make_exchange("binance", api_base_url=base_url)
    ...
    server.shutdown(); server.server_close()
"""

from __future__ import annotations

import bisect
import csv
import gzip
import io
import json
import re
import threading
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

__all__ = ["BinanceLoopbackServer", "start_binance_server"]

_NAME = re.compile(r"^(?P<base>[A-Z0-9]+)_(?P<quote>[A-Z0-9]+)-(?P<tf>\d+[mhdwM])\.csv\.gz$")
_EMPTY_ACCOUNT_LISTS = frozenset(
    {
        "/sapi/v1/capital/config/getall",
        "/sapi/v1/margin/allPairs",
        "/sapi/v1/margin/isolated/allPairs",
    }
)
_UNIT_MS = {"m": 60_000, "h": 3_600_000, "d": 86_400_000, "w": 604_800_000}


def _decimal(value: str) -> str:
    """Binance prints numbers as strings with 8 decimals."""
    return f"{float(value):.8f}"


class BinanceLoopbackServer(ThreadingHTTPServer):
    """``ThreadingHTTPServer`` on ``127.0.0.1:<free port>`` serving one pair's candles."""

    daemon_threads = True

    def __init__(self, candles_csv_gz: Path) -> None:
        match = _NAME.match(candles_csv_gz.name)
        if match is None:
            raise ValueError(f"expected BASE_QUOTE-TF.csv.gz, got {candles_csv_gz.name}")
        self.base, self.quote = match["base"], match["quote"]
        self.symbol = self.base + self.quote
        self.interval = match["tf"]
        frame_ms = int(self.interval[:-1]) * _UNIT_MS[self.interval[-1]]
        self.open_times: list[int] = []
        self.klines: list[list[Any]] = []
        text = gzip.decompress(candles_csv_gz.read_bytes()).decode("utf-8")
        for row in csv.DictReader(io.StringIO(text)):
            open_ms = int(datetime.fromisoformat(row["date"]).timestamp() * 1000)
            volume = float(row["volume"])
            self.open_times.append(open_ms)
            self.klines.append(
                [
                    open_ms,
                    _decimal(row["open"]),
                    _decimal(row["high"]),
                    _decimal(row["low"]),
                    _decimal(row["close"]),
                    _decimal(row["volume"]),
                    open_ms + frame_ms - 1,
                    f"{volume * float(row['close']):.8f}",
                    100,
                    f"{volume / 2:.8f}",
                    f"{volume * float(row['close']) / 2:.8f}",
                    "0",
                ]
            )
        self.fault_status: int | None = None
        self.failing_klines: set[int] = set()  # these klines requests (1 = the first) get 500
        self.html_klines: set[int] = set()  # these get 200 and an HTML page (ccxt: no rows)
        self.requests: list[str] = []
        self.my_trades: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        super().__init__(("127.0.0.1", 0), _BinanceHandler)

    @property
    def base_url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host!s}:{port}"

    def record(self, path: str) -> None:
        with self._lock:
            self.requests.append(path)

    def exchange_info(self, spot: bool) -> dict[str, Any]:
        symbols = [self._symbol_info()] if spot else []
        return {
            "timezone": "UTC",
            "serverTime": self.open_times[-1] if self.open_times else 0,
            "rateLimits": [
                {
                    "rateLimitType": "REQUEST_WEIGHT",
                    "interval": "MINUTE",
                    "intervalNum": 1,
                    "limit": 6000,
                }
            ],
            "exchangeFilters": [],
            "symbols": symbols,
        }

    def _symbol_info(self) -> dict[str, Any]:
        return {
            "symbol": self.symbol,
            "status": "TRADING",
            "baseAsset": self.base,
            "baseAssetPrecision": 8,
            "quoteAsset": self.quote,
            "quotePrecision": 8,
            "quoteAssetPrecision": 8,
            "baseCommissionPrecision": 8,
            "quoteCommissionPrecision": 8,
            "orderTypes": ["LIMIT", "LIMIT_MAKER", "MARKET", "STOP_LOSS_LIMIT"],
            "icebergAllowed": True,
            "ocoAllowed": True,
            "quoteOrderQtyMarketAllowed": True,
            "allowTrailingStop": True,
            "cancelReplaceAllowed": True,
            "isSpotTradingAllowed": True,
            "isMarginTradingAllowed": False,
            "filters": [
                {
                    "filterType": "PRICE_FILTER",
                    "minPrice": "0.01000000",
                    "maxPrice": "1000000.00000000",
                    "tickSize": "0.01000000",
                },
                {
                    "filterType": "LOT_SIZE",
                    "minQty": "0.00001000",
                    "maxQty": "9000.00000000",
                    "stepSize": "0.00001000",
                },
                {"filterType": "NOTIONAL", "minNotional": "5.00000000", "applyMinToMarket": True},
            ],
            "permissions": [],
            "permissionSets": [["SPOT"]],
            "defaultSelfTradePreventionMode": "EXPIRE_MAKER",
            "allowedSelfTradePreventionModes": ["EXPIRE_TAKER", "EXPIRE_MAKER", "EXPIRE_BOTH"],
        }

    def klines_between(self, start: int | None, end: int | None, limit: int) -> list[list[Any]]:
        lo = 0 if start is None else bisect.bisect_left(self.open_times, start)
        hi = len(self.open_times) if end is None else bisect.bisect_right(self.open_times, end)
        if start is None:
            lo = max(lo, hi - limit)
        return self.klines[lo : min(hi, lo + limit)]

    def trades_between(
        self, symbol: str, start: int | None, end: int | None, limit: int
    ) -> list[dict[str, Any]]:
        mine = sorted(
            (t for t in self.my_trades if t["symbol"] == symbol),
            key=lambda t: (int(t["time"]), int(t["id"])),
        )
        picked = [
            t
            for t in mine
            if (start is None or int(t["time"]) >= start) and (end is None or int(t["time"]) <= end)
        ]
        return picked[:limit] if start is not None else picked[-limit:]


class _BinanceHandler(BaseHTTPRequestHandler):
    server: BinanceLoopbackServer
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        self.server.record(self.path)
        if self.server.fault_status is not None:
            status = self.server.fault_status
            if status == 429:
                self._send(429, {"code": -1003, "msg": "Too many requests; IP banned."})
            else:
                self._send(status, "<html><body>Internal Server Error</body></html>")
            return
        url = urlsplit(self.path)
        query = {key: values[-1] for key, values in parse_qs(url.query).items()}
        if url.path.endswith("/exchangeInfo"):
            self._send(200, self.server.exchange_info(spot=url.path == "/api/v3/exchangeInfo"))
        elif url.path == "/api/v3/klines":
            self._klines(query)
        elif url.path == "/api/v3/myTrades":
            self._my_trades(query)
        elif url.path in _EMPTY_ACCOUNT_LISTS:
            self._send(200, [])
        elif url.path == "/api/v3/ping":
            self._send(200, {})
        else:
            self._send(404, {"code": -1000, "msg": f"unknown path {url.path}"})

    def _klines(self, query: dict[str, str]) -> None:
        asked = sum("/klines" in path for path in self.server.requests)
        if asked in self.server.failing_klines:
            self._send(500, "<html><body>Internal Server Error</body></html>")
            return
        if asked in self.server.html_klines:  # a proxy's maintenance page, status 200
            self._send(200, "<html><body>Back soon</body></html>")
            return
        if query.get("symbol") != self.server.symbol:
            self._send(400, {"code": -1121, "msg": "Invalid symbol."})
            return
        if query.get("interval") != self.server.interval:
            self._send(400, {"code": -1120, "msg": "Invalid interval."})
            return
        try:
            limit = min(int(query.get("limit", "500")), 1000)
            start = int(query["startTime"]) if "startTime" in query else None
            end = int(query["endTime"]) if "endTime" in query else None
        except ValueError:
            self._send(400, {"code": -1100, "msg": "Illegal characters found in a parameter."})
            return
        self._send(200, self.server.klines_between(start, end, limit))

    def _my_trades(self, query: dict[str, str]) -> None:
        try:
            limit = min(int(query.get("limit", "500")), 1000)
            start = int(query["startTime"]) if "startTime" in query else None
            end = int(query["endTime"]) if "endTime" in query else None
        except ValueError:
            self._send(400, {"code": -1100, "msg": "Illegal characters found in a parameter."})
            return
        symbol = query.get("symbol", "")
        self._send(200, self.server.trades_between(symbol, start, end, limit))

    def _send(self, status: int, payload: Any) -> None:
        if isinstance(payload, str):
            body, kind = payload.encode(), "text/html"
        else:
            body, kind = json.dumps(payload).encode(), "application/json"
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        """Keep test output quiet."""


def start_binance_server(candles_csv_gz: Path) -> tuple[ThreadingHTTPServer, str]:
    """Start a :class:`BinanceLoopbackServer` for ``candles_csv_gz`` in a daemon thread.

    Returns ``(server, base_url)``, e.g. ``http://127.0.0.1:54321``; stop it with
    ``server.shutdown(); server.server_close()``.
    """
    server = BinanceLoopbackServer(Path(candles_csv_gz))
    thread = threading.Thread(target=server.serve_forever, name="binance-loopback", daemon=True)
    thread.start()
    return server, server.base_url

"""Small builders for synthetic fills and a loopback OpenAI chat-completions server."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Literal

from backend.data import Fill
from backend.data.models import Direction

T0 = datetime(2025, 1, 6, 12, 0, tzinfo=UTC)


def fill(
    n: int,
    *,
    hours: float,
    side: Literal["buy", "sell"],
    amount: float,
    price: float = 100.0,
    direction: Direction,
    start: float | None,
    pnl: float = 0.0,
    symbol: str = "BTC/USDC:USDC",
    trader: str = "trader-1",
    order: str | None = None,
) -> Fill:
    """Fill number ``n`` at ``T0 + hours``; cost = price * amount."""
    at = T0 + timedelta(hours=hours)
    return Fill(
        id=f"f{n:04d}",
        order=order or f"o{n:04d}",
        timestamp=round(at.timestamp() * 1000),
        datetime=at,
        symbol=symbol,
        side=side,
        price=price,
        amount=amount,
        cost=price * amount,
        fee_cost=0.01,
        fee_currency="USDC",
        taker_or_maker="taker",
        trader_id=trader,
        realized_pnl=pnl,
        direction=direction,
        raw_direction=direction,
        start_position=start,
        market_type="spot" if symbol.startswith("@") else "perp",
        source="test",
        tx_hash=None,
    )


class _ChatHandler(BaseHTTPRequestHandler):
    server: ChatServer

    def log_message(self, *args: Any) -> None:
        pass

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length", 0))
        body = json.loads(self.rfile.read(length) or b"{}")
        self.server.requests.append({"path": self.path, "body": body})
        status, content = self.server.reply
        if status != 200:
            payload = json.dumps({"error": {"message": "scripted failure", "type": "x"}})
        else:
            payload = json.dumps(
                {
                    "id": "chatcmpl-1",
                    "object": "chat.completion",
                    "created": 0,
                    "model": body.get("model", "m"),
                    "choices": [
                        {
                            "index": 0,
                            "finish_reason": "stop",
                            "message": {"role": "assistant", "content": content},
                        }
                    ],
                    "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15},
                }
            )
        data = payload.encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


class ChatServer(ThreadingHTTPServer):
    """``POST /v1/chat/completions`` answers ``reply`` = ``(status, message content)``."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _ChatHandler)
        self.reply: tuple[int, str] = (200, "{}")
        self.requests: list[dict[str, Any]] = []

    @property
    def port(self) -> int:
        return int(self.server_address[1])


@contextmanager
def chat_server() -> Iterator[ChatServer]:
    server = ChatServer()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)

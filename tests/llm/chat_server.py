"""A loopback HTTP server speaking OpenAI chat completions, with scripted faults.

Each request to ``POST /v1/chat/completions`` takes the next scripted reply (the last one
repeats): a good structured answer, malformed JSON, an HTTP status (e.g. 429 with
``Retry-After``, 500), a slow answer, or raw bytes (e.g. a response cut off mid-body).
Requests are recorded (with their arrival time, ``time.monotonic()``) for assertions.
``reject_formats`` makes the server answer HTTP 500 to those ``response_format`` types
without taking a reply (as llama-cpp-python's server does for ``json_schema``), and
``probe`` is what it answers a structured-output probe (the request of
``backend.llm.client.detect_mode``) without taking a reply; probes are recorded in
``probes``, not ``requests``.
This is the network edge: the openai client under test is real.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Reply:
    """One scripted reply: ``content`` (assistant message text) or ``status`` (an error)."""

    content: str | None = None
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    delay_s: float = 0.0
    finish_reason: str = "stop"
    error_message: str = "scripted failure"
    """The ``error.message`` of a non-200 reply (a real API may echo request details)."""
    raw: bytes | None = None
    """Sent as is instead of an HTTP response, then the connection is closed."""

    @classmethod
    def json(cls, obj: Any, **kw: Any) -> Reply:
        return cls(content=json.dumps(obj), **kw)


class ChatServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.script: list[Reply] = [Reply(content="{}")]
        self.requests: list[dict[str, Any]] = []
        self.lock = threading.Lock()
        self.probes: list[dict[str, Any]] = []
        """Structured-output probes (not in ``requests``)."""
        self.reject_formats: set[str] = set()
        self.probe: Reply = Reply(content='{"ok": true}')
        self.models: list[str] | None = None
        """``GET /v1/models`` lists these; None: 404, as a server that lists none."""

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/v1"

    def next_reply(self) -> Reply:
        with self.lock:
            return self.script.pop(0) if len(self.script) > 1 else self.script[0]


class _Handler(BaseHTTPRequestHandler):
    server: ChatServer

    def log_message(self, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        models = self.server.models
        if self.path.rstrip("/").endswith("/models") and models is not None:
            listed = [{"id": m, "object": "model", "created": 0, "owned_by": "me"} for m in models]
            payload, status = json.dumps({"object": "list", "data": listed}).encode(), 200
        else:
            payload, status = b'{"error": {"message": "not found"}}', 404
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
        probe = _is_probe(body)
        with self.server.lock:
            (self.server.probes if probe else self.server.requests).append(
                {
                    "path": self.path,
                    "auth": self.headers.get("Authorization"),
                    "body": body,
                    "t": time.monotonic(),
                }
            )
        fmt = (body.get("response_format") or {}).get("type")
        if fmt in self.server.reject_formats:
            reply = Reply(status=500, error_message=f"response_format {fmt} not supported")
        elif probe:
            reply = self.server.probe
        else:
            reply = self.server.next_reply()
        if reply.delay_s:
            time.sleep(reply.delay_s)
        if reply.raw is not None:
            self.wfile.write(reply.raw)
            self.wfile.flush()
            self.close_connection = True
            return
        if reply.status != 200:
            payload = json.dumps({"error": {"message": reply.error_message, "type": "x"}}).encode()
        else:
            payload = json.dumps(
                {
                    "id": "chatcmpl-test",
                    "object": "chat.completion",
                    "created": 0,
                    "model": body.get("model", "m"),
                    "choices": [
                        {
                            "index": 0,
                            "finish_reason": reply.finish_reason,
                            "message": {"role": "assistant", "content": reply.content},
                        }
                    ],
                    "usage": {"prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18},
                }
            ).encode()
        try:
            self.send_response(reply.status)
            for key, value in reply.headers.items():
                self.send_header(key, value)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client timed out and went away


def _is_probe(body: dict[str, Any]) -> bool:
    return any('{"ok": true}' in str(m.get("content")) for m in body.get("messages", []))


def start_chat_server() -> ChatServer:
    server = ChatServer()
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server

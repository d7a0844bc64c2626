"""The OpenAI-compatible provider against a loopback server speaking /v1/embeddings."""

from __future__ import annotations

import json
import os
import subprocess
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from backend.config import EmbeddingSettings
from backend.embeddings import OpenAIEmbedder, build_embedder
from backend.errors import ConfigError, EmbeddingError
from tests.sentinel_cli import sentinel

KEY = "sk-test-DO-NOT-LEAK-1234567890"


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def log_message(self, *args: Any) -> None:
        pass

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.server.requests.append({"auth": self.headers.get("Authorization"), **body})
        after = self.server.fail_after
        if self.server.fail_status or (after is not None and len(self.server.requests) > after):
            payload = json.dumps({"error": {"message": "boom", "type": "server_error"}}).encode()
            self.send_response(self.server.fail_status or 500)
            self.send_header("retry-after-ms", "1")  # the client's retries, without waits
        else:
            dim = self.server.dim
            data = []
            for i, text in enumerate(body["input"]):
                rng = np.random.default_rng(abs(hash(text)) % 2**32)
                data.append(
                    {
                        "object": "embedding",
                        "index": i,
                        "embedding": (rng.normal(size=dim) * 3).tolist(),
                    }
                )
            data.reverse()  # the API does not promise order: the client must sort by index
            payload = json.dumps(
                {
                    "object": "list",
                    "data": data,
                    "model": body["model"],
                    "usage": {"prompt_tokens": 1, "total_tokens": 1},
                }
            ).encode()
            self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)


class _Server(ThreadingHTTPServer):
    requests: list[dict[str, Any]]
    fail_status = 0
    fail_after: int | None = None  # HTTP 500 from this many requests on
    dim = 16


@pytest.fixture()
def server() -> Iterator[_Server]:
    srv = _Server(("127.0.0.1", 0), _Handler)
    srv.requests = []
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()


def _settings(srv: _Server, **kw: Any) -> EmbeddingSettings:
    host, port = srv.server_address[:2]
    return EmbeddingSettings(
        provider="openai",
        openai_base_url=f"http://{host!s}:{port}/v1",
        openai_model="emb-x",
        openai_dimensions=16,
        batch_size=3,
        api_key=KEY,
        cache_dir=None,  # the provider itself (the cache is tested in test_cache.py)
        **kw,
    )


def test_batches_orders_and_normalises(server: _Server) -> None:
    emb = build_embedder(_settings(server))
    assert isinstance(emb, OpenAIEmbedder) and emb.model_id == "openai:emb-x"
    texts = [f"text {i}" for i in range(7)] + [""]
    vectors = emb.embed(texts)
    assert vectors.shape == (8, 16)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert [len(r["input"]) for r in server.requests] == [3, 3, 2]
    assert server.requests[-1]["input"][-1] == " "  # empty text sent as a space
    assert all(r["auth"] == f"Bearer {KEY}" and r["model"] == "emb-x" for r in server.requests)
    np.testing.assert_allclose(vectors[4], emb.embed_one("text 4"), atol=1e-6)  # order kept


def test_errors_are_clear_and_never_contain_the_key(server: _Server) -> None:
    server.fail_status = 500
    emb = build_embedder(_settings(server))
    emb._client = emb._client.with_options(max_retries=0)  # type: ignore[attr-defined]
    with pytest.raises(EmbeddingError, match="HTTP 500") as err:
        emb.embed(["x"])
    assert KEY not in str(err.value)
    server.fail_status = 0
    server.dim = 8
    with pytest.raises(EmbeddingError, match="dimension 8"):
        build_embedder(_settings(server)).embed(["x"])


def test_a_dead_endpoint_opens_the_breaker_and_a_bad_request_does_not(server: _Server) -> None:
    """Three requests in a row failed at the endpoint (HTTP 500): the next embedding
    fails at once, without a request, saying why and until when; an HTTP 400 (the
    caller's fault) does not count and starts the count over."""
    emb = build_embedder(_settings(server, breaker_failures=3, breaker_cooldown_s=60))
    emb._client = emb._client.with_options(max_retries=0)  # type: ignore[attr-defined]
    server.fail_status = 500
    for _ in range(2):
        with pytest.raises(EmbeddingError, match="HTTP 500"):
            emb.embed(["x"])
    server.fail_status = 400
    with pytest.raises(EmbeddingError, match="HTTP 400"):
        emb.embed(["x"])
    server.fail_status = 500
    for _ in range(3):
        with pytest.raises(EmbeddingError, match="HTTP 500"):
            emb.embed(["x"])
    asked = len(server.requests)
    assert asked == 6
    server.fail_status = 0  # back, but the breaker is open for 60 s
    with pytest.raises(EmbeddingError, match="skipped: 3 requests in a row") as err:
        emb.embed(["y"])
    assert "last: HTTP 500" in str(err.value) and "embedding.breaker_cooldown_s" in str(err.value)
    assert len(server.requests) == asked and KEY not in str(err.value)
    never = build_embedder(_settings(server, breaker_failures=0))
    never._client = never._client.with_options(max_retries=0)  # type: ignore[attr-defined]
    server.fail_status = 500
    for _ in range(5):
        with pytest.raises(EmbeddingError, match="HTTP 500"):
            never.embed(["x"])
    assert len(server.requests) == asked + 5


def test_openai_needs_a_key() -> None:
    with pytest.raises(ConfigError, match="SENTINEL_EMBEDDING__API_KEY"):
        build_embedder(EmbeddingSettings(provider="openai"))


@pytest.mark.slow
@pytest.mark.data
def test_an_endpoint_that_dies_mid_backtest_is_a_memory_failure_not_the_end_of_the_run(
    server: _Server, shared_data: Path, tmp_path: Path
) -> None:
    """A reviewer's run: the embedding endpoint failing from its 8th request ended a
    backtest with exit 2 at a working-memory consolidation, with no output written and
    the store filled up to that bar (so the same command was then refused). It is a
    memory failure of the bars it hits: the run ends, writes everything and exits 3."""
    server.fail_after = 3
    host, port = server.server_address[:2]
    env = {**os.environ, "SENTINEL_EMBEDDING__PROVIDER": "openai",
           "SENTINEL_EMBEDDING__OPENAI_BASE_URL": f"http://{host!s}:{port}/v1",
           "SENTINEL_EMBEDDING__OPENAI_DIMENSIONS": "16", "SENTINEL_EMBEDDING__API_KEY": KEY,
           "SENTINEL_EMBEDDING__CACHE_DIR": "null"}  # fmt: skip
    out = tmp_path / "run"
    done = subprocess.run(
        [sentinel(), "backtest", "--pair", "BTC/USDT", "--timeframe", "1h",
         "--start", "2022-05-01", "--end", "2022-05-04",
         "--data-dir", str(shared_data / "market" / "binance"), "--out", str(out),
         "--store-path", str(tmp_path / "store")],
        capture_output=True, text=True, timeout=600, env=env,
    )  # fmt: skip
    assert done.returncode == 3, done.stderr[-3000:]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["memory_error_decisions"] > 0 and (out / "report.html").is_file()
    assert "HTTP 500 from the embeddings endpoint" in done.stderr and KEY not in done.stderr

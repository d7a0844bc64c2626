"""The chroma backend's reopen of an embedded chroma (its in-process index misses other
processes' writes): when the count of changes says so, never for this process's own
writes, and a reopen that fails."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
from chromadb.api import ClientAPI

from backend.config import StoreSettings
from backend.embeddings import HashingEmbedder
from backend.errors import StoreError
from backend.storage import KhalaStore, MemoryRecord, open_store
from backend.storage._chroma_backend import ChromaBackend
from backend.storage._client import make_chroma_client
from backend.storage._lexical import Filter

VEC = np.array([[1.0, 0.0, 0.0]], dtype=np.float32)


def _backend(tmp_path: Path, opens: list[int], *, fail_first: bool = False) -> ChromaBackend:
    settings = StoreSettings(path=tmp_path / "khala")

    def reopen() -> ClientAPI:
        opens.append(1)
        if fail_first and len(opens) == 1:
            raise StoreError("chroma path gone")
        return make_chroma_client(settings)

    backend = ChromaBackend(make_chroma_client(settings), hnsw={}, stemmer=None, reopen=reopen)
    backend.open("ttt", create={"dim": 3})
    backend.upsert("ttt", ["a"], VEC, ["alpha"], [{"created_at_ts": 1.0}])
    return backend


def _ids(backend: ChromaBackend, name: str) -> list[str]:
    return [row[0] for row in backend.dense(name, VEC[0], n=1, where=Filter(), as_of_ts=9.0)]


def test_only_another_process_write_reopens(tmp_path: Path) -> None:
    """Counts this process wrote, reported in either order (two writer threads), and a
    reader's count read before a write (lower than the index's) reopen nothing; a count
    past them (another process's write) reopens once."""
    opens: list[int] = []
    backend = _backend(tmp_path, opens)
    backend.validate("ttt", 1)
    backend.written("ttt", 3)  # a second writer thread reports first
    backend.written("ttt", 2)
    backend.validate("ttt", 2)  # a reader's count from before the last write
    backend.validate("ttt", 3)
    assert opens == []
    backend.validate("ttt", 4)  # another process
    backend.validate("ttt", 4)
    assert opens == [1] and _ids(backend, "ttt") == ["a"]
    backend.written("ttt", 6)  # a gap: change 5 is another process's
    backend.validate("ttt", 6)
    assert opens == [1, 1]


def test_a_failed_reopen_is_an_error_and_the_next_call_tries_again(tmp_path: Path) -> None:
    """The path went away for a moment (say): the read that reopens gets a StoreError;
    the next call, whatever it is (here a trader not opened before), reopens again, and
    every collection opened before is fetched again as it is used."""
    opens: list[int] = []
    backend = _backend(tmp_path, opens, fail_first=True)
    backend.validate("ttt", 1)  # the index reflects change 1
    with pytest.raises(StoreError, match="chroma path gone"):
        backend.validate("ttt", 2)  # another process wrote change 2
    assert backend.open("uuu", create={"dim": 3}) == {"dim": 3}  # a new trader: reopens
    assert len(opens) == 2
    assert _ids(backend, "ttt") == ["a"]
    assert set(backend.collections("")) >= {"ttt", "uuu"}


def test_a_reopen_for_one_trader_keeps_the_count_of_the_others(tmp_path: Path) -> None:
    """Another process writes alice, then bob. The reopen for alice's write must not
    forget where bob's index stood: had it, bob's next count would pass as already
    indexed (the new client loads bob's index at its first query, which may come before
    bob's write), and dense search would miss bob's new row for good."""
    opens: list[int] = []
    backend = _backend(tmp_path, opens)
    backend.open("bob", create={"dim": 3})
    backend.validate("ttt", 1)
    backend.validate("bob", 1)
    backend.validate("ttt", 2)  # another process wrote alice's ("ttt") collection
    assert opens == [1]
    backend.validate("bob", 2)  # ... and then bob's
    assert opens == [1, 1]


def _server_store_with_a_note(
    tmp_path: Path, port: int, prefix: str
) -> tuple[KhalaStore, MemoryRecord]:
    """A store on the chroma server at ``port`` holding one note, found by a search."""
    settings = StoreSettings(
        mode="server",
        host="127.0.0.1",
        port=port,
        path=tmp_path / "local",
        audit_path=tmp_path / "audit.db",
        collection_prefix=prefix,
    )
    now = datetime(2024, 1, 1, tzinfo=UTC)
    store = open_store(settings, HashingEmbedder())
    note = MemoryRecord(id="n1", trader_id="t", kind="note", text="hello", created_at=now)
    store.upsert("t", [note], as_of=now)
    assert store.search("t", "hello", as_of=now, top_k=1, method="dense")
    return store, note


@pytest.mark.server
def test_a_chroma_server_that_dies_is_a_store_error_naming_the_call(tmp_path: Path) -> None:
    """A chroma server killed under a running store: every read and write after it is a
    :class:`StoreError` naming chroma and the call (one error tree: the CLI prints one
    line and exits 2, the decision loop counts a failed tier). It was a raw
    ``httpx.ConnectError``, which ended a paper run as an internal error."""

    from tests.conftest import start_chroma_server

    proc, port = start_chroma_server(tmp_path)
    store, note = _server_store_with_a_note(tmp_path, port, "dies")
    now = note.created_at
    try:
        proc.kill()
        proc.wait(timeout=10)
        with pytest.raises(StoreError, match=r"chroma .* failed: ConnectError"):
            store.upsert("t", [note.model_copy(update={"id": "n2"})], as_of=now)
        with pytest.raises(StoreError, match=r"chroma .* failed: ConnectError"):
            store.search("u", "hello", as_of=now, top_k=1, method="dense")
    finally:
        proc.kill()
        store.close()


@pytest.mark.server
def test_a_proxys_503_in_front_of_chroma_is_a_store_error(tmp_path: Path) -> None:
    """chromadb raises a bare ``Exception`` for an HTTP error whose body names no chroma
    error (a reverse proxy's 503 while chroma restarts): a real chroma server behind a
    loopback proxy that starts answering 503 gives a :class:`StoreError` on reads and
    writes, not an internal error."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    import httpx

    from tests.conftest import start_chroma_server

    proc, port = start_chroma_server(tmp_path)
    failing = threading.Event()

    class Proxy(BaseHTTPRequestHandler):
        def relay(self) -> None:
            body = self.rfile.read(int(self.headers.get("content-length") or 0))
            if failing.is_set():
                status, content, kind = 503, b"<html>503 Service Unavailable</html>", "text/html"
            else:
                answer = httpx.request(
                    self.command,
                    f"http://127.0.0.1:{port}{self.path}",
                    content=body,
                    headers={"content-type": "application/json"},
                )
                status, content = answer.status_code, answer.content
                kind = answer.headers.get("content-type", "application/json")
            self.send_response(status)
            self.send_header("content-type", kind)
            self.send_header("content-length", str(len(content)))
            self.end_headers()
            self.wfile.write(content)

        do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = relay

        def log_message(self, *args: object) -> None:
            pass

    proxy = ThreadingHTTPServer(("127.0.0.1", 0), Proxy)
    threading.Thread(target=proxy.serve_forever, daemon=True).start()
    store, note = _server_store_with_a_note(tmp_path, proxy.server_address[1], "proxied")
    now = note.created_at
    try:
        failing.set()
        with pytest.raises(StoreError, match=r"^chroma .* failed: Exception: <html>503"):
            store.search("t", "hello", as_of=now, top_k=1, method="dense")
        with pytest.raises(StoreError, match="503 Service Unavailable"):
            store.upsert("t", [note.model_copy(update={"id": "n2"})], as_of=now)
        # the write's audit row could not be settled (the check reads chroma too): it is
        # settled at the next write once chroma answers, and the retried write is logged
        # once (it stayed pending for the life of the process, and was logged twice)
        assert store._audit.pending() == 1
        failing.clear()
        store.upsert("t", [note.model_copy(update={"id": "n2"})], as_of=now)
        assert store._audit.pending() == 0
        assert [e.event for e in store.history("t", "n2")] == ["ADD"]
    finally:
        store.close()
        proxy.shutdown()
        proc.kill()

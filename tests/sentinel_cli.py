"""A warm ``sentinel`` command for the tests that run the CLI as a subprocess.

Each ``sentinel`` process imports chromadb, pandas, ccxt, apscheduler, typer, mcp, ...
(2-5 s on the 2-core machines) before it does anything; the CLI tests start dozens of
them. :func:`sentinel` returns the path of a small executable that behaves as the
installed console script for its caller (argv, environment, working directory, stdin /
stdout / stderr, exit status, signals) but does not import anything heavy: it hands its
argv, environment, cwd and its three standard descriptors (``SCM_RIGHTS``) to a fork
server that has imported the CLI once (``python -m tests.sentinel_cli SOCKET``) and
waits for the exit status. Per command the server forks a waiter, which forks the
command's process: that process takes the caller's descriptors, environment and cwd and
runs ``sys.exit(backend.cli.main())`` exactly as ``.venv/bin/sentinel`` does, then exits
through the interpreter's normal shutdown. So every command is still a new process with
its own state (nothing of one command survives into the next), only its imports are
inherited. Signals the caller sends to the client (SIGTERM, SIGINT, ...) are forwarded
to the command, a command killed by a signal kills the client with the same signal, and
a client that dies takes its command with it (the waiter SIGKILLs it).

The first client starts the server (under a lock; it stops when the pytest process that
made the client ends); if it is not up 60 s later, the client ``exec``s the real console
script. The real script itself is still run by
``tests/test_cli.py::test_help_lists_the_commands``, which also checks that both answer
alike.
"""

from __future__ import annotations

import atexit
import contextlib
import gc
import importlib
import json
import os
import select
import shutil
import signal
import socket
import stat
import sys
import tempfile
import types
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
REAL_SENTINEL = str(Path(sys.executable).parent / "sentinel")

_CLIENT = """\
import fcntl, json, os, signal, socket, subprocess, sys, time

HOME = {home!r}
SOCKET = HOME + "/server.sock"
REAL = {real!r}
SERVER = {server!r}


def alive(pid):
    try:
        with open(f"/proc/{{pid}}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except OSError:
        return False


def server_pid():
    \"\"\"The fork server's pid; the first client starts it (under a lock).\"\"\"
    with open(HOME + "/lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            with open(HOME + "/server.pid") as f:
                return int(f.read())
        except OSError:
            pass
        with open(HOME + "/server.env") as f:
            env = json.load(f)
        proc = subprocess.Popen(SERVER, env=env, cwd={repo!r}, start_new_session=True,
                                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=open(HOME + "/server.log", "ab"))
        with open(HOME + "/server.pid", "w") as f:
            f.write(str(proc.pid))
        return proc.pid


def connect():
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    try:
        sock.connect(SOCKET)
        return sock
    except OSError:
        pass
    pid = server_pid()
    deadline = time.monotonic() + 60
    while alive(pid) and time.monotonic() < deadline:  # it may still be importing
        try:
            sock.connect(SOCKET)
            return sock
        except OSError:
            time.sleep(0.02)
    os.execv(REAL, [REAL, *sys.argv[1:]])


def main():
    sock = connect()
    fds = []
    for fd in (0, 1, 2):
        try:
            os.fstat(fd)
        except OSError:
            fd = os.open(os.devnull, os.O_RDWR)
        fds.append(fd)
    # the command ignores Ctrl-C as this process would have (a job put in the background
    # by a non-interactive shell starts with SIGINT ignored), whatever the server started with
    ignored = signal.getsignal(signal.SIGINT) == signal.SIG_IGN
    request = {{"argv": sys.argv[1:], "cwd": os.getcwd(), "env": dict(os.environ),
                "sigint_ignored": ignored}}
    socket.send_fds(sock, [json.dumps(request).encode()], fds)
    pid = int(sock.recv(64).split()[1])

    def forward(signum, frame):
        os.kill(pid, signum)

    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT,
                   signal.SIGUSR1, signal.SIGUSR2):
        signal.signal(signum, forward)
    answer = sock.recv(64)
    if not answer:
        sys.stderr.write("sentinel (test fork server): the server went away\\n")
        os._exit(255)
    code = int(answer.split()[2])
    if code < 0:
        signal.signal(-code, signal.SIG_DFL)
        os.kill(os.getpid(), -code)
    os._exit(code)


main()
"""

_home: Path | None = None


def sentinel() -> str:
    """Path of the warm ``sentinel`` command of this process (the pytest session). Its
    first run starts the fork server, which stops with this process."""
    global _home
    if _home is None:
        home = Path(tempfile.mkdtemp(prefix="sentinel-forkserver-"))
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        (home / "server.env").write_text(json.dumps(env), encoding="utf-8")
        server = [sys.executable, "-m", "tests.sentinel_cli", str(home / "server.sock")]
        source = _CLIENT.format(
            home=str(home), real=REAL_SENTINEL, server=[*server, str(os.getpid())], repo=str(REPO)
        )
        client = home / "sentinel"
        client.write_text(f"#!{sys.executable} -S\n{source}", encoding="utf-8")
        client.chmod(client.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
        atexit.register(_stop, home)
        _home = home
    return str(_home / "sentinel")


def _stop(home: Path) -> None:
    try:
        pid = int((home / "server.pid").read_text())
    except (OSError, ValueError):
        pid = None
    if pid is not None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    shutil.rmtree(home, ignore_errors=True)


# ------------------------------------------------------------------ the server


PRELOAD = (
    "backend.cli",
    "backend.backtest.report",
    "backend.compose",
    "backend.demo",
    "backend.eval",
    "backend.llm",
    "backend.service.jobs",
    "backend.service.paper",
    "backend.service.scheduler",
    "backend.storage",
    "backend.tools.mcp_server",
    "chromadb",
    "uvicorn",
)


def _preload() -> None:
    """What ``sentinel`` commands import, imported once (no thread may be started here:
    the server forks)."""
    for name in PRELOAD:
        importlib.import_module(name)


def _serve(path: str, owner: int) -> dict[str, Any]:
    """Accept commands until the owner (the pytest process) is gone; returns only in a
    command's process, with its request."""
    _preload()
    gc.freeze()  # the forks share the imported objects' pages: the GC must not touch them
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    listener.bind(path + ".tmp")
    listener.listen(64)
    os.rename(path + ".tmp", path)
    while True:
        while True:  # reap the waiters that are done
            try:
                done, _ = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if done == 0:
                break
        try:
            os.kill(owner, 0)
        except ProcessLookupError:
            sys.exit(0)
        ready, _, _ = select.select([listener], [], [], 1.0)
        if not ready:
            continue
        conn, _ = listener.accept()
        message, fds, _, _ = socket.recv_fds(conn, 1 << 20, 3)
        if os.fork() == 0:
            listener.close()
            request: dict[str, Any] = json.loads(message)
            return _wait_for_command(conn, request, fds)
        conn.close()
        for fd in fds:
            os.close(fd)


def _wait_for_command(
    conn: socket.socket, request: dict[str, Any], fds: list[int]
) -> dict[str, Any]:
    """The waiter: forks the command, tells the client its pid, then its exit status."""
    pid = os.fork()
    if pid == 0:  # the command's process
        conn.close()
        for target, fd in enumerate(fds):
            os.dup2(fd, target)
        for fd in fds:
            os.close(fd)
        os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update(request["env"])
        ignored = request.get("sigint_ignored", False)
        signal.signal(signal.SIGINT, signal.SIG_IGN if ignored else signal.default_int_handler)
        return request
    for fd in fds:
        os.close(fd)
    conn.send(f"PID {pid}".encode())
    child = os.pidfd_open(pid)
    while True:
        ready, _, _ = select.select([conn.fileno(), child], [], [])
        if child in ready:
            _, status = os.waitpid(pid, 0)
            conn.send(f"EXIT {pid} {os.waitstatus_to_exitcode(status)}".encode())
            os._exit(0)
        if not conn.recv(64):  # the client is gone: so is its command
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            os._exit(0)


def _as_console_script(argv: list[str]) -> None:
    """``sys.argv`` and ``__main__`` as in ``.venv/bin/sentinel`` (click names the program
    after them: ``Usage: sentinel ...``)."""
    script = types.ModuleType("__main__")
    script.__file__ = REAL_SENTINEL
    sys.modules["__main__"] = script
    sys.argv = [REAL_SENTINEL, *argv]


if __name__ == "__main__":
    command = _serve(sys.argv[1], int(sys.argv[2]))
    _as_console_script(command["argv"])
    from backend.cli import main

    main()  # as the console script does: sys.exit(main()), and main() returns None
    sys.exit(0)

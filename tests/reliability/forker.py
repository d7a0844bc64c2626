"""Client of :mod:`tests.reliability.cli_forker` (its doc has the protocol): one warm
process per test session that forks the crash tests' children and the cross-process
tests' second writers, so each costs a fork instead of a fresh interpreter importing
chromadb, pandas, ccxt and apscheduler."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
WAIT_S = 600.0
"""How long :meth:`Forker.wait` waits for a child (the longest, a crash test's paper run
beside its killed rounds, takes ~1-2 min on the loaded 2-core machines)."""


class Forker:
    """Starts ``python -m tests.reliability.cli_forker`` and speaks its line protocol."""

    def __init__(self) -> None:
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.reliability.cli_forker"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            cwd=REPO,
            env=env,
        )
        assert self._line() == "READY"
        self.running: set[int] = set()
        """Children started and not reaped yet."""

    def _line(self) -> str:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        assert line, "the forker died"
        return line.strip()

    def _send(self, line: str) -> str:
        assert self.proc.stdin is not None
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()
        return self._line()

    def run(self, log: Path, args: list[str]) -> int:
        """Fork ``sentinel <args>`` (stdout to ``log``, stderr to ``log.err``); its pid."""
        return self._started(self._send(f"RUN {log} {json.dumps(args)}"))

    def call(self, log: Path, target: str, args: list[str]) -> int:
        """Fork ``module:function(*args)`` (stdout to ``log``, stderr to ``log.err``)."""
        return self._started(self._send(f"CALL {log} {target} {json.dumps(args)}"))

    def _started(self, answer: str) -> int:
        pid = int(answer.split()[1])
        self.running.add(pid)
        return pid

    def wait(self, pid: int, timeout_s: float = WAIT_S) -> int:
        """Reap ``pid``: its exit code (-9 when SIGKILLed). A child still running after
        ``timeout_s`` is SIGKILLed and reaped, and the wait fails (AssertionError): a
        hung child must not block the tests after it, which share this launcher."""
        deadline = time.monotonic() + timeout_s
        while (code := self.poll(pid)) is None:
            if time.monotonic() > deadline:
                self.kill(pid)
                raise AssertionError(f"child {pid} still running after {timeout_s} s")
            time.sleep(0.01)
        return code

    def poll(self, pid: int) -> int | None:
        """Reap ``pid`` if it has ended (its exit code), else None; never blocks."""
        answer = self._send(f"POLL {pid}").split()
        if answer[0] != "EXIT":
            return None
        self.running.discard(pid)
        return int(answer[2])

    def kill(self, pid: int) -> None:
        """SIGKILL ``pid`` if it is still running, and reap it."""
        if self.poll(pid) is None:
            os.kill(pid, signal.SIGKILL)
            self._send(f"WAIT {pid}")
            self.running.discard(pid)

    def kill_all(self) -> list[int]:
        """:meth:`kill` every child started and not reaped yet (a test that failed midway
        leaves its children to this); the pids that were still running."""
        left = [pid for pid in sorted(self.running) if self.poll(pid) is None]
        for pid in left:
            self.kill(pid)
        return left

    def outcome(self, pid: int, log: Path) -> tuple[int, str, str]:
        """Reap ``pid`` (forked with ``log``): ``(exit code, stdout, stderr)``."""
        code = self.wait(pid)
        return code, log.read_text(), Path(f"{log}.err").read_text()

    def call_and_wait(self, log: Path, target: str, args: list[str]) -> tuple[int, str, str]:
        """:meth:`call`, then :meth:`outcome`."""
        return self.outcome(self.call(log, target, args), log)

    def wait_for_line(self, pid: int, log: Path, line: str, timeout_s: float = 120.0) -> None:
        """Wait until the child ``pid`` has written ``line`` to its stdout ``log``
        (AssertionError if it ended first, with its stderr, or after ``timeout_s``)."""
        deadline = time.monotonic() + timeout_s

        def written() -> bool:
            return line in (log.read_text() if log.exists() else "").splitlines()

        while not written():
            code = self.poll(pid)
            if code is not None:  # it may have written the line just before it ended
                assert written(), f"the child ended ({code}): {Path(f'{log}.err').read_text()}"
                return
            assert time.monotonic() < deadline, f"{log}: no {line!r} in {timeout_s} s"
            time.sleep(0.02)

    def close(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        self.proc.wait(timeout=30)

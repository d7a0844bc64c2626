"""Client of :mod:`tests.reliability.cli_forker` (its doc has the protocol): one warm
process per test session that forks the crash tests' children and the cross-process
tests' second writers, so each costs a fork instead of a fresh interpreter importing
chromadb, pandas, ccxt and apscheduler."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


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
        return int(self._send(f"RUN {log} {json.dumps(args)}").split()[1])

    def call(self, log: Path, target: str, args: list[str]) -> int:
        """Fork ``module:function(*args)`` (stdout to ``log``, stderr to ``log.err``)."""
        return int(self._send(f"CALL {log} {target} {json.dumps(args)}").split()[1])

    def wait(self, pid: int) -> int:
        """Reap ``pid``: its exit code (-9 when SIGKILLed)."""
        return int(self._send(f"WAIT {pid}").split()[2])

    def poll(self, pid: int) -> int | None:
        """Reap ``pid`` if it has ended (its exit code), else None; never blocks."""
        answer = self._send(f"POLL {pid}").split()
        return int(answer[2]) if answer[0] == "EXIT" else None

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
        while line not in (log.read_text() if log.exists() else "").splitlines():
            code = self.poll(pid)
            assert code is None, f"the child ended ({code}): {Path(f'{log}.err').read_text()}"
            assert time.monotonic() < deadline, f"{log}: no {line!r} in {timeout_s} s"
            time.sleep(0.02)

    def close(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        self.proc.wait(timeout=30)

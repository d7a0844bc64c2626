"""Issue 7.1 — crash safety of the memory store: SIGKILL a writer at random moments.

A child process (:mod:`tests.reliability.crash_writer`) writes memories of three traders
to an embedded Khala store (chroma + SQLite audit trail) and acknowledges each write on
stdout once the call has returned. The parent kills it with SIGKILL at a random moment
(mostly while writing, sometimes while it is still opening the store), then starts the
next child on the same directory, which reports what it finds. After every kill:

- the store opens cleanly (no exception; count, scan, dense and BM25 search work and
  return only the trader's own records);
- every acknowledged write is there with exactly the acknowledged content (deleted ids are
  gone); the one write in flight at the kill is either wholly applied or wholly absent
  (a batch is never half-written);
- the audit trail agrees exactly with the store: the last event of every stored record
  is its content, every id that is gone was last deleted. The trail is written ahead of
  chroma and a killed write is settled when the store is next opened
  (``backend/storage/_audit.py``); the counts of settled rows are reported.

The scheduler job store and the paper-trading state get the same treatment in
:mod:`tests.reliability.test_crash_safety_service`.
"""

from __future__ import annotations

import json
import os
import queue
import random
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.reliability.crash_writer import TRADERS

REPO = Path(__file__).resolve().parents[2]
KILLS = 24
SEED = 7_2024


@dataclass
class Round:
    """What one child printed before it was killed (or exited)."""

    state: dict[str, Any] | None = None
    intents: dict[int, dict[str, Any]] = field(default_factory=dict)
    acked: list[int] = field(default_factory=list)
    lines: list[str] = field(default_factory=list)


def _reader(stream: Any, out: queue.Queue[tuple[float, str | None]]) -> None:
    for line in iter(stream.readline, ""):
        out.put((time.monotonic(), line.rstrip("\n")))
    out.put((time.monotonic(), None))


def run_child(
    root: Path, round_no: int, *, seed: int, kill_after_ready: float | None, kill_at: float | None
) -> tuple[Round, int, str]:
    """Start a writer; SIGKILL it ``kill_after_ready`` s after READY (or ``kill_at`` s after
    start, possibly before READY); with neither, let it report and exit (``--max-ops 0``)."""
    args = [sys.executable, "-m", "tests.reliability.crash_writer", "--root", str(root)]
    args += ["--round", str(round_no), "--seed", str(seed)]
    if kill_after_ready is None and kill_at is None:
        args += ["--max-ops", "0"]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(
        args, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    lines: queue.Queue[tuple[float, str | None]] = queue.Queue()
    threading.Thread(target=_reader, args=(proc.stdout, lines), daemon=True).start()
    try:
        return _follow(proc, lines, kill_after_ready=kill_after_ready, kill_at=kill_at)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=60)


def _follow(
    proc: subprocess.Popen[str],
    lines: queue.Queue[tuple[float, str | None]],
    *,
    kill_after_ready: float | None,
    kill_at: float | None,
) -> tuple[Round, int, str]:
    started = time.monotonic()
    deadline = started + kill_at if kill_at is not None else None
    result = Round()
    killed = False
    ended = False
    while not ended:
        timeout = 120.0 if deadline is None else max(0.0, deadline - time.monotonic())
        try:
            _, line = lines.get(timeout=timeout)
        except queue.Empty:
            line = ""
        if deadline is not None and time.monotonic() >= deadline and not killed:
            proc.send_signal(signal.SIGKILL)
            killed = True
        if line is None:
            ended = True
            continue
        if not line:
            if deadline is None:
                raise AssertionError("the writer printed nothing for 120 s")
            continue
        result.lines.append(line)
        tag, _, payload = line.partition(" ")
        if tag == "STATE":
            result.state = json.loads(payload)
        elif tag == "READY" and kill_after_ready is not None:
            deadline = time.monotonic() + kill_after_ready
        elif tag == "INTENT":
            intent = json.loads(payload)
            result.intents[intent["seq"]] = intent
        elif tag == "ACK":
            result.acked.append(int(payload))
    proc.wait(timeout=60)
    stderr = proc.stderr.read() if proc.stderr is not None else ""
    return result, proc.returncode, stderr


Expected = dict[str, dict[str, str]]


def apply(expected: Expected, intent: dict[str, Any]) -> Expected:
    out = {t: dict(v) for t, v in expected.items()}
    for rid, digest in intent["records"].items():
        if digest is None:
            out[intent["trader"]].pop(rid, None)
        else:
            out[intent["trader"]][rid] = digest
    return out


def check_state(
    found: dict[str, Any], expected: Expected, in_flight: dict[str, Any] | None
) -> Expected:
    """Assert the reopened store holds the acknowledged state (``in_flight`` wholly applied
    or wholly absent) and agrees exactly with its audit trail; returns the state."""
    records: Expected = found["records"]
    allowed = [expected] + ([apply(expected, in_flight)] if in_flight is not None else [])
    assert records in allowed, "acknowledged writes lost, or a write half-applied"
    for trader in TRADERS:
        assert found["counts"][trader] == len(records[trader])
        if records[trader]:
            assert found["search"][trader] == [True, True, True], "search broken after restart"
        audit = found["audit"][trader]
        for rid, digest in records[trader].items():
            last = audit.get(rid)
            assert last is not None and last[0] != "DELETE" and last[1] == digest, (
                f"{trader}/{rid}: the audit trail's last event {last} is not the stored content"
            )
        for rid, last in audit.items():
            if rid not in records[trader]:
                assert last[0] == "DELETE", f"{trader}/{rid} is gone but not audited as deleted"
    return records


def test_sigkill_at_random_moments_loses_no_acknowledged_write(tmp_path: Path) -> None:
    rng = random.Random(SEED)
    expected: Expected = {t: {} for t in TRADERS}
    in_flight: dict[str, Any] | None = None
    stats = {"kills": 0, "before_ready": 0, "acked_writes": 0, "in_flight_landed": 0}
    stats |= {"audit_rows_confirmed_at_open": 0, "audit_rows_dropped_at_open": 0}
    for round_no in range(KILLS + 1):
        last = round_no == KILLS
        early = not last and rng.random() < 0.15
        child, code, stderr = run_child(
            tmp_path,
            round_no,
            seed=rng.randrange(2**31),
            kill_after_ready=None if last or early else rng.uniform(0.0, 1.2),
            kill_at=rng.uniform(0.2, 2.5) if early else None,
        )
        if child.state is not None:
            before = expected
            expected = check_state(child.state, expected, in_flight)
            stats["in_flight_landed"] += expected != before
            confirmed, dropped = child.state["recovered"]
            stats["audit_rows_confirmed_at_open"] += confirmed
            stats["audit_rows_dropped_at_open"] += dropped
            in_flight = None
        else:  # killed while opening: nothing was written, the next round checks the same
            assert early, f"round {round_no}: the store did not open:\n{stderr[-2000:]}"
        if last:
            assert code == 0, stderr[-2000:]
            break
        assert code == -signal.SIGKILL, f"round {round_no}: exit {code}\n{stderr[-2000:]}"
        stats["kills"] += 1
        stats["before_ready"] += child.state is None
        if child.state is None:
            continue
        for seq in child.acked:
            expected = apply(expected, child.intents[seq])
        stats["acked_writes"] += len(child.acked)
        pending = [s for s in child.intents if s not in child.acked]
        assert len(pending) <= 1
        in_flight = child.intents[pending[0]] if pending else None
    print(f"\ncrash-safety: {json.dumps(stats)}")
    assert stats["kills"] >= 20 and stats["acked_writes"] >= 100
    assert stats["kills"] - stats["before_ready"] >= 15  # most kills hit a writing process

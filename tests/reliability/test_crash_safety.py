"""Issue 7.1 — crash safety of the memory store: SIGKILL a writer at random moments.

A child process (:mod:`tests.reliability.crash_writer`) writes memories of three traders
to an embedded Khala store (chroma + SQLite audit trail) and acknowledges each write on
stdout once the call has returned. The parent kills it with SIGKILL at a random moment
(mostly while writing, sometimes while it is still opening the store), then starts the
next child on the same directory, which reports what it finds. The children are forks of
the session's warm launcher (:mod:`tests.reliability.cli_forker`, imports already paid),
so each is a new process that opens the store from disk, as a restart does. After every
kill:

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
import random
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.reliability.crash_writer import TRADERS
from tests.reliability.forker import Forker

KILLS = 24
SEED = 7_2024
# An early kill lands this many seconds after the fork at most: a forked writer opens the
# store (settling what the last kill left) and reports in about 0.1-0.3 s, so about half
# of the early kills hit the opening and half the first writes.
EARLY_KILL_S = 0.5


@dataclass
class Round:
    """What one child printed before it was killed (or exited)."""

    state: dict[str, Any] | None = None
    intents: dict[int, dict[str, Any]] = field(default_factory=dict)
    acked: list[int] = field(default_factory=list)
    lines: list[str] = field(default_factory=list)


class Tail:
    """The complete lines a child has written to its log file so far."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = 0
        self.partial = b""

    def lines(self) -> list[str]:
        try:
            with self.path.open("rb") as f:
                f.seek(self.offset)
                chunk = f.read()
        except FileNotFoundError:
            return []
        self.offset += len(chunk)
        *done, self.partial = (self.partial + chunk).split(b"\n")
        return [line.decode() for line in done]


def run_child(
    forker: Forker,
    root: Path,
    round_no: int,
    *,
    seed: int,
    kill_after_ready: float | None,
    kill_at: float | None,
) -> tuple[Round, int, str]:
    """Fork a writer (:mod:`tests.reliability.cli_forker`); SIGKILL it ``kill_after_ready``
    s after READY (or ``kill_at`` s after the fork, possibly before READY); with neither,
    let it report and exit (``--max-ops 0``)."""
    args = ["--root", str(root / "store"), "--round", str(round_no), "--seed", str(seed)]
    if kill_after_ready is None and kill_at is None:
        args += ["--max-ops", "0"]
    log = root / f"writer{round_no}.log"
    pid = forker.call(log, "tests.reliability.crash_writer:forked", args)
    try:
        result, code = _follow(forker, pid, Tail(log), kill_after_ready, kill_at)
    except BaseException:  # do not leak the child (it is reaped once _follow returns)
        if forker.poll(pid) is None:
            os.kill(pid, signal.SIGKILL)
            forker.wait(pid)
        raise
    err = Path(f"{log}.err")
    return result, code, err.read_text(encoding="utf-8") if err.is_file() else ""


def _follow(
    forker: Forker, pid: int, tail: Tail, kill_after_ready: float | None, kill_at: float | None
) -> tuple[Round, int]:
    """Read the child's lines as it writes them (every millisecond) and kill it at its
    moment; returns what it printed (all of it: read again once it is reaped) and its
    exit code."""
    started = time.monotonic()
    deadline = started + kill_at if kill_at is not None else None
    result = Round()
    quiet_since = started

    def take(lines: list[str]) -> None:
        nonlocal deadline
        for line in lines:
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

    while True:
        lines = tail.lines()
        now = time.monotonic()
        if lines:
            quiet_since = now
        take(lines)
        if deadline is not None and time.monotonic() >= deadline:
            os.kill(pid, signal.SIGKILL)
            code = forker.wait(pid)
            break
        code_or_none = forker.poll(pid)
        if code_or_none is not None:
            code = code_or_none
            break
        if deadline is None and now - quiet_since > 120:
            raise AssertionError("the writer printed nothing for 120 s")
        time.sleep(0.001)
    take(tail.lines())  # what it wrote between the last read and its end
    return result, code


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


@pytest.mark.slow
def test_sigkill_at_random_moments_loses_no_acknowledged_write(
    tmp_path: Path, forker: Forker
) -> None:
    rng = random.Random(SEED)
    expected: Expected = {t: {} for t in TRADERS}
    in_flight: dict[str, Any] | None = None
    stats = {"kills": 0, "before_ready": 0, "acked_writes": 0, "in_flight_landed": 0}
    stats |= {"audit_rows_confirmed_at_open": 0, "audit_rows_dropped_at_open": 0}
    for round_no in range(KILLS + 1):
        last = round_no == KILLS
        early = not last and rng.random() < 0.15
        child, code, stderr = run_child(
            forker,
            tmp_path,
            round_no,
            seed=rng.randrange(2**31),
            kill_after_ready=None if last or early else rng.uniform(0.0, 1.2),
            kill_at=rng.uniform(0.0, EARLY_KILL_S) if early else None,
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

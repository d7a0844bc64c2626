"""Two processes writing one episode's log lose neither write.

``sentinel paper`` records outcomes while the scheduler's consolidation job (another
process) decays every episode by age: each is a read-modify-write of the episode's log,
so without the store's cross-process writer lock the later write drops the other's
entry. Here the outcome writer stops between its read and its write; the decay, started
meanwhile in a third process, must wait for it and then keep its entry. On an embedded
store and on a real chroma server. Both writers are forks of the session's warm
launcher (``forker``: a process that never opened a store), not new interpreters.
"""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from backend.config import MemorySettings, StoreSettings
from backend.embeddings import HashingEmbedder
from backend.memory.episodic import EpisodicMemory
from backend.memory.models import Episode
from backend.storage import open_store
from tests.memory.episode_writer import EPISODE, TRADER
from tests.reliability.forker import Forker

CHILD = "tests.memory.episode_writer:main"


def _wait_for(path: Path, forker: Forker, pid: int, log: Path, timeout_s: float = 120.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not path.exists():
        if forker.poll(pid) is not None:
            pytest.fail(f"the writer ended early: {Path(f'{log}.err').read_text()}")
        if time.monotonic() > deadline:
            pytest.fail(f"{path} never appeared")
        time.sleep(0.02)


def test_an_outcome_and_a_decay_from_two_processes_both_land(
    shared_store: StoreSettings, tmp_path: Path, forker: Forker
) -> None:
    day = datetime(2022, 1, 1, tzinfo=UTC)
    store = open_store(shared_store, HashingEmbedder())
    try:
        EpisodicMemory(store, settings=MemorySettings()).add(
            [
                Episode(
                    id=EPISODE, trader_id=TRADER, symbol="BTC/USDT", event_type="flash_crash",
                    occurred_at=day, description="BTC fell 8% in an hour", importance=0.5,
                )
            ],
            as_of=day,
        )  # fmt: skip
    finally:
        store.close()
    config = shared_store.model_dump_json()
    hold = tmp_path / "hold"
    hold.mkdir()
    logs = {name: tmp_path / f"{name}.log" for name in ("outcome", "decay")}
    outcome = forker.call(logs["outcome"], CHILD, [config, "outcome", str(hold)])
    # it holds the episode's log, read, not yet written
    _wait_for(hold / "read", forker, outcome, logs["outcome"])
    decay = forker.call(logs["decay"], CHILD, [config, "decay", str(hold)])
    # its store is open; its read and write come next
    _wait_for(hold / "decaying", forker, decay, logs["decay"])
    time.sleep(1.0)  # ~20x what they take, were the decay not kept waiting
    still_waiting = forker.poll(decay) is None
    (hold / "go").touch()
    for name, pid in (("outcome", outcome), ("decay", decay)):
        code, _, err = forker.outcome(pid, logs[name])
        assert code == 0, err
    store = open_store(shared_store, HashingEmbedder())
    try:
        (record,) = store.get(TRADER, [EPISODE], as_of=datetime(2030, 1, 1, tzinfo=UTC))
        ops = [entry["op"] for entry in json.loads(record.metadata["log"])]
    finally:
        store.close()
    assert still_waiting, "the decay did not wait for the outcome writer's lock"
    assert sorted(ops) == ["decay", "outcome"], ops

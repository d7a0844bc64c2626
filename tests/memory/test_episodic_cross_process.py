"""Two processes writing one episode's log lose neither write.

``sentinel paper`` records outcomes while the scheduler's consolidation job (another
process) decays every episode by age: each is a read-modify-write of the episode's log,
so without the store's cross-process writer lock the later write drops the other's
entry. Here the outcome writer stops between its read and its write; the decay, started
meanwhile in a third process, must wait for it and then keep its entry. On an embedded
store and on a real chroma server.
"""

from __future__ import annotations

import json
import subprocess
import sys
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

CHILD = (sys.executable, "-m", "tests.memory.episode_writer")


def _wait_for(path: Path, proc: subprocess.Popen[str], timeout_s: float = 120.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not path.exists():
        if proc.poll() is not None:
            pytest.fail(f"the writer ended early: {proc.communicate()[1]}")
        if time.monotonic() > deadline:
            pytest.fail(f"{path} never appeared")
        time.sleep(0.02)


def test_an_outcome_and_a_decay_from_two_processes_both_land(
    shared_store: StoreSettings, tmp_path: Path
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
    outcome = subprocess.Popen(
        [*CHILD, config, "outcome", str(hold)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    _wait_for(hold / "read", outcome)  # it holds the episode's log, read, not yet written
    decay = subprocess.Popen(
        [*CHILD, config, "decay", str(hold)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    _wait_for(hold / "decaying", decay)  # its store is open; its read and write come next
    time.sleep(1.0)  # ~20x what they take, were the decay not kept waiting
    still_waiting = decay.poll() is None
    (hold / "go").touch()
    for proc in (outcome, decay):
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err
    store = open_store(shared_store, HashingEmbedder())
    try:
        (record,) = store.get(TRADER, [EPISODE], as_of=datetime(2030, 1, 1, tzinfo=UTC))
        ops = [entry["op"] for entry in json.loads(record.metadata["log"])]
    finally:
        store.close()
    assert still_waiting, "the decay did not wait for the outcome writer's lock"
    assert sorted(ops) == ["decay", "outcome"], ops

"""A persona version written by another process is used at the next decision.

``sentinel paper`` (the decision loop) and ``sentinel scheduler run`` (the persona
refresh) are two processes on one store: the loop's cached version index must follow the
refresh's writes (validated against the store's change counter), on an embedded store and
on a real chroma server. The other process is a fork of the session's warm launcher
(``forker``: a process that never opened a store), not a new interpreter.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from backend.compose import MemorySystem, build_memory_system
from backend.config import EmbeddingSettings, StoreSettings, load_settings
from tests.reliability.forker import Forker

TRADER = "0x513b8629fe877bb581bf244e326a047b249c4ff1"
START = datetime(2024, 3, 1, tzinfo=UTC)


@pytest.fixture
def loop(shared_store: StoreSettings, tmp_path: Path) -> Iterator[MemorySystem]:
    settings = load_settings(
        store=shared_store, embedding=EmbeddingSettings(provider="hashing", cache_dir=None)
    )
    memory = settings.memory.model_copy(update={"working_state_path": tmp_path / "w.sqlite3"})
    settings = settings.model_copy(update={"memory": memory})
    with build_memory_system(settings) as system:
        yield system


WRITER = "tests.agents.memory.persona_writer:main"


def _refresh_elsewhere(
    forker: Forker, log: Path, settings: StoreSettings, text: str, as_of: datetime
) -> int:
    args = [settings.model_dump_json(), TRADER, text, as_of.isoformat()]
    code, out, err = forker.call_and_wait(log, WRITER, args)
    assert code == 0, err
    return int(out.strip())


@pytest.mark.slow
def test_each_new_version_and_constraint_is_used_at_the_next_bar(
    loop: MemorySystem, shared_store: StoreSettings, forker: Forker, tmp_path: Path
) -> None:
    bars = [START + timedelta(hours=h) for h in range(6)]

    def context(bar: datetime) -> str:
        return loop.memory.build_context(TRADER, "BTC/USDT", as_of=bar)[1].text

    assert loop.persona.get_profile(TRADER, bars[0]) is None  # read (and cached): none yet
    assert "max_risk_per_trade" not in context(bars[0])

    version = _refresh_elsewhere(
        forker, tmp_path / "w1.log", shared_store, "Never more than 2% per trade.", bars[1]
    )
    profile = loop.persona.get_profile(TRADER, bars[1])
    assert version == 1 and profile is not None and profile.version == 1
    assert {c.kind for c in profile.constraints()} == {"max_risk_per_trade"}
    assert "max_risk_per_trade" in context(bars[1])

    assert loop.persona.get_profile(TRADER, bars[2]) == profile  # nothing new: same version
    version = _refresh_elsewhere(
        forker, tmp_path / "w2.log", shared_store, "No memecoins.", bars[3]
    )
    profile = loop.persona.get_profile(TRADER, bars[3])
    assert version == 2 and profile is not None and profile.version == 2
    assert {c.kind for c in profile.constraints()} == {"max_risk_per_trade", "no_memecoins"}
    assert "no_memecoins" in context(bars[3])
    # the past stays the past: the bar before the second refresh still has version 1
    earlier = loop.persona.get_profile(TRADER, bars[2])
    assert earlier is not None and earlier.version == 1


@pytest.mark.slow
def test_a_writer_waits_while_another_process_holds_the_writer_lock(
    loop: MemorySystem, shared_store: StoreSettings, forker: Forker, tmp_path: Path
) -> None:
    """Two processes never both write version n + 1 from the same read: while this one
    holds the store's writer lock (as a persona update does from its read of the stored
    version to its write of the next), another process's update waits, then builds on
    what this one wrote."""
    log = tmp_path / "writer.log"
    args = [shared_store.model_dump_json(), TRADER, "No memecoins.",
            (START + timedelta(hours=1)).isoformat(), "--announce"]  # fmt: skip
    child = forker.call(log, WRITER, args)
    with loop.store.writer_lock():
        forker.wait_for_line(child, log, "ready")
        time.sleep(1.5)  # an unlocked write takes milliseconds once the store is open
        assert forker.poll(child) is None, "the other process wrote while the lock was held"
        loop.persona.update_from_text(TRADER, "Never more than 2% per trade.", as_of=START)
    code, out, err = forker.outcome(child, log)
    assert code == 0, err
    assert out.split() == ["ready", "2"]  # the next version after this process's version 1
    profile = loop.persona.get_profile(TRADER, START + timedelta(hours=1))
    assert profile is not None and profile.version == 2
    assert {c.kind for c in profile.constraints()} == {"max_risk_per_trade", "no_memecoins"}

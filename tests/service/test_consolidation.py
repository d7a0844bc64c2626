"""Pruning (:func:`consolidate_trader`) against another writer of the store, on real
durable stores (embedded chroma and a real chroma server)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from contextlib import AbstractContextManager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from backend.compose import build_memory_system
from backend.config import SchedulerSettings, load_settings
from backend.memory.models import Episode, Outcome
from backend.service.consolidation import consolidate_trader
from backend.service.models import ConsolidationResult
from tests.conftest import StoreFactory

TRADER = "agent"
DAY = datetime(2022, 1, 1, tzinfo=UTC)
NOW = datetime(2022, 3, 1, tzinfo=UTC)
WAIT_S = 60.0


def _faded(episode_id: str) -> Episode:
    return Episode(
        id=episode_id, trader_id=TRADER, symbol="BTC/USDT", event_type="flash_crash",
        occurred_at=DAY, description=f"BTC fell 8% in an hour ({episode_id})", importance=0.01,
    )  # fmt: skip


def test_pruning_reads_decides_and_deletes_under_the_writer_lock(
    make_durable_store: StoreFactory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After its decay, the consolidation prunes two faded episodes while another writer
    holds the store's writer lock and records an outcome of one of them (raising its
    importance above ``prune_below``). The pruning must wait for that writer and see the
    outcome: the episode with an outcome stays, the other one goes. (Without the lock the
    pruning reads the old importance and deletes the episode, its outcome with it.)"""
    settings = load_settings().offline(store_dir=tmp_path / "run")
    rules = SchedulerSettings(prune_below=0.05, prune_after_days=30)
    with build_memory_system(settings, store=make_durable_store()) as system:
        episodic = system.episodic
        episodic.add([_faded("ep-outcome"), _faded("ep-faded")], as_of=DAY)
        decayed, holding, at_prune, wrote = (threading.Event() for _ in range(4))
        pruning: list[int] = []  # the consolidation's thread, once its decay is done

        def after_decay(original: Callable[..., int]) -> Callable[..., int]:
            def decay_by_age(*args: Any, **kwargs: Any) -> int:
                done = original(*args, **kwargs)
                pruning.append(threading.get_ident())
                decayed.set()
                assert holding.wait(WAIT_S)  # the other writer holds the lock from here on
                return done

            return decay_by_age

        def scan_then_pause(original: Callable[..., list[Episode]]) -> Callable[..., Any]:
            def scan(*args: Any, **kwargs: Any) -> list[Episode]:
                found = original(*args, **kwargs)
                if pruning and threading.get_ident() == pruning[0]:
                    at_prune.set()  # read (without the lock): the other writer writes now
                    assert wrote.wait(WAIT_S)
                return found

            return scan

        lock = system.store.writer_lock

        def writer_lock() -> AbstractContextManager[None]:
            if pruning and threading.get_ident() == pruning[0]:
                at_prune.set()  # the pruning asks for the lock the other writer holds
            return lock()

        monkeypatch.setattr(episodic, "decay_by_age", after_decay(episodic.decay_by_age))
        monkeypatch.setattr(episodic, "scan", scan_then_pause(episodic.scan))
        monkeypatch.setattr(system.store, "writer_lock", writer_lock)
        results: list[ConsolidationResult | BaseException] = []

        def consolidate() -> None:
            try:
                results.append(
                    consolidate_trader(system, TRADER, as_of=NOW, settings=rules, protect=set())
                )
            except BaseException as exc:  # re-raised in the test's thread
                results.append(exc)

        thread = threading.Thread(target=consolidate)
        thread.start()
        try:
            assert decayed.wait(WAIT_S), "the consolidation never decayed"
            with lock():  # the other writer: `sentinel paper` recording an outcome
                holding.set()
                assert at_prune.wait(WAIT_S), "the consolidation never reached its pruning"
                outcome = Outcome(horizon="24h", market_return=-0.10, resolved_at=NOW)
                raised = episodic.record_outcome(TRADER, "ep-outcome", outcome, as_of=NOW)
                assert raised.importance > rules.prune_below
                wrote.set()
        finally:
            holding.set()
            wrote.set()
            thread.join(WAIT_S)
        (result,) = results
        if isinstance(result, BaseException):
            raise result
        left = {e.id: e for e in episodic.scan(TRADER, as_of=NOW)}
    assert result.decayed == 2
    assert result.pruned == ["ep-faded"], "pruned from a read made before its outcome"
    assert set(left) == {"ep-outcome"} and left["ep-outcome"].outcome == outcome

"""Issue 7.6 — concurrency soak: the decision loop and the scheduler's jobs on one trader.

One memory system (embedded chroma, hashing embedder), one trader. While the
DeepTraderManager decides more than 10,000 real BTC/USDT 1h bars (2024-02 .. 2025-03;
it observes working memory, recalls, records decisions and outcomes), two threads do what
the scheduler's jobs will do, as of the loop's clock (the close of the last bar decided):

- **persona refresh** (every 24 bars of the clock): ``PersonaManager.update_from_fills``
  with the trader's real fills known by then (a real Hyperliquid account's fills,
  re-labelled to the trader) and, every fourth run, ``update_from_text`` with a note that
  changes the leverage cap;
- **consolidation** (every 3 bars): working memory of a second symbol (ETH/USDT)
  observed bar by bar, whose overflow is consolidated into episodic ``context``
  episodes; every 150th run, importance decay of every episode; reads of the loop's own
  working window (every run) and episodes (every third run).

Afterwards: no thread raised and no write failed; no update was lost (every outcome the
loop recorded and every decay is in the episodes' logs, every decision episode and every
expected consolidation exists); persona versions are 1, 2, ... strictly increasing in
time with every version a call reported; the audit trail has nothing pending and its
last event of every record is the record; the store's in-process mirror agrees with
chroma. ``context_every_bars`` is 8 to keep the soak within about two minutes.

The scheduler itself (apscheduler jobs) is not built yet; its job store's crash test is
pending (docs/reliability.md).
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import math
import threading
import time
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from backend.agents.deep_trader_manager import DEFAULT_CONSTRAINTS_NOTE, DeepTraderManager
from backend.agents.policies import DecisionView, RulePolicy
from backend.backtest.models import Decision
from backend.compose import MemorySystem, build_memory_system
from backend.config import MemorySettings, StoreSettings, load_settings
from backend.data import Fill, OHLCVFrame, load_hyperliquid_fills, load_ohlcv
from backend.embeddings import HashingEmbedder
from backend.memory import FeatureFrame, compute_features
from backend.memory._episode_codec import decode as decode_episode
from tests.agents.conftest import ETH_SOL_SHORT
from tests.agents.loop import drive

TRADER = "agent"
FAR = datetime(9999, 1, 1, tzinfo=UTC)
LOOP_START = datetime(2024, 2, 5, tzinfo=UTC)
MIN_STEPS = 10_000
NOTES = ("Never more than 3x leverage.", "Never more than 2x leverage.")


class Clock:
    """The loop's clock: the close of the last bar it decided (None before the first)."""

    def __init__(self) -> None:
        self.now: datetime | None = None
        self.done = threading.Event()


class CheckingPolicy:
    """The RulePolicy, noting every retrieval error the loop's context carried."""

    def __init__(self, inner: RulePolicy, clock: Clock) -> None:
        self.inner = inner
        self.clock = clock
        self.tier_errors: list[str] = []

    def decide(self, view: DecisionView) -> Decision:
        if view.context is not None:
            self.tier_errors.extend(view.context.errors.values())
        return self.inner.decide(view)


class Recorder:
    """A DecisionMaker wrapper that moves the clock after every bar."""

    def __init__(self, manager: DeepTraderManager, clock: Clock) -> None:
        self.manager = manager
        self.clock = clock

    def on_bar(self, bar: Any) -> Any:
        record = self.manager.on_bar(bar)
        self.clock.now = bar.as_of
        return record

    def on_trade_closed(self, trade: Any) -> None:
        self.manager.on_trade_closed(trade)


def job(
    name: str, errors: list[str], clock: Clock, step: Callable[[datetime], None], every: int
) -> None:
    """Run ``step(clock.now)`` each time the loop's clock has moved ``every`` bars (hours)
    since the last run, as a scheduler would, until the loop is done; exceptions are
    collected."""
    last: datetime | None = None
    while not clock.done.is_set():
        now = clock.now
        if now is None or (last is not None and (now - last).total_seconds() < every * 3600):
            time.sleep(0.001)
            continue
        last = now
        try:
            step(now)
        except Exception as exc:  # any exception at all is a failure of the soak
            errors.append(f"{name}: {type(exc).__name__}: {exc}")
            return


class PersonaRefresh:
    def __init__(self, system: MemorySystem, fills: list[Fill]) -> None:
        self.system = system
        self.fills = [f.model_copy(update={"trader_id": TRADER}) for f in fills]
        self.given = 0
        self.calls = 0
        self.versions: list[tuple[datetime, int]] = []

    def __call__(self, now: datetime) -> None:
        self.calls += 1
        persona = self.system.persona
        upto = self.given
        while upto < len(self.fills) and self.fills[upto].datetime <= now:
            upto += 1
        if upto > self.given:
            profile = persona.update_from_fills(TRADER, self.fills[self.given : upto], as_of=now)
            self.given = upto
            self.versions.append((now, profile.version))
        if self.calls % 4 == 0:
            changes = persona.update_from_text(TRADER, NOTES[self.calls // 4 % 2], as_of=now)
            if any(c.action in ("ADD", "UPDATE") for c in changes):
                self.versions.append((now, changes[0].version))


class Consolidation:
    def __init__(self, system: MemorySystem, eth: FeatureFrame) -> None:
        self.system = system
        self.eth = eth
        self.next = max(0, eth.locate(LOOP_START))
        self.observed = 0
        self.decayed = 0
        self.calls = 0
        self.reads = 0

    def __call__(self, now: datetime) -> None:
        self.calls += 1
        s = self.system
        while self.next < len(self.eth) and self.eth.row(self.next).as_of <= now:
            s.working.observe_bar(TRADER, self.eth, self.next)
            self.next += 1
            self.observed += 1
        if self.calls % 150 == 0:
            self.decayed += s.episodic.decay(TRADER, as_of=now, factor=0.999)
        window = s.working.current(TRADER, "BTC/USDT", as_of=now)
        assert all(snap.as_of <= now for snap in window)
        self.reads += 1
        if self.calls % 3 == 0:
            recalled = s.episodic.recall(TRADER, "BTC/USDT crash liquidations", as_of=now, top_k=3)
            assert all(e.episode.trader_id == TRADER for e in recalled)
            self.reads += 1


def close_enough(a: Any, b: Any) -> bool:
    """Content equality, floats to 1e-12 relative (chromadb float round trip)."""
    if isinstance(a, float) and isinstance(b, float):
        return math.isclose(a, b, rel_tol=1e-12)
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(close_enough(a[k], b[k]) for k in a)
    return bool(a == b)


@pytest.mark.slow
def test_decision_loop_with_persona_refresh_and_consolidation(
    shared_data: Path, tmp_path: Path
) -> None:
    market = shared_data / "market" / "binance"
    btc_full = load_ohlcv(market, "BTC/USDT", "1h")
    btc = dataclasses.replace(btc_full, frame=btc_full.frame.loc["2024-01-01":"2025-03-31"])
    eth_full: OHLCVFrame = load_ohlcv(market, "ETH/USDT", "1h")
    eth = compute_features(
        dataclasses.replace(eth_full, frame=eth_full.frame.loc["2024-01-01":"2025-05-01"])
    )
    fills = [
        f
        for f in load_hyperliquid_fills(shared_data / "trades" / "hyperliquid_fills.csv")
        if f.trader_id == ETH_SOL_SHORT
    ]
    settings = load_settings()
    agent = settings.agent.model_copy(update={"context_every_bars": 8})
    cfg = settings.model_copy(
        update={
            "store": StoreSettings(path=tmp_path / "khala"),
            "memory": MemorySettings(working_state_path=tmp_path / "w.sqlite3"),
            "agent": agent,
        }
    )
    clock = Clock()
    errors: list[str] = []
    with build_memory_system(cfg, embedder=HashingEmbedder()) as system:
        policy = CheckingPolicy(RulePolicy(agent), clock)
        manager = DeepTraderManager(
            features=compute_features(btc),
            policy=policy,
            agent=agent,
            system=system,
            seed_note=DEFAULT_CONSTRAINTS_NOTE,
        )
        refresh = PersonaRefresh(system, fills)
        consolidation = Consolidation(system, eth)
        threads = [
            threading.Thread(target=job, args=("persona", errors, clock, refresh, 24)),
            threading.Thread(target=job, args=("consolidation", errors, clock, consolidation, 3)),
        ]
        for thread in threads:
            thread.start()
        try:
            result = drive(Recorder(manager, clock), btc, trader_id=TRADER, start=LOOP_START)
            manager.finish()
        finally:
            clock.done.set()
            for thread in threads:
                thread.join(timeout=120)
        steps = len(result.records)
        stats = manager.stats()
        summary = {
            "loop_steps": steps,
            "persona_calls": refresh.calls,
            "persona_versions": len(refresh.versions),
            "consolidation_calls": consolidation.calls,
            "eth_bars_observed": consolidation.observed,
            "episodes_decayed": consolidation.decayed,
            "background_reads": consolidation.reads,
            "decisions_recorded": stats.get("decisions_recorded", 0),
            "outcomes_recorded": stats.get("outcomes_recorded", 0),
        }
        print(f"\nsoak: {json.dumps(summary)}")
        assert errors == [] and policy.tier_errors == []
        assert stats.get("write_errors", 0) == 0
        assert steps >= MIN_STEPS
        assert refresh.calls > 50 and consolidation.calls > 50 and consolidation.decayed > 0
        check_no_lost_updates(system, stats, consolidation)
        check_persona_versions(system, refresh)
        check_store_consistency(system)


def check_no_lost_updates(system: MemorySystem, stats: dict[str, float], c: Consolidation) -> None:
    episodes = [
        decode_episode(r) for r in system.store.scan(TRADER, as_of=FAR) if r.kind == "episodic"
    ]
    ops = Counter(entry["op"] for _, log in episodes for entry in log)
    assert ops["outcome"] == stats["outcomes_recorded"], "an outcome was lost"
    assert ops["decay"] == c.decayed, "a decay was lost"
    types = Counter(base.event_type for base, _ in episodes)
    assert types["decision"] == stats["decisions_recorded"]
    eth_contexts = sum(
        1 for base, _ in episodes if base.event_type == "context" and base.symbol == "ETH/USDT"
    )
    window, batch = MemorySettings().working_window, MemorySettings().consolidate_batch
    expected = 0 if c.observed <= window else 1 + (c.observed - window - 1) // batch
    assert eth_contexts == expected


def check_persona_versions(system: MemorySystem, refresh: PersonaRefresh) -> None:
    records = system.store.scan(TRADER, as_of=FAR, filters={"kind": "persona"})
    versions = sorted((r.created_at, int(r.metadata["version"])) for r in records)
    numbers = [v for _, v in versions]
    assert numbers == list(range(1, len(numbers) + 1)), "versions are not 1, 2, 3, ..."
    assert all(a[0] <= b[0] for a, b in itertools.pairwise(versions))
    seen = [v for _, v in refresh.versions]
    assert seen == sorted(set(seen)) and set(seen) <= set(numbers)
    assert len(numbers) >= 1 + len(seen)


def check_store_consistency(system: MemorySystem) -> None:
    store = system.store
    assert store._audit.pending() == 0
    records = store.scan(TRADER, as_of=FAR)
    last = {e.record_id: e for e in store.history(TRADER)}
    for record in records:
        event = last[record.id]
        assert event.event != "DELETE" and close_enough(event.new, record.content())
    # get() reads the chroma backend's in-process row mirror; scan() reads chroma itself
    mirrored = {r.id: r for r in store.get(TRADER, [r.id for r in records], as_of=FAR)}
    assert len(mirrored) == len(records)
    for record in records:
        held = mirrored[record.id]
        assert held.text == record.text and held.created_at == record.created_at
        assert math.isclose(held.importance, record.importance, rel_tol=1e-12)

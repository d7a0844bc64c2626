"""Episodes recalled by nearest market state (EpisodicMemory.recall_by_state) on real
chromadb and the memory backend: ranking, the as_of fence on episodes and outcomes, the
horizon filter, and the index following another writer's changes."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from backend.config import MemorySettings
from backend.memory import STATE_FEATURES, StateIndex
from backend.memory.episodic import EpisodicMemory
from backend.memory.models import Episode, Outcome
from tests.conftest import StoreFactory

T0 = datetime(2022, 5, 1, tzinfo=UTC)
CALM = {"ret_1d": 0.0, "ret_7d": 0.01, "rv_short": 0.3, "rv_long": 0.35, "vol_ratio": 0.86,
        "drawdown": -0.02, "trend_spread": 0.01}  # fmt: skip
PANIC = {"ret_1d": -0.12, "ret_7d": -0.25, "rv_short": 1.4, "rv_long": 0.7, "vol_ratio": 2.0,
         "drawdown": -0.3, "trend_spread": -0.06}  # fmt: skip


def episode(key: str, state: dict[str, float], *, hours: int) -> Episode:
    return Episode(
        id=f"ep-{key}",
        trader_id="alice",
        symbol="BTC/USDT",
        event_type="flash_crash",
        occurred_at=T0 + timedelta(hours=hours),
        description=f"episode {key}",
        state=state,
        importance=0.5,
    )


def nudged(state: dict[str, float], k: float) -> dict[str, float]:
    return {name: value * (1 + k) for name, value in state.items()}


def outcome(ret: float, at: datetime, horizon: str = "24h") -> Outcome:
    return Outcome(horizon=horizon, market_return=ret, resolved_at=at)


def test_nearest_states_with_known_outcomes_are_recalled(make_store: StoreFactory) -> None:
    mem = EpisodicMemory(make_store(), settings=MemorySettings())
    eps = [episode(f"calm{i}", nudged(CALM, i / 20), hours=i) for i in range(4)]
    eps += [episode(f"panic{i}", nudged(PANIC, i / 20), hours=10 + i) for i in range(4)]
    eps.append(episode("no-outcome", PANIC, hours=20))
    eps.append(episode("no-state", {"ret_1d": -0.1}, hours=21))
    mem.add(eps, as_of=T0 + timedelta(hours=22))
    resolved = T0 + timedelta(days=2)
    for e in eps:
        if e.id != "ep-no-outcome":
            ret = -0.05 if "panic" in e.id else 0.01
            mem.record_outcome("alice", e.id, outcome(ret, resolved), as_of=resolved)
    late = resolved + timedelta(hours=1)
    hits = mem.recall_by_state("alice", "BTC/USDT", PANIC, as_of=late, top_k=3)
    assert [h.episode.id for h in hits] == ["ep-panic0", "ep-panic1", "ep-panic2"]
    assert hits[0].similarity == pytest.approx(1.0) and hits[0].score == hits[0].similarity
    assert all(h.episode.outcome is not None for h in hits)
    calm = mem.recall_by_state("alice", "BTC/USDT", CALM, as_of=late, top_k=8)
    assert {h.episode.id for h in calm[:4]} == {f"ep-calm{i}" for i in range(4)}
    assert "ep-no-outcome" not in {h.episode.id for h in calm}  # no outcome: no answer
    assert mem.recall_by_state("alice", "ETH/USDT", PANIC, as_of=late, top_k=3) == []
    assert mem.recall_by_state("alice", "BTC/USDT", {"ret_1d": 0.0}, as_of=late, top_k=3) == []


def test_the_fence_hides_later_episodes_and_outcomes(make_store: StoreFactory) -> None:
    mem = EpisodicMemory(make_store(), settings=MemorySettings())
    mem.add([episode("a", PANIC, hours=0)], as_of=T0)
    first = T0 + timedelta(days=1)
    mem.record_outcome("alice", "ep-a", outcome(-0.05, first), as_of=first)
    second = T0 + timedelta(days=3)
    mem.record_outcome("alice", "ep-a", outcome(0.02, second, "3d"), as_of=second)
    mem.add([episode("b", PANIC, hours=24 * 4)], as_of=T0 + timedelta(days=4))
    mem.record_outcome("alice", "ep-b", outcome(-0.07, second + timedelta(days=2)),
                       as_of=second + timedelta(days=2))  # fmt: skip
    assert (
        mem.recall_by_state("alice", "BTC/USDT", PANIC, as_of=first - timedelta(1), top_k=5) == []
    )
    at_first = mem.recall_by_state("alice", "BTC/USDT", PANIC, as_of=first, top_k=5)
    assert [
        (h.episode.id, h.episode.outcome.market_return) for h in at_first if h.episode.outcome
    ] == [("ep-a", -0.05)]
    # the later outcome replaces the first from its own time on; b is not known yet
    at_second = mem.recall_by_state("alice", "BTC/USDT", PANIC, as_of=second, top_k=5)
    assert [h.episode.outcome.horizon for h in at_second if h.episode.outcome] == ["3d"]
    # over 24h: a's 24h outcome still holds (a 3d outcome does not replace it), b's too
    only_24h = mem.recall_by_state(
        "alice", "BTC/USDT", PANIC, as_of=second + timedelta(days=3), top_k=5, horizon="24h"
    )
    assert [
        (h.episode.id, h.episode.outcome.horizon, h.episode.outcome.market_return)
        for h in only_24h
        if h.episode.outcome
    ] == [("ep-b", "24h", -0.07), ("ep-a", "24h", -0.05)]
    assert mem.recall_by_state(
        "alice", "BTC/USDT", PANIC, as_of=second + timedelta(days=3), top_k=5, horizon="3d"
    )[0].episode.outcome == outcome(0.02, second, "3d")


def test_a_trade_outcome_after_the_horizon_keeps_the_horizon_outcome(
    make_store: StoreFactory,
) -> None:
    """A decision episode's position closing after its horizon logs a ``trade`` outcome;
    a recall over the horizon still finds the episode, with its horizon outcome."""
    mem = EpisodicMemory(make_store(), settings=MemorySettings())
    mem.add([episode("a", PANIC, hours=0)], as_of=T0)
    known = T0 + timedelta(days=1)
    mem.record_outcome("alice", "ep-a", outcome(-0.05, known), as_of=known)
    closed = T0 + timedelta(days=2)
    trade = Outcome(horizon="trade", market_return=0.03, pnl=12.0, resolved_at=closed)
    mem.record_outcome("alice", "ep-a", trade, as_of=closed)
    later = T0 + timedelta(days=5)
    hits = mem.recall_by_state("alice", "BTC/USDT", PANIC, as_of=later, top_k=5, horizon="24h")
    assert [(h.episode.id, h.episode.outcome) for h in hits] == [("ep-a", outcome(-0.05, known))]
    anything = mem.recall_by_state("alice", "BTC/USDT", PANIC, as_of=later, top_k=5)
    assert [h.episode.outcome for h in anything] == [trade]  # the latest, any horizon
    assert mem.get("alice", ["ep-a"], as_of=later)[0].outcome == trade


def test_the_index_follows_another_writers_changes(make_durable_store: StoreFactory) -> None:
    reader = EpisodicMemory(make_durable_store(), settings=MemorySettings())
    writer = EpisodicMemory(make_durable_store(), settings=MemorySettings())
    at = T0 + timedelta(days=2)
    writer.add([episode("a", PANIC, hours=0)], as_of=T0)
    writer.record_outcome("alice", "ep-a", outcome(-0.05, at), as_of=at)
    assert [
        h.episode.id for h in reader.recall_by_state("alice", "BTC/USDT", PANIC, as_of=at, top_k=5)
    ] == ["ep-a"]
    writer.add([episode("b", PANIC, hours=1)], as_of=at)
    writer.record_outcome("alice", "ep-b", outcome(-0.06, at), as_of=at)
    hits = reader.recall_by_state("alice", "BTC/USDT", PANIC, as_of=at, top_k=5)
    assert sorted(h.episode.id for h in hits) == ["ep-a", "ep-b"]


def test_state_index_scales_each_feature_by_its_spread() -> None:
    rows = []
    for i in range(10):
        state = dict(CALM, rv_short=0.3 + i * 0.1)
        rows += StateIndex.row(f"e{i}", created_ts=0.0, state=state, outcomes=[(1.0, 0.01, "24h")])
    index = StateIndex.from_rows(rows)
    assert len(index) == 10 and len(STATE_FEATURES) == 7
    near = index.nearest(dict(CALM, rv_short=0.62), as_of_ts=2.0, k=2)
    assert [n.episode_id for n in near] == ["e3", "e4"]
    assert index.nearest(CALM, as_of_ts=0.5, k=2) == []  # no outcome known yet


def test_the_index_brought_up_to_date_equals_one_built_afresh(
    make_durable_store: StoreFactory,
) -> None:
    """The reader's index follows another writer's adds, outcome updates, deletes and
    writes of other symbols incrementally; at every step it answers like a reader that
    builds its index from a full scan."""
    reader = EpisodicMemory(make_durable_store(), settings=MemorySettings())
    writer = EpisodicMemory(make_durable_store(), settings=MemorySettings())
    at = T0 + timedelta(days=5)

    def answers(mem: EpisodicMemory) -> list[tuple[str, float]]:
        hits = mem.recall_by_state("alice", "BTC/USDT", PANIC, as_of=at, top_k=20)
        return [(h.episode.id, h.similarity) for h in hits]

    def fresh() -> list[tuple[str, float]]:
        return answers(EpisodicMemory(make_durable_store(), settings=MemorySettings()))

    eth = episode("eth", PANIC, hours=2).model_copy(update={"symbol": "ETH/USDT"})
    steps = [
        lambda: writer.add(
            [episode(f"p{i}", nudged(PANIC, i / 10), hours=i) for i in range(4)] + [eth],
            as_of=T0 + timedelta(hours=4),
        ),
        lambda: [
            writer.record_outcome("alice", f"ep-p{i}", outcome(-0.01 * i, at), as_of=at)
            for i in range(3)
        ],
        lambda: writer.record_outcome("alice", "ep-eth", outcome(-0.2, at), as_of=at),
        lambda: writer.record_outcome("alice", "ep-p1", outcome(0.03, at, "3d"), as_of=at),
        lambda: writer.store.delete("alice", ["ep-p0"], as_of=at),
        lambda: writer.record_outcome("alice", "ep-p3", outcome(0.01, at), as_of=at),
    ]
    assert answers(reader) == []  # the index exists before the first write
    for step in steps:
        step()
        assert answers(reader) == fresh()
    assert [i for i, _ in answers(reader)] == ["ep-p1", "ep-p2", "ep-p3"]


def test_an_index_changed_in_place_answers_like_one_built_afresh() -> None:
    """``StateIndex.with_changes`` (episodes added, given new outcomes, removed; through
    compactions) answers every query like an index built from the same rows in another
    order, and leaves the index it came from unchanged."""
    rng = random.Random(7)
    pool = [{name: rng.gauss(0, 1) for name in STATE_FEATURES} for _ in range(6)]

    def rows_of(eid: str, created: float) -> list[Any]:
        state = rng.choice(pool)  # shared states: ties, broken by time then id
        outcomes = [(created + 1 + h, rng.gauss(0, 0.02), rng.choice(["24h", "4d"]))
                    for h in range(rng.randint(0, 3))]  # fmt: skip
        return StateIndex.row(eid, created_ts=created, state=state, outcomes=outcomes)

    current = {f"e{i:03d}": rows_of(f"e{i:03d}", float(i % 40)) for i in range(200)}
    index = StateIndex.from_rows(r for rows in current.values() for r in rows)
    for step in range(30):
        changes: dict[str, list[Any]] = {}
        for _ in range(rng.randint(1, 40)):
            eid = f"e{rng.randrange(260):03d}"
            changes[eid] = [] if rng.random() < 0.3 else rows_of(eid, float(rng.randrange(40)))
        before = index.nearest(CALM, as_of_ts=50.0, k=10)
        changed = index.with_changes(changes)
        assert index.nearest(CALM, as_of_ts=50.0, k=10) == before
        current.update(changes)
        index = changed
        shuffled = [r for rows in current.values() for r in rows]
        rng.shuffle(shuffled)
        fresh = StateIndex.from_rows(shuffled)
        assert len(index) == len(fresh)
        for as_of in (5.0, 20.0, 50.0):
            for horizon in (None, "24h", "4d", "1h"):
                query = dict(PANIC) if step % 2 else dict(CALM)
                got = index.nearest(query, as_of_ts=as_of, k=7, horizon=horizon)
                assert got == fresh.nearest(query, as_of_ts=as_of, k=7, horizon=horizon)


def test_above_the_scale_sample_the_answer_still_ignores_row_order() -> None:
    """Over 16,384 live rows the scales come from a sample: the same rows (by a hash of
    id and outcome time) for an index changed in place and one built afresh."""
    rng = random.Random(11)

    def rows_of(eid: str, created: float, ret: float) -> list[Any]:
        state = {name: rng.gauss(0, 1) for name in STATE_FEATURES}
        return StateIndex.row(
            eid, created_ts=created, state=state, outcomes=[(created + 1, ret, "24h")]
        )

    current = {f"e{i:05d}": rows_of(f"e{i:05d}", float(i), 0.01) for i in range(17000)}
    index = StateIndex.from_rows(r for rows in current.values() for r in rows)
    changes = {eid: rows_of(eid, float(n), -0.02) for n, eid in enumerate(list(current)[::7])}
    changes.update({f"e{i:05d}": rows_of(f"e{i:05d}", float(i), 0.0) for i in range(17000, 17400)})
    index = index.with_changes(changes)
    current.update(changes)
    shuffled = [r for rows in current.values() for r in rows]
    rng.shuffle(shuffled)
    fresh = StateIndex.from_rows(shuffled)
    for query in (CALM, PANIC, {name: 0.0 for name in STATE_FEATURES}):
        got = index.nearest(query, as_of_ts=1e6, k=24)
        assert got == fresh.nearest(query, as_of_ts=1e6, k=24) and len(got) == 24

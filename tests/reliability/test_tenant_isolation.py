"""Issue 7.4 — tenant isolation: no record of one trader ever reaches another.

A property test (hypothesis) over many traders whose ids differ by case and punctuation
(``alice``, ``Alice``, ``alice.1``, ``alice_1``, an 0x address...) and random programs of
writes and reads on one store (embedded and a real chroma server):

- writes reuse the same record ids across traders (an id is unique per trader only);
- reads are dense, BM25 and hybrid searches (text queries, some copied from other
  traders' records), with random filters (``kind``, free metadata, any-of lists, an
  importance floor) and ``as_of`` fences, ``get`` by ids taken from other traders,
  ``scan`` and ``count``;
- hostile inputs, as a user or a tool call would send them: filter keys ``trader_id``,
  ``created_at``, ``id``, ``$or``, ``u.trader_id``; updates, deletes and outcomes aimed at
  another trader's ids; a record of one trader upserted under another; memory-tool calls
  with another trader's episode ids and extra arguments.

Every result is checked against a model of what each trader wrote: a hit must be one of
the caller's own records with its own text (a foreign record with the same id has another
text), created at or before ``as_of``. Scope-widening attempts fail with
:class:`TenantScopeError` / :class:`StoreError` or touch nothing.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from backend.config import MemorySettings
from backend.errors import SentinelError, StoreError, TenantScopeError
from backend.memory.episodic import EpisodicMemory
from backend.memory.hierarchical import HierarchicalMemory
from backend.storage import KhalaStore, MemoryRecord
from backend.tools.memory_toolkit import MemoryToolkit
from tests.conftest import StoreFactory

TRADERS = ("alice", "Alice", "alice.1", "alice_1", "bob", "0x513b8629fe877bb581bf244e326a047b")
WORDS = [
    "luna",
    "depeg",
    "crash",
    "rally",
    "halving",
    "etf",
    "whale",
    "liquidation",
    "funding",
    "bitcoin",
    "ether",
    "solana",
]
KINDS = ("news", "note", "episodic")
T0 = datetime(2022, 5, 1, tzinfo=UTC)
FAR = datetime(9999, 1, 1, tzinfo=UTC)
HOSTILE_KEYS = ("trader_id", "created_at", "created_at_ts", "id")
ODD_KEYS = ("$or", "$and", "u.trader_id", "$contains", "symbol", "src")


class World:
    """The store under test and a model of what each trader wrote."""

    def __init__(self, store: KhalaStore) -> None:
        self.store = store
        self.model: dict[str, dict[str, MemoryRecord]] = {t: {} for t in TRADERS}
        self.nonce = 0
        self.reads = self.hits = self.refused = 0
        episodic = EpisodicMemory(store, settings=MemorySettings())
        self.toolkit = MemoryToolkit(
            HierarchicalMemory(
                persona=_NoPersona(),
                working=_NoWorking(),
                episodic=episodic,
                settings=MemorySettings(),
            ),
            working=_NoWorking(),
            episodic=episodic,
            persona=_NoPersona(),
        )

    def check(self, trader: str, records: list[MemoryRecord], as_of: datetime) -> None:
        self.reads += 1
        for record in records:
            self.hits += 1
            assert record.trader_id == trader
            own = self.model[trader].get(record.id)
            assert own is not None, f"{record.id} of another trader reached {trader}"
            assert record.text == own.text and record.created_at <= as_of


class _NoPersona:
    def get_profile(self, trader_id: str, as_of: datetime) -> None:
        return None

    def render_profile(self, profile: object) -> str:
        return ""

    def update_from_text(self, trader_id: str, text: str, **kw: Any) -> list[Any]:
        return []


class _NoWorking:
    def current(self, trader_id: str, symbol: str, **kw: Any) -> list[Any]:
        return []

    def observe(self, snapshot: object) -> None:
        return None


scalar = st.one_of(st.sampled_from(KINDS), st.sampled_from(WORDS), st.integers(0, 3))
filters = st.dictionaries(
    st.sampled_from(("kind", "src", "n", *HOSTILE_KEYS, *ODD_KEYS)),
    st.one_of(scalar, st.lists(scalar, min_size=1, max_size=3)),
    max_size=2,
)
op = st.one_of(
    st.tuples(st.just("write"), st.sampled_from(TRADERS), st.integers(1, 6), st.integers(0, 40)),
    st.tuples(
        st.just("search"),
        st.sampled_from(TRADERS),
        st.sampled_from(("dense", "bm25", "hybrid")),
        st.one_of(st.none(), filters),
        st.one_of(st.none(), st.floats(0, 1)),
        st.integers(0, 45),
        st.booleans(),  # query copied from another trader's record
    ),
    st.tuples(st.just("get"), st.sampled_from(TRADERS), st.sampled_from(TRADERS)),
    st.tuples(st.just("poke"), st.sampled_from(TRADERS), st.sampled_from(TRADERS)),
    st.tuples(st.just("tool"), st.sampled_from(TRADERS), st.sampled_from(TRADERS)),
)


def run_op(world: World, step: tuple[Any, ...], draw: st.DrawFn) -> None:
    store, model = world.store, world.model
    kind = step[0]
    if kind == "write":
        _, trader, n, day = step
        at = T0 + timedelta(days=day)
        batch = []
        for _ in range(n):
            world.nonce += 1
            rid = f"m{draw(st.integers(0, 60))}"  # the same ids recur across traders
            batch.append(
                MemoryRecord(
                    id=rid,
                    trader_id=trader,
                    text=" ".join(draw(st.lists(st.sampled_from(WORDS), min_size=1, max_size=6)))
                    + f" n{world.nonce} {trader}",
                    created_at=at,
                    kind=draw(st.sampled_from(KINDS)),
                    importance=draw(st.floats(0, 1)),
                    metadata={"src": draw(st.sampled_from(WORDS)), "n": draw(st.integers(0, 3))},
                )
            )
        batch = list({r.id: r for r in batch}.values())
        if any(model[trader].get(r.id, r).created_at > at for r in batch):
            return  # a record may not move back in time in this model
        store.upsert(trader, batch, as_of=at)
        model[trader].update({r.id: r for r in batch})
    elif kind == "search":
        _, trader, method, spec, floor, day, foreign = step
        as_of = T0 + timedelta(days=day)
        others = [r for t, recs in model.items() if t != trader for r in recs.values()]
        query = (
            others[draw(st.integers(0, 10**6)) % len(others)].text
            if foreign and others
            else " ".join(draw(st.lists(st.sampled_from(WORDS), min_size=1, max_size=4)))
        )
        try:
            hits = store.search(
                trader,
                query,
                as_of=as_of,
                method=method,
                filters=spec,
                min_importance=floor,
                top_k=draw(st.integers(1, 20)),
            )
        except TenantScopeError:
            assert spec is not None and set(spec) & set(HOSTILE_KEYS)
            world.refused += 1
            return
        assert not (spec and set(spec) & set(HOSTILE_KEYS)), "a reserved filter key was accepted"
        world.check(trader, [h.record for h in hits], as_of)
        assert all(floor is None or h.record.importance >= floor for h in hits)
        world.check(trader, store.scan(trader, as_of=as_of), as_of)
        assert store.count(trader, as_of=as_of) == sum(
            r.created_at <= as_of for r in model[trader].values()
        )
    elif kind == "get":
        _, trader, other = step
        ids = list(model[other])
        world.check(trader, store.get(trader, ids, as_of=FAR), FAR)
    elif kind == "poke":  # updates, deletes and foreign records aimed across the line
        _, trader, other = step
        foreign = [rid for rid in model[other] if rid not in model[trader]]
        before = {t: store.count(t) for t in TRADERS}
        if foreign:
            rid = foreign[0]
            try:
                store.update(trader, rid, as_of=FAR - timedelta(days=1), importance=1.0)
                raise AssertionError("updated a record of another trader")
            except StoreError:
                world.refused += 1
            assert store.delete(trader, [rid], as_of=FAR - timedelta(days=1)) == 0
        if other != trader and model[other]:
            stolen = next(iter(model[other].values()))
            try:
                store.upsert(trader, [stolen], as_of=FAR - timedelta(days=1))
                raise AssertionError("a record of another trader was written")
            except TenantScopeError:
                world.refused += 1
        assert {t: store.count(t) for t in TRADERS} == before
        world.check(other, store.get(other, list(model[other]), as_of=FAR), FAR)
        assert len(store.get(other, list(model[other]), as_of=FAR)) == len(model[other])
    else:  # memory-tool calls of `trader` that name `other`'s records
        _, trader, other = step
        for rid in list(model[other])[:3]:
            answer = json.loads(
                world.toolkit.dispatch(
                    "record_outcome",
                    {"episode_id": rid, "horizon": "1d", "market_return": 0.5, "pnl": -1.0},
                    trader_id=trader,
                    as_of=FAR - timedelta(days=1),
                )
            )
            assert "error" in answer
        scoped = world.toolkit.dispatch(
            "recall",
            {"query": "luna crash", "symbol": "BTC/USDT", "trader_id": other},
            trader_id=trader,
            as_of=FAR,
        )
        assert "error" in json.loads(scoped)  # a tool cannot name the trader


@pytest.mark.slow
def test_no_record_crosses_traders(make_store: StoreFactory) -> None:
    totals = Counter()

    @settings(
        max_examples=30,
        database=None,
        deadline=None,
        derandomize=True,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(st.data())
    def program(data: st.DataObject) -> None:
        # a fresh world (own collections) per example, so a failure replays exactly
        totals["worlds"] += 1
        world = World(make_store(collection_prefix=f"w{totals['worlds']}x{os.getpid()}"))
        seed = [
            ("write", t, data.draw(st.integers(3, 8)), data.draw(st.integers(0, 10)))
            for t in TRADERS
        ]  # every trader starts with some memories
        for step in seed + data.draw(st.lists(op, min_size=10, max_size=30)):
            try:
                run_op(world, step, data.draw)
            except SentinelError as err:
                raise AssertionError(f"{step}: unexpected {type(err).__name__}: {err}") from err
        totals.update(
            reads=world.reads,
            hits=world.hits,
            refused=world.refused,
            records=sum(len(m) for m in world.model.values()),
        )

    program()
    print(f"\ntenant isolation: {dict(totals)}")
    assert totals["hits"] > 1000 and totals["refused"] > 20 and totals["records"] >= 500

"""Episodic memory on real chromadb (embedded and server): storage, reflection, recall."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from backend.config import DetectorSettings, MemorySettings
from backend.embeddings import MiniLMEmbedder
from backend.errors import LookAheadError, StoreError
from backend.memory._features import FeatureFrame
from backend.memory._news import FearGreedIndex, HeadlineIndex
from backend.memory.detectors import detect_market_events, detect_news_shocks, events_to_episodes
from backend.memory.episodic import EpisodicMemory, outcome_delta
from backend.memory.models import ActionLink, Episode, EpisodeType, Outcome
from tests.conftest import StoreFactory

T0 = datetime(2022, 5, 1, tzinfo=UTC)
SETTINGS = MemorySettings()


def ep(
    key: str,
    text: str,
    *,
    at: datetime = T0,
    trader: str = "alice",
    importance: float = 0.5,
    event_type: EpisodeType = "news_shock",
    symbol: str = "BTC/USDT",
) -> Episode:
    return Episode(
        id=f"ep-{trader}-{key}",
        trader_id=trader,
        symbol=symbol,
        event_type=event_type,
        occurred_at=at,
        description=text,
        state={"ret_bar": -0.07},
        importance=importance,
        sources=[f"candle:{symbol}:1h:{at:%Y-%m-%dT%H:%M}Z"],
    )


def test_round_trip_and_idempotent_add(make_store: StoreFactory) -> None:
    store = make_store()
    mem = EpisodicMemory(store, settings=SETTINGS)
    items = [
        ep("a", "Flash crash: BTC drops 7% in one hour", event_type="flash_crash"),
        ep("b", "News shock on stablecoin: UST loses its peg", at=T0 + timedelta(hours=1)),
        ep("c", "Breakout above the 72-bar high", at=T0 + timedelta(days=1), symbol="ETH/USDT"),
    ]
    res = mem.add(items, as_of=T0 + timedelta(days=2))
    assert res.added == 3
    assert mem.add(items, as_of=T0 + timedelta(days=2)).unchanged == 3
    later = T0 + timedelta(days=3)
    assert mem.get("alice", ["ep-alice-c", "ep-alice-a", "nope"], as_of=later) == [
        items[2],
        items[0],
    ]
    assert mem.scan("alice", as_of=later) == items
    assert mem.scan("alice", as_of=later, symbol="ETH/USDT") == [items[2]]
    assert mem.scan("alice", as_of=later, event_types=["flash_crash"]) == [items[0]]
    record = store.get("alice", ["ep-alice-a"], as_of=later)[0]
    assert record.kind == "episodic" and record.text == items[0].description
    assert record.metadata["event_type"] == "flash_crash"
    assert record.metadata["symbol"] == "BTC/USDT"
    with pytest.raises(LookAheadError):
        mem.add([ep("d", "from the future", at=later)], as_of=T0)


def test_outcome_updates_importance_and_later_reads_only(make_store: StoreFactory) -> None:
    mem = EpisodicMemory(make_store(), settings=SETTINGS)
    t1, t2, t3 = (T0 + timedelta(hours=h) for h in (1, 25, 49))
    mem.add(
        [ep("loss", "Flash crash on LUNA news"), ep("quiet", "Breakout, nothing happened")],
        as_of=T0,
    )
    action = ActionLink(decision_id="d1", action="buy", size=0.2, at=t1)
    linked = mem.link_action("alice", "ep-alice-loss", action, as_of=t1)
    assert linked.actions == [action] and linked.importance == 0.5
    loss = Outcome(horizon="24h", market_return=-0.08, pnl=-500.0, resolved_at=t2)
    after = mem.record_outcome("alice", "ep-alice-loss", loss, as_of=t2)
    assert after.importance == pytest.approx(0.5 + 0.2 * 0.8 + 0.25)
    assert after.outcome == loss
    quiet = Outcome(horizon="24h", market_return=0.005, pnl=None, resolved_at=t2)
    faded = mem.record_outcome("alice", "ep-alice-quiet", quiet, as_of=t2)
    assert faded.importance == pytest.approx(0.5 + 0.2 * 0.05 - 0.05)
    # reads before the outcome was recorded never see it (no look-ahead in backtests)
    (before,) = mem.get("alice", ["ep-alice-loss"], as_of=t1)
    assert before.importance == 0.5 and before.outcome is None and before.actions == [action]
    (start,) = mem.get("alice", ["ep-alice-loss"], as_of=T0)
    assert start.actions == []
    (now,) = mem.get("alice", ["ep-alice-loss"], as_of=t3)
    assert now == after
    with pytest.raises(LookAheadError):
        mem.record_outcome("alice", "ep-alice-loss", loss, as_of=t1)
    with pytest.raises(LookAheadError):
        mem.link_action("alice", "ep-alice-loss", action.model_copy(update={"at": t3}), as_of=t2)
    with pytest.raises(StoreError):
        mem.record_outcome("alice", "ep-unknown", loss, as_of=t2)
    early = loss.model_copy(update={"resolved_at": T0 - timedelta(hours=1)})
    with pytest.raises(StoreError):
        mem.record_outcome("alice", "ep-alice-loss", early, as_of=t2)


def test_an_outcome_is_known_only_once_its_horizon_has_passed(make_store: StoreFactory) -> None:
    """A ``1d`` outcome recorded an hour after its episode (an MCP caller's) would pass an
    hour's return off as a day's to a decision loop that filters outcomes by label: it is
    refused, naming when it can be known. ``trade`` and labels that are no timeframe have
    no horizon to check."""
    mem = EpisodicMemory(make_store(), settings=SETTINGS)
    mem.add([ep("loss", "Flash crash on LUNA news")], as_of=T0)
    hour, day = T0 + timedelta(hours=1), T0 + timedelta(days=1)
    early = Outcome(horizon="1d", market_return=-0.12, pnl=None, resolved_at=hour)
    with pytest.raises(StoreError, match="known only from 2022-05-02T00:00:00"):
        mem.record_outcome("alice", "ep-alice-loss", early, as_of=hour)
    with pytest.raises(StoreError, match="a 24h outcome"):
        mem.record_outcome("alice", "ep-alice-loss", early.model_copy(update={"horizon": "24h"}),
                           as_of=hour)  # fmt: skip
    (held,) = mem.get("alice", ["ep-alice-loss"], as_of=day)
    assert held.outcome is None  # nothing was written
    for label in ("1h", "trade", "until the close"):
        fine = Outcome(horizon=label, market_return=-0.01, pnl=None, resolved_at=hour)
        assert mem.record_outcome("alice", "ep-alice-loss", fine, as_of=hour).outcome == fine
    on_time = early.model_copy(update={"resolved_at": day})
    assert mem.record_outcome("alice", "ep-alice-loss", on_time, as_of=day).outcome == on_time


def test_batched_outcomes_apply_in_order_and_write_all_or_nothing(
    make_store: StoreFactory,
) -> None:
    store = make_store()
    mem = EpisodicMemory(store, settings=SETTINGS)
    t1 = T0 + timedelta(hours=24)
    mem.add([ep("x", "Flash crash on LUNA news"), ep("y", "Breakout, nothing")], as_of=T0)
    first = Outcome(horizon="24h", market_return=-0.10, pnl=None, resolved_at=t1)
    second = Outcome(horizon="trade", market_return=0.05, pnl=None, resolved_at=t1)
    quiet = Outcome(horizon="24h", market_return=0.001, pnl=None, resolved_at=t1)
    events_before = len(store.history("alice"))
    bad = [("ep-alice-x", first), ("ep-unknown", quiet)]
    with pytest.raises(StoreError, match="ep-unknown"):
        mem.record_outcomes("alice", bad, as_of=t1)
    assert len(store.history("alice")) == events_before  # nothing half-written
    got = mem.record_outcomes(
        "alice", [("ep-alice-x", first), ("ep-alice-y", quiet), ("ep-alice-x", second)], as_of=t1
    )
    assert [g.id for g in got] == ["ep-alice-x", "ep-alice-y", "ep-alice-x"]
    assert got[0] == got[2]  # each episode as of the batch's as_of
    assert got[2].importance == pytest.approx(0.5 + 0.2 + 0.2 * 0.5)  # both outcomes count
    assert got[2].outcome == second
    assert mem.get("alice", ["ep-alice-x", "ep-alice-y"], as_of=t1) == [got[2], got[1]]
    # one write per episode: x is updated once although it got two outcomes
    assert [e.event for e in store.history("alice", "ep-alice-x")] == ["ADD", "UPDATE"]
    # one outcome per horizon: the same one again later (a tool's retry at the server's
    # clock), or the job run as of an earlier time after a later run (a reviewer's:
    # importance 0.30 -> 0.479 instead of 0.39), changes nothing
    t2 = t1 + timedelta(hours=5)
    again = mem.record_outcomes("alice", [("ep-alice-x", first.model_copy(
        update={"resolved_at": t2}))], as_of=t2)  # fmt: skip
    assert again[0].importance == pytest.approx(got[2].importance)
    mem.add([ep("z", "Breakout again")], as_of=T0)
    (late,) = mem.record_outcomes("alice", [("ep-alice-z", first.model_copy(
        update={"resolved_at": t2}))], as_of=t2)  # fmt: skip
    (early,) = mem.record_outcomes("alice", [("ep-alice-z", first)], as_of=t1)
    assert mem.get("alice", ["ep-alice-z"], as_of=t2)[0].importance == late.importance
    assert early.importance == pytest.approx(0.5)  # as of t1 the outcome was not known yet


def test_reflection_rule() -> None:
    base = ep("x", "anything")
    acted = base.model_copy(
        update={"actions": [ActionLink(decision_id="d", action="sell", size=0.1, at=T0)]}
    )
    move = Outcome(horizon="24h", market_return=0.2, pnl=100.0, resolved_at=T0)
    assert outcome_delta(acted, move) == pytest.approx(0.2 + 0.1)
    assert outcome_delta(acted, move.model_copy(update={"pnl": -1.0})) == pytest.approx(0.45)
    assert outcome_delta(base, move) == pytest.approx(0.2)  # no action: only the move counts
    assert outcome_delta(base, move.model_copy(update={"market_return": 0.0})) == -0.05


def test_decay(make_store: StoreFactory) -> None:
    mem = EpisodicMemory(make_store(), settings=SETTINGS)
    mem.add([ep("a", "one"), ep("b", "two", importance=0.8)], as_of=T0)
    t1 = T0 + timedelta(days=1)
    assert mem.decay("alice", as_of=t1, factor=0.5) == 2
    assert [e.importance for e in mem.scan("alice", as_of=t1)] == [0.25, 0.4]
    assert [e.importance for e in mem.scan("alice", as_of=T0)] == [0.5, 0.8]
    with pytest.raises(StoreError):
        mem.decay("alice", as_of=t1, factor=1.5)


def test_recall_score_follows_the_formula(make_store: StoreFactory) -> None:
    mem = EpisodicMemory(make_store(), settings=SETTINGS)
    now = T0 + timedelta(days=30)
    text = "Celsius pauses withdrawals citing extreme market conditions"
    mem.add(
        [
            ep("old", text, at=T0, importance=0.8),
            ep("new", "Bitcoin breaks above its 72-hour high", at=now, importance=0.1),
            ep("mid", "Ether rallies ahead of the merge", at=T0 + timedelta(days=15)),
        ],
        as_of=now,
    )
    hits = mem.recall("alice", text, as_of=now, top_k=3)
    top = hits[0]
    assert top.episode.id == "ep-alice-old"
    # hand-computed: identical text -> similarity 1, age 30 d = one half-life, importance 0.8
    assert top.similarity == pytest.approx(1.0, abs=1e-6)
    assert top.recency == pytest.approx(0.5)
    assert top.score == pytest.approx(0.6 * 1.0 + 0.2 * 0.5 + 0.2 * 0.8, abs=1e-6)
    for h in hits:
        age = (now - h.episode.occurred_at).total_seconds() / 86_400
        assert h.recency == pytest.approx(0.5 ** (age / 30))
        assert h.score == pytest.approx(0.6 * h.similarity + 0.2 * h.recency + 0.2 * h.importance)
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
    # without the similarity term the order is recency + importance only
    flat = EpisodicMemory(
        mem.store,
        settings=SETTINGS.model_copy(update={"weight_similarity": 0.0, "weight_recency": 0.5}),
    )
    ranked = flat.recall("alice", text, as_of=now, top_k=3)
    assert [h.episode.id for h in ranked] == ["ep-alice-new", "ep-alice-mid", "ep-alice-old"]
    assert flat.recall("alice", text, as_of=now, top_k=3, event_types=[]) == []
    only = mem.recall("alice", text, as_of=now, top_k=3, event_types=["flash_crash"])
    assert only == []


def test_recall_never_returns_the_future(make_store: StoreFactory) -> None:
    mem = EpisodicMemory(make_store(), settings=SETTINGS)
    t1, t2 = T0 + timedelta(days=1), T0 + timedelta(days=2)
    mem.add([ep("early", "UST depeg", at=t1), ep("late", "UST depeg again", at=t2)], as_of=t2)
    assert mem.recall("alice", "UST depeg", as_of=T0, top_k=5) == []
    between = mem.recall("alice", "UST depeg", as_of=t1 + timedelta(hours=1), top_k=5)
    assert [h.episode.id for h in between] == ["ep-alice-early"]
    assert len(mem.recall("alice", "UST depeg", as_of=t2, top_k=5, method="hybrid")) == 2
    assert mem.get("alice", ["ep-alice-late"], as_of=t1) == []


def test_an_episode_carrying_a_later_action_or_outcome_is_refused(
    make_store: StoreFactory,
) -> None:
    """An outcome known only later must not be readable as of the add time (a backtest
    look-ahead): ``add`` refuses it, as ``link_action`` and ``record_outcomes`` do."""
    mem = EpisodicMemory(make_store(), settings=SETTINGS)
    later = T0 + timedelta(days=1)
    outcome = Outcome(horizon="1d", market_return=-0.42, resolved_at=later)
    with pytest.raises(LookAheadError, match="after as_of"):
        mem.add([ep("crash", "LUNA collapse", at=T0).model_copy(update={"outcome": outcome})],
                as_of=T0 + timedelta(hours=1))  # fmt: skip
    act = ActionLink(decision_id="d1", action="sell", size=0.5, at=later)
    with pytest.raises(LookAheadError, match="after as_of"):
        mem.add([ep("crash", "LUNA collapse", at=T0).model_copy(update={"actions": [act]})],
                as_of=T0)  # fmt: skip
    assert mem.get("alice", ["ep-alice-crash"], as_of=later) == []  # nothing written
    mem.add([ep("crash", "LUNA collapse", at=T0).model_copy(update={"outcome": outcome})],
            as_of=later)  # fmt: skip
    (got,) = mem.get("alice", ["ep-alice-crash"], as_of=later)
    assert got.outcome is not None and got.outcome.market_return == -0.42


def test_an_episode_is_written_once_a_changed_one_is_refused(make_store: StoreFactory) -> None:
    """Replacing a stored episode's description would change what reads as of earlier
    times return (the record keeps its time): refused; the same episode again is fine."""
    mem = EpisodicMemory(make_store(), settings=SETTINGS)
    first = ep("crash", "LUNA collapse", at=T0)
    mem.add([first], as_of=T0)
    mem.add([first], as_of=T0 + timedelta(days=7))  # idempotent
    changed = first.model_copy(update={"description": "LUNA collapse: insolvent, -30% next"})
    with pytest.raises(StoreError, match="written once"):
        mem.add([ep("other", "a new one", at=T0), changed], as_of=T0 + timedelta(days=7))
    (got,) = mem.get("alice", ["ep-alice-crash"], as_of=T0)
    assert got.description == "LUNA collapse"
    assert mem.get("alice", ["ep-alice-other"], as_of=T0 + timedelta(days=7)) == []
    # the outcome horizon is not what the episode is: the stored one is kept (a reviewer
    # found a decision recorded again with another horizon refused as "written once")
    timed = ep("timed", "a decision", at=T0).model_copy(update={"outcome_horizon_s": 86_400})
    mem.add([timed], as_of=T0)
    for other in (345_600, None):
        again = timed.model_copy(update={"outcome_horizon_s": other})
        assert mem.add([again], as_of=T0 + timedelta(days=1)).unchanged == 1
    (kept,) = mem.get("alice", ["ep-alice-timed"], as_of=T0 + timedelta(days=1))
    assert kept.outcome_horizon_s == 86_400


def test_tenant_isolation(make_store: StoreFactory) -> None:
    mem = EpisodicMemory(make_store(), settings=SETTINGS)
    text = "Large drawdown: -31% under the rolling high"
    mem.add([ep("1", text, trader="alice"), ep("1", text, trader="bob")], as_of=T0)
    for trader in ("alice", "bob"):
        hits = mem.recall(trader, text, as_of=T0, top_k=10)
        assert [h.episode.trader_id for h in hits] == [trader]
        assert mem.get(trader, ["ep-alice-1", "ep-bob-1"], as_of=T0)[0].trader_id == trader
        assert len(mem.get(trader, ["ep-alice-1", "ep-bob-1"], as_of=T0)) == 1
    assert mem.recall("carol", text, as_of=T0, top_k=10) == []
    mem.decay("bob", as_of=T0, factor=0.5)
    assert mem.get("alice", ["ep-alice-1"], as_of=T0)[0].importance == 0.5


def test_recall_is_semantic_with_the_real_model(
    make_store: StoreFactory, minilm: MiniLMEmbedder
) -> None:
    mem = EpisodicMemory(make_store(minilm), settings=SETTINGS)
    mem.add(
        [
            ep("luna", "News shock on 'stablecoin': Terra UST loses its dollar peg, LUNA crashes"),
            ep("bo", "Breakout: close 1.2% above the high of the previous 72 bars"),
            ep("dd", "Large drawdown: -20.4% under the rolling high", event_type="large_drawdown"),
            ep("cel", "Celsius halts withdrawals citing extreme market conditions"),
        ],
        as_of=T0,
    )
    hits = mem.recall("alice", "algorithmic stablecoin depegs", as_of=T0, top_k=2)
    assert hits[0].episode.id == "ep-alice-luna"
    hits = mem.recall("alice", "lender freezes customer withdrawals", as_of=T0, top_k=1)
    assert hits[0].episode.id == "ep-alice-cel"


def test_real_detector_episodes_round_trip_and_recall(
    make_store: StoreFactory,
    minilm: MiniLMEmbedder,
    btc_features: FeatureFrame,
    headline_index: HeadlineIndex,
    fear_greed_index: FearGreedIndex,
) -> None:
    settings = DetectorSettings()
    luna = (datetime(2022, 5, 9, tzinfo=UTC), datetime(2022, 5, 13, tzinfo=UTC))
    celsius = (datetime(2022, 6, 12, tzinfo=UTC), datetime(2022, 6, 14, tzinfo=UTC))
    events = [
        e
        for e in detect_market_events(btc_features, settings=settings)
        + detect_news_shocks(btc_features, headline_index, settings=settings)
        if luna[0] <= e.at < luna[1] or celsius[0] <= e.at < celsius[1]
    ]
    assert 10 <= len(events) <= 40
    episodes = events_to_episodes(
        events,
        trader_id="alice",
        features=btc_features,
        headlines=headline_index,
        fear_greed=fear_greed_index,
    )
    mem = EpisodicMemory(make_store(minilm), settings=SETTINGS)
    june = celsius[1]
    assert mem.add(episodes, as_of=june).added == len(episodes)
    assert mem.scan("alice", as_of=june) == sorted(episodes, key=lambda e: (e.occurred_at, e.id))
    hits = mem.recall("alice", "crypto lender halts customer withdrawals", as_of=june, top_k=3)
    assert any(
        h.episode.event_type == "news_shock" and "Celsius" in h.episode.description for h in hits
    )
    assert all(h.episode.occurred_at <= june for h in hits)
    crash = mem.recall(
        "alice", "bitcoin flash crash", as_of=june, top_k=3, event_types=["flash_crash"]
    )
    assert [h.episode.occurred_at for h in crash] == [datetime(2022, 5, 11, 13, tzinfo=UTC)]


def test_a_batch_written_later_logs_each_outcome_at_its_resolution(
    make_store: StoreFactory,
) -> None:
    mem = EpisodicMemory(make_store(), settings=SETTINGS)
    mem.add([ep("x", "Flash crash on LUNA news")], as_of=T0)
    t1, t2, written = (T0 + timedelta(hours=h) for h in (24, 30, 40))
    late = Outcome(horizon="trade", market_return=0.05, pnl=None, resolved_at=t2)
    early = Outcome(horizon="24h", market_return=-0.10, pnl=None, resolved_at=t1)
    with pytest.raises(LookAheadError):
        mem.record_outcomes("alice", [("ep-alice-x", late)], as_of=t1)
    mem.record_outcomes("alice", [("ep-alice-x", late), ("ep-alice-x", early)], as_of=written)
    (before,) = mem.get("alice", ["ep-alice-x"], as_of=t1 - timedelta(seconds=1))
    (at_t1,) = mem.get("alice", ["ep-alice-x"], as_of=t1)
    (at_t2,) = mem.get("alice", ["ep-alice-x"], as_of=t2)
    assert before.outcome is None and before.importance == 0.5
    assert at_t1.outcome == early and at_t1.importance == pytest.approx(0.7)
    assert at_t2.outcome == late and at_t2.importance == pytest.approx(0.8)


def test_decay_by_age_counts_whole_days_without_drift(make_store: StoreFactory) -> None:
    mem = EpisodicMemory(make_store(), settings=SETTINGS)
    mem.add([ep("a", "one", importance=0.8)], as_of=T0)
    mem.add(
        [ep("b", "two", at=T0 + timedelta(days=1), importance=0.4)], as_of=T0 + timedelta(days=1)
    )
    t1 = T0 + timedelta(days=2, hours=12)  # a: 2 whole days, b: 1 whole day
    assert mem.decay_by_age("alice", as_of=t1, half_life_days=2.0) == 2
    a, b = mem.scan("alice", as_of=t1)
    assert a.importance == pytest.approx(0.8 * 0.5)
    assert b.importance == pytest.approx(0.4 * 0.5**0.5)
    assert mem.decay_by_age("alice", as_of=t1 + timedelta(hours=11), half_life_days=2.0) == 0
    # a decayed through day 2, b through day 2: at day 4 both get 2 more whole days
    t2 = T0 + timedelta(days=4, hours=1)
    assert mem.decay_by_age("alice", as_of=t2, half_life_days=2.0) == 2
    a2, b2 = mem.scan("alice", as_of=t2)
    assert a2.importance == pytest.approx(0.8 * 0.25)  # 4 days in all: no drift
    assert b2.importance == pytest.approx(0.4 * 0.5**1.5)  # 3 days in all
    assert [e.importance for e in mem.scan("alice", as_of=t1)] == [a.importance, b.importance]
    with pytest.raises(StoreError):
        mem.decay_by_age("alice", as_of=t2, half_life_days=0.0)

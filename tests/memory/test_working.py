"""Working memory: bounded window, consolidation into a context episode, restart resume."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from backend.config import MemorySettings
from backend.errors import DataError, StoreError
from backend.memory._features import FeatureFrame
from backend.memory._news import FearGreedIndex, HeadlineIndex
from backend.memory.episodic import EpisodicMemory
from backend.memory.models import MarketSnapshot
from backend.memory.working import WorkingMemory, snapshot_at
from tests.conftest import StoreFactory

START = datetime(2022, 6, 12, 20, tzinfo=UTC)  # the Celsius withdrawal halt follows
SMALL = MemorySettings(working_window=6, consolidate_batch=3)


@pytest.fixture(scope="module")
def snapshots(
    btc_features: FeatureFrame, headline_index: HeadlineIndex, fear_greed_index: FearGreedIndex
) -> list[MarketSnapshot]:
    first = btc_features.locate(START)
    return [
        snapshot_at(
            "alice",
            "BTC/USDT",
            "1h",
            btc_features.row(first + i),
            headlines=headline_index,
            fear_greed=fear_greed_index,
        )
        for i in range(20)
    ]


def test_window_is_bounded_and_overflow_becomes_one_context_episode(
    make_store: StoreFactory, snapshots: list[MarketSnapshot]
) -> None:
    store = make_store()
    wm = WorkingMemory(store, settings=SMALL)
    episodes = []
    for i, snap in enumerate(snapshots[:12]):
        ep = wm.observe(snap)
        if ep is not None:
            episodes.append(ep)
        window = wm.current("alice", "BTC/USDT", as_of=snap.as_of)
        assert len(window) <= SMALL.working_window
        assert window[-1] == snap
        if i < SMALL.working_window:
            assert store.count("alice") == 0  # no chroma write per bar
    # 12 observed: consolidated at the 7th and the 10th bar, 3 snapshots each
    assert len(episodes) == 2
    first = episodes[0]
    assert first.event_type == "context" and first.occurred_at == snapshots[2].as_of
    assert first.sources == [
        f"snapshot:BTC/USDT:1h:{s.as_of:%Y-%m-%dT%H:%M}Z" for s in snapshots[:3]
    ]
    assert "2022-06-12 20:00Z to 2022-06-12 22:00Z (3 bars)" in first.description
    assert first.state["period_return"] == pytest.approx(
        snapshots[2].close / snapshots[0].close - 1
    )
    assert 0.0 <= first.importance <= 1.0
    window = wm.current("alice", "BTC/USDT", as_of=snapshots[11].as_of)
    assert window == snapshots[6:12]  # nothing dropped: 6 consolidated + 6 in the window
    stored = EpisodicMemory(store, settings=SMALL).scan("alice", as_of=snapshots[11].as_of)
    assert [e.id for e in stored] == [e.id for e in episodes]
    assert stored[1].occurred_at == snapshots[5].as_of


def test_current_filters_by_time_and_topic(
    make_store: StoreFactory, snapshots: list[MarketSnapshot]
) -> None:
    wm = WorkingMemory(make_store(), settings=MemorySettings())
    for snap in snapshots[:12]:
        wm.observe(snap)
    assert wm.current("alice", "BTC/USDT", as_of=snapshots[3].as_of) == snapshots[:4]
    assert wm.current("alice", "BTC/USDT", as_of=START - timedelta(days=1)) == []
    halted = wm.current("alice", "BTC/USDT", as_of=snapshots[11].as_of, topic="insolvency")
    assert halted and all("insolvency" in s.topics for s in halted)
    assert halted[0].as_of == datetime(2022, 6, 13, 5, tzinfo=UTC)  # 04:01 headline
    assert wm.current("alice", "BTC/USDT", as_of=snapshots[11].as_of, topic="extreme_greed") == []
    assert wm.current("bob", "BTC/USDT", as_of=snapshots[11].as_of) == []
    topics = dict(wm.topics("alice", "BTC/USDT", as_of=snapshots[11].as_of))
    assert topics["trend_down"] == 12 and topics["insolvency"] >= 1
    assert wm.keys() == [("alice", "BTC/USDT")]


def test_out_of_order_and_replay(make_store: StoreFactory, snapshots: list[MarketSnapshot]) -> None:
    wm = WorkingMemory(make_store(), settings=SMALL)
    for snap in snapshots[:8]:
        wm.observe(snap)
    before = wm.current("alice", "BTC/USDT", as_of=snapshots[7].as_of)
    for snap in snapshots[:8]:  # replay: consolidated or still in the window -> no-op
        assert wm.observe(snap) is None
    assert wm.current("alice", "BTC/USDT", as_of=snapshots[7].as_of) == before
    changed = snapshots[7].model_copy(update={"headlines": ["corrected"]})
    wm.observe(changed)  # the newest bar may be refreshed
    assert wm.current("alice", "BTC/USDT", as_of=snapshots[7].as_of)[-1] == changed
    hole = snapshots[6].model_copy(update={"as_of": snapshots[6].as_of + timedelta(minutes=30)})
    with pytest.raises(DataError):
        wm.observe(hole)


def test_restart_resumes_the_same_window(
    make_store: StoreFactory, snapshots: list[MarketSnapshot], tmp_path: Path
) -> None:
    store = make_store()
    path = tmp_path / "working.sqlite3"
    wm = WorkingMemory(store, settings=SMALL, state_path=path)
    for snap in snapshots[:8]:
        wm.observe(snap)
    window = wm.current("alice", "BTC/USDT", as_of=snapshots[7].as_of)
    wm.close()
    resumed = WorkingMemory(store, settings=SMALL, state_path=path)
    assert resumed.current("alice", "BTC/USDT", as_of=snapshots[7].as_of) == window
    assert resumed.topics("alice", "BTC/USDT", as_of=snapshots[7].as_of)
    for snap in snapshots[:8]:  # a restarted backtest replays from the start: no-op
        assert resumed.observe(snap) is None
    produced = [resumed.observe(s) for s in snapshots[8:20]]
    resumed.close()
    # the same run without a restart gives the same windows and episodes
    other = WorkingMemory(make_store(), settings=SMALL)
    straight = [other.observe(s) for s in snapshots[:20]][8:]
    assert [e.id if e else None for e in produced] == [e.id if e else None for e in straight]
    final = WorkingMemory(store, settings=SMALL, state_path=path)
    assert final.current("alice", "BTC/USDT", as_of=snapshots[19].as_of) == other.current(
        "alice", "BTC/USDT", as_of=snapshots[19].as_of
    )
    final.close()


def test_a_reader_follows_what_another_process_writes_to_the_state_file(
    make_store: StoreFactory, snapshots: list[MarketSnapshot], tmp_path: Path
) -> None:
    """``sentinel mcp`` beside ``sentinel paper``: two connections to one state file (as
    two processes have); the reader's windows, consolidation cursor and account follow
    the writer's commits at its next call."""
    store = make_store()
    path = tmp_path / "working.sqlite3"
    writer = WorkingMemory(store, settings=SMALL, state_path=path)
    reader = WorkingMemory(store, settings=SMALL, state_path=path)
    key = ("alice", "BTC/USDT", "1h")
    for snap in snapshots[:3]:
        writer.observe(snap)
    writer.observe_equity(*key[:2], timeframe=key[2], as_of=snapshots[2].as_of, equity=100.0)
    late = snapshots[19].as_of
    assert len(reader.current("alice", "BTC/USDT", as_of=late)) == 3
    for i, snap in enumerate(snapshots[3:8], start=3):  # overflows and consolidates once
        writer.observe(snap)
        writer.observe_equity(*key[:2], timeframe=key[2], as_of=snap.as_of, equity=100.0 - i)
    assert reader.current("alice", "BTC/USDT", as_of=late) == writer.current(
        "alice", "BTC/USDT", as_of=late
    )
    account = reader.account(*key[:2], timeframe=key[2], as_of=late)
    assert account is not None and account.equity == 93.0 and account.peak == 100.0
    assert reader.consolidate_overflow(as_of=late) == []  # nothing left for it to redo
    writer.close()
    reader.close()


def test_a_state_file_deleted_or_replaced_while_open_is_a_store_error(
    make_store: StoreFactory, snapshots: list[MarketSnapshot], tmp_path: Path
) -> None:
    """The run directory removed under a running process: its connection kept reading
    the deleted file and wrote snapshots and equity marks into it, lost without a word;
    a new file put in its place was not read either."""
    path = tmp_path / "working.sqlite3"
    wm = WorkingMemory(make_store(), settings=SMALL, state_path=path)
    wm.observe(snapshots[0])
    path.unlink()
    with pytest.raises(StoreError, match=r"working\.sqlite3: the file is gone or was replaced"):
        wm.observe(snapshots[1])
    with pytest.raises(StoreError, match="the file is gone or was replaced"):
        wm.current("alice", "BTC/USDT", as_of=snapshots[1].as_of)
    with pytest.raises(StoreError, match="the file is gone or was replaced"):
        wm.observe_equity("alice", "BTC/USDT", timeframe="1h", as_of=snapshots[1].as_of, equity=1.0)
    WorkingMemory(make_store(), settings=SMALL, state_path=path).close()  # another file there
    with pytest.raises(StoreError, match="the file is gone or was replaced"):
        wm.current("alice", "BTC/USDT", as_of=snapshots[1].as_of)
    wm.close()


def test_observe_bar(
    make_store: StoreFactory, btc_features: FeatureFrame, headline_index: HeadlineIndex
) -> None:
    wm = WorkingMemory(make_store(), settings=MemorySettings())
    i = btc_features.locate(START)
    snap = wm.observe_bar("alice", btc_features, i, headlines=headline_index)
    assert snap.as_of == START and snap.timeframe == "1h"
    later = START + timedelta(hours=1, minutes=20)
    snap2 = wm.observe_bar("alice", btc_features, later, headlines=headline_index)
    assert snap2.as_of == later and snap2.close == btc_features.row(i + 1)["close"]
    assert wm.current("alice", "BTC/USDT", as_of=later) == [snap, snap2]
    # snapshot_of builds the same snapshot without observing it (built ahead by the loop)
    ahead = wm.snapshot_of("alice", btc_features, i + 2, headlines=headline_index)
    assert wm.current("alice", "BTC/USDT", as_of=ahead.as_of) == [snap, snap2]
    assert wm.observe_bar("alice", btc_features, i + 2, headlines=headline_index) == ahead
    assert wm.snapshot_of("alice", btc_features, later, headlines=headline_index) == snap2
    with pytest.raises(DataError):
        WorkingMemory(make_store(), settings=MemorySettings(working_window=4, consolidate_batch=5))


def test_consolidate_overflow_after_a_restart_with_a_smaller_window(
    make_store: StoreFactory, snapshots: list[MarketSnapshot], tmp_path: Path
) -> None:
    store = make_store()
    state = tmp_path / "working.sqlite3"
    wm = WorkingMemory(store, settings=SMALL, state_path=state)
    for snap in snapshots[:6]:
        assert wm.observe(snap) is None
    wm.close()
    smaller = MemorySettings(working_window=3, consolidate_batch=2)
    wm = WorkingMemory(store, settings=smaller, state_path=state)
    last = snapshots[5].as_of
    assert len(wm.current("alice", "BTC/USDT", as_of=last)) == 6  # reloaded: overflowing
    # batches ending after as_of wait
    assert wm.consolidate_overflow(as_of=snapshots[0].as_of) == []
    made = wm.consolidate_overflow(as_of=last)
    assert [e.occurred_at for e in made] == [snapshots[1].as_of, snapshots[3].as_of]
    assert wm.current("alice", "BTC/USDT", as_of=last) == snapshots[4:6]
    assert wm.consolidate_overflow(as_of=last) == []  # idempotent
    stored = EpisodicMemory(store, settings=smaller).scan("alice", as_of=last)
    assert [e.id for e in stored] == [e.id for e in made]
    wm.close()
    reopened = WorkingMemory(store, settings=smaller, state_path=state)
    assert reopened.current("alice", "BTC/USDT", as_of=last) == snapshots[4:6]
    reopened.close()


def test_equity_marks_of_the_first_schema_are_dropped_at_open(
    make_store: StoreFactory, tmp_path: Path
) -> None:
    """The first version kept marks per (trader, symbol) in table ``equity``; they are
    derived state, so a state file that has them opens, drops them, and a loop found
    without marks begins a new high-water mark."""
    path = tmp_path / "working.sqlite3"
    with sqlite3.connect(path) as db:
        db.execute(
            "CREATE TABLE equity (trader_id TEXT NOT NULL, symbol TEXT NOT NULL, "
            "as_of_us INTEGER NOT NULL, equity REAL NOT NULL, "
            "PRIMARY KEY (trader_id, symbol, as_of_us)) WITHOUT ROWID"
        )
        db.execute("INSERT INTO equity VALUES ('alice', 'BTC/USDT', 1, 100.0)")
    db.close()
    wm = WorkingMemory(make_store(), settings=SMALL, state_path=path)
    assert wm.account("alice", "BTC/USDT", timeframe="1h", as_of=START) is None
    wm.observe_equity("alice", "BTC/USDT", timeframe="1h", as_of=START, equity=90.0)
    state = wm.account("alice", "BTC/USDT", timeframe="1h", as_of=START)
    assert state is not None and (state.peak, state.drawdown) == (90.0, 0.0)
    wm.close()
    with sqlite3.connect(path) as db:
        tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master")}
    db.close()
    assert "equity" not in tables and "account_equity" in tables


def test_the_account_high_water_mark_is_fenced_by_time_kept_replayed_and_reset(
    make_store: StoreFactory, tmp_path: Path
) -> None:
    """Equity marks: the high-water mark of the lookback, a read of the past sees only the
    marks known then, a restart keeps them, a replayed mark rewrites the history after
    it, a new decision loop's first bar begins a new account, one per symbol and
    timeframe."""
    store = make_store()
    settings = SMALL.model_copy(update={"equity_lookback_days": 2})
    path = tmp_path / "working.sqlite3"
    wm = WorkingMemory(store, settings=settings, state_path=path)
    hours = [START + timedelta(hours=12 * i) for i in range(8)]
    equities = [100.0, 110.0, 99.0, 104.5, 90.0, 95.0, 106.0, 97.0]
    assert wm.account("alice", "BTC/USDT", timeframe="12h", as_of=hours[0]) is None
    for at, equity in zip(hours, equities, strict=True):
        wm.observe_equity("alice", "BTC/USDT", timeframe="12h", as_of=at, equity=equity)
    now = wm.account("alice", "BTC/USDT", timeframe="12h", as_of=hours[-1])
    assert now is not None and now.equity == 97.0
    assert (now.peak, now.peak_at) == (106.0, hours[6])  # 110 is older than 2 days
    assert now.drawdown == pytest.approx(97.0 / 106.0 - 1)
    past = wm.account("alice", "BTC/USDT", timeframe="12h", as_of=hours[5] + timedelta(hours=1))
    assert past is not None and (past.equity, past.peak, past.peak_at) == (95.0, 110.0, hours[1])
    early = wm.account("alice", "BTC/USDT", timeframe="12h", as_of=hours[1])
    assert early is not None and (early.equity, early.drawdown) == (110.0, 0.0)
    assert wm.account("bob", "BTC/USDT", timeframe="12h", as_of=hours[-1]) is None
    # Kept: two lookbacks back from the newest mark, so every read within one lookback
    # of it sees the whole lookback it needs (here: 20 marks 6 h apart, lookback 2 days).
    steps = [START + timedelta(hours=6 * i) for i in range(20)]
    two_days = timedelta(days=2)
    walk = [100.0 + 7.0 * ((i * 5) % 11) - i for i in range(20)]
    for at, equity in zip(steps, walk, strict=True):
        wm.observe_equity("carol", "ETH/USDT", timeframe="12h", as_of=at, equity=equity)
    for i in range(11, 20):  # steps[11] is 2 days before the newest
        back = [e for t, e in zip(steps, walk, strict=True) if t <= steps[i] <= t + two_days]
        state = wm.account("carol", "ETH/USDT", timeframe="12h", as_of=steps[i])
        assert state is not None and (state.equity, state.peak) == (walk[i], max(back)), i
    assert (
        wm.account("carol", "ETH/USDT", timeframe="12h", as_of=steps[2]) is None
    )  # older than two lookbacks
    wm.close()
    wm = WorkingMemory(store, settings=settings, state_path=path)  # a restart
    assert wm.account("alice", "BTC/USDT", timeframe="12h", as_of=hours[-1]) == now
    wm.observe_equity(
        "alice", "BTC/USDT", timeframe="12h", as_of=hours[4], equity=120.0
    )  # a replay
    replayed = wm.account("alice", "BTC/USDT", timeframe="12h", as_of=hours[-1])
    assert replayed is not None and (replayed.equity, replayed.drawdown) == (120.0, 0.0)
    wm.observe_equity(
        "alice", "BTC/USDT", timeframe="12h", as_of=hours[-1], equity=50.0, first=True
    )
    fresh = wm.account("alice", "BTC/USDT", timeframe="12h", as_of=hours[-1])
    assert fresh is not None and (fresh.peak, fresh.drawdown) == (50.0, 0.0)
    # another loop on the same pair (4h) is another account: its first bar resets only it
    wm.observe_equity("alice", "BTC/USDT", timeframe="4h", as_of=hours[-1], equity=7.0, first=True)
    other = wm.account("alice", "BTC/USDT", timeframe="4h", as_of=hours[-1])
    assert other is not None and other.equity == 7.0 and other.timeframe == "4h"
    assert wm.account("alice", "BTC/USDT", timeframe="12h", as_of=hours[-1]) == fresh
    with pytest.raises(DataError, match="equity must be positive"):
        wm.observe_equity("alice", "BTC/USDT", timeframe="12h", as_of=hours[-1], equity=0.0)
    wm.close()
    again = WorkingMemory(store, settings=settings, state_path=path)
    assert (
        again.account("alice", "BTC/USDT", timeframe="12h", as_of=hours[-1]) == fresh
    )  # reset persisted
    again.close()

"""The scheduled jobs on real data and a real chromadb store: persona refresh from a growing
fills export (incremental, idempotent, across a restart), consolidation (decay, pruning
that spares an open position's episode), outcome resolution (once)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from backend.agents.memory import PersonaManager
from backend.backtest.models import BrokerState
from backend.data import load_hyperliquid_fills, load_ohlcv
from backend.errors import ConfigError
from backend.memory import compute_features, detect_market_events, events_to_episodes
from backend.service.jobs import (
    consolidation,
    outcomes,
    paper_step,
    parse_as_of,
    persona_refresh,
)
from backend.service.models import PaperState
from backend.service.runtime import close_runtimes, runtime_for
from tests.service.conftest import ConfigFactory

TRADER = "0x083384f897ee0f19899168e3b1bec365f52a9012"  # 1,400 fills, ETH/SOL shorts
NOW = "2026-01-01T00:00:00Z"


def write_fills(source: Path, target: Path, *, trader: str, rows: slice) -> int:
    """The export's header and a slice of ``trader``'s rows (file order), like a
    periodically refreshed export; returns how many rows were written."""
    lines = source.read_text(encoding="utf-8").splitlines()
    mine = [line for line in lines[1:] if line.startswith(trader + ",")][rows]
    target.write_text("\n".join([lines[0], *mine]) + "\n", encoding="utf-8")
    return len(mine)


def test_persona_refresh_is_incremental_and_idempotent_across_a_restart(
    make_config: ConfigFactory, shared_data: Path, tmp_path: Path
) -> None:
    export = shared_data / "trades" / "hyperliquid_fills.csv"
    fills_file = tmp_path / "export.csv"
    half = write_fills(export, fills_file, trader=TRADER, rows=slice(0, 700))
    job = {"trader_id": TRADER, "fills_path": str(fills_file), "trigger": {"interval_s": 60}}
    config = str(make_config("persona", scheduler={"persona_refresh": [job]}))

    first = persona_refresh(config, TRADER, NOW)["result"]
    assert first["fills_new"] == half and first["version_before"] == 0
    assert first["version_after"] >= 1
    again = persona_refresh(config, TRADER, NOW)["result"]
    assert again["version_after"] == again["version_before"] == first["version_after"]
    assert again["fills_new"] == 0

    cursor = max(f.timestamp for f in load_hyperliquid_fills(fills_file))
    assert first["cursor_ms"] == cursor
    total = write_fills(export, fills_file, trader=TRADER, rows=slice(None))
    newer = sum(f.timestamp > cursor for f in load_hyperliquid_fills(fills_file))
    assert 0 < newer < total - half  # the export's rows are not in time order
    close_runtimes()  # a restarted service: cursor and ledger come from disk
    later = persona_refresh(config, TRADER, "2026-01-02T00:00:00Z")["result"]
    assert later["fills_read"] == total and later["fills_new"] == newer
    assert later["version_after"] > later["version_before"] == first["version_after"]
    close_runtimes()
    repeat = persona_refresh(config, TRADER, "2026-01-03T00:00:00Z")["result"]
    assert repeat["version_after"] == later["version_after"] and repeat["fills_new"] == 0

    # late rows (older than the cursor) were ingested too: the profile equals a rebuild
    rt = runtime_for(config)
    built = PersonaManager(rt.system().store)
    other = "rebuild-" + TRADER[-6:]
    everything = [
        f.model_copy(update={"trader_id": other})
        for f in load_hyperliquid_fills(fills_file)
        if f.trader_id == TRADER
    ]
    at = parse_as_of("2026-01-03T00:00:00Z")
    rebuilt = built.build_from_fills(other, everything, as_of=at)
    stored = rt.system().persona.get_profile(TRADER, at)
    assert stored is not None
    for name, attr in rebuilt.attributes.items():
        assert stored.attributes[name].value == attr.value, name
    runs = rt.db().runs(f"persona-refresh:{TRADER}")
    assert [ok for _, _, ok, _ in runs] == [True] * 4
    assert json.loads(runs[-1][3])["result"]["fills_new"] == 0
    with pytest.raises(ConfigError, match="no trader"):
        persona_refresh(config, "someone-else", NOW)


def test_consolidation_decays_and_prunes_but_spares_an_open_position(
    make_config: ConfigFactory, shared_data: Path
) -> None:
    rules = {"decay_half_life_days": 180, "prune_below": 0.05, "prune_after_days": 30}
    config = str(make_config("consolidate", scheduler={"persona_refresh": [], **rules}))
    rt = runtime_for(config)
    system = rt.system()
    ohlcv = load_ohlcv(shared_data / "market" / "binance", "BTC/USDT", "1h")
    features = compute_features(ohlcv)
    events = [
        e
        for e in detect_market_events(features, settings=rt.settings.memory.detectors)
        if datetime(2022, 1, 1, tzinfo=UTC) <= e.at < datetime(2022, 7, 1, tzinfo=UTC)
    ][:6]
    episodes = events_to_episodes(events, trader_id="agent", features=features)
    faded = [e.model_copy(update={"importance": 0.01}) for e in episodes[:3]]
    kept = episodes[3:]
    system.episodic.add([*faded, *kept], as_of=datetime(2022, 7, 1, tzinfo=UTC))
    open_position = faded[0].id  # a memory the open position's decision was taken with
    decision = system.toolkit.record_decision(
        "agent", symbol="BTC/USDT", action="buy", size=0.3, rationale="trend up",
        memory_ids=[open_position], as_of=datetime(2022, 7, 1, tzinfo=UTC),
    )  # fmt: skip
    state = PaperState(
        run_id="binance:BTC/USDT:1h:agent",
        exchange="binance",
        pair="BTC/USDT",
        timeframe="1h",
        trader_id="agent",
        clock="live",
        broker=BrokerState(cash=0.0, quantity=0.3, entry_decision=decision),
    )
    rt.db().save_step(state, records=[], fills=[], trades=[], marks=[])

    as_of = "2022-09-01T00:00:00Z"
    (result,) = consolidation(config, as_of)["result"]
    assert result["trader_id"] == "agent" and result["consolidated"] == 0
    assert result["decayed"] == 7
    assert result["pruned"] == sorted(e.id for e in faded[1:])
    assert result["protected"] == 1
    moment = parse_as_of(as_of)
    left = {e.id: e for e in system.episodic.scan("agent", as_of=moment)}
    assert set(left) == {open_position, decision, *(e.id for e in kept)}
    for episode in kept:  # 0.5 ** (whole days since it occurred / 180)
        days = (moment - episode.occurred_at) // timedelta(days=1)
        expected = episode.importance * 0.5 ** (days / 180)
        assert left[episode.id].importance == pytest.approx(expected, abs=1e-9)
    earlier = system.episodic.scan("agent", as_of=datetime(2022, 8, 31, tzinfo=UTC))
    assert {e.id: e.importance for e in earlier} == {
        decision: 0.3,
        **{e.id: e.importance for e in [faded[0], *kept]},
    }  # reads before the decay see the importance of then

    close_runtimes()  # the same run again after a restart: nothing more to do
    (repeat,) = consolidation(config, as_of)["result"]
    assert repeat["decayed"] == 0 and repeat["pruned"] == [] and repeat["protected"] == 1
    later = parse_as_of("2022-09-01T20:00:00Z")  # runs at any cadence: no drift
    consolidation(config, later.isoformat())
    now = {e.id: e for e in runtime_for(config).system().episodic.scan("agent", as_of=later)}
    for episode in kept:
        days = (later - episode.occurred_at) // timedelta(days=1)
        expected = episode.importance * 0.5 ** (days / 180)
        assert now[episode.id].importance == pytest.approx(expected, abs=1e-9)


def test_a_replay_run_behind_the_job_pauses_pruning(
    make_config: ConfigFactory, shared_data: Path
) -> None:
    """A replay paper run at an earlier clock reads the store as of then: a delete at the
    job's later time would hide its episodes at every time (its decisions then depend on
    when the job ran), so the episodes of its past are kept until its clock has passed
    the job's; later ones, which it cannot see, are pruned."""
    rules = {"decay_half_life_days": 180, "prune_below": 0.05, "prune_after_days": 30}
    config = str(make_config("replay-prune", scheduler={"persona_refresh": [], **rules}))
    rt = runtime_for(config)
    features = compute_features(load_ohlcv(shared_data / "market" / "binance", "BTC/USDT", "1h"))
    events = [
        e
        for e in detect_market_events(features, settings=rt.settings.memory.detectors)
        if datetime(2022, 1, 1, tzinfo=UTC) <= e.at < datetime(2022, 7, 1, tzinfo=UTC)
    ][:4]
    faded = [e.model_copy(update={"importance": 0.01})
             for e in events_to_episodes(events, trader_id="agent", features=features)]  # fmt: skip
    rt.system().episodic.add(faded, as_of=datetime(2022, 7, 1, tzinfo=UTC))
    behind = max(e.occurred_at for e in faded[:2]) + timedelta(minutes=1)  # reads 2 of 4
    state = PaperState(run_id="binance:BTC/USDT:1h:agent", exchange="binance", pair="BTC/USDT",
                       timeframe="1h", trader_id="agent", clock="replay",
                       broker=BrokerState(cash=10_000.0), last_now=behind)  # fmt: skip
    rt.db().save_step(state, records=[], fills=[], trades=[], marks=[])
    seen = sorted(e.id for e in faded if e.occurred_at <= behind)
    assert len(seen) == 2
    (paused,) = consolidation(config, "2022-09-01T00:00:00Z")["result"]
    assert paused["pruned"] == sorted(e.id for e in faded if e.id not in seen)
    assert paused["protected"] == 2 and paused["decayed"] == len(faded)
    assert datetime.fromisoformat(paused["replay_clock"]) == behind
    left = rt.system().episodic.scan("agent", as_of=behind)
    assert sorted(e.id for e in left) == seen  # what the replay reads is there
    ahead = state.model_copy(update={"last_now": datetime(2022, 9, 2, tzinfo=UTC)})
    rt.db().save_step(ahead, records=[], fills=[], trades=[], marks=[])
    (done,) = consolidation(config, "2022-09-01T00:00:00Z")["result"]
    assert done["pruned"] == seen and done["replay_clock"] is None


def test_outcomes_of_past_decisions_are_resolved_once(make_config: ConfigFactory) -> None:
    config = str(make_config("outcomes", scheduler={"persona_refresh": []}))
    rt = runtime_for(config)
    toolkit = rt.system().toolkit
    decided = datetime(2022, 5, 10, 10, tzinfo=UTC)
    done = toolkit.record_decision(
        "agent", symbol="BTC/USDT", action="sell", size=0.3, rationale="trend down",
        memory_ids=[], as_of=decided,
    )  # fmt: skip
    owned = toolkit.record_decision(
        "agent", symbol="BTC/USDT", action="buy", size=0.2, rationale="bounce",
        memory_ids=[], as_of=decided + timedelta(hours=1),
    )  # fmt: skip
    recent = toolkit.record_decision(
        "agent", symbol="BTC/USDT", action="buy", size=0.1, rationale="breakout",
        memory_ids=[], as_of=datetime(2022, 5, 11, 20, tzinfo=UTC),
    )  # fmt: skip
    state = PaperState(
        run_id="binance:ETH/USDT:1h:agent",
        exchange="binance",
        pair="ETH/USDT",
        timeframe="1h",
        trader_id="agent",
        clock="live",
        broker=BrokerState(cash=10_000.0),
        pending=(0.2, owned),  # a paper run's pending order: that run resolves it
    )
    rt.db().save_step(state, records=[], fills=[], trades=[], marks=[])

    as_of = "2022-05-12T00:00:00Z"
    (result,) = outcomes(config, as_of)["result"]
    assert result["resolved"] == [done]
    assert result["pending"] == 2 and result["already"] == 0
    (episode,) = rt.system().episodic.get("agent", [done], as_of=parse_as_of(as_of))
    assert episode.outcome is not None and episode.outcome.horizon == "1d"
    closes = load_ohlcv(rt.settings.data.market_dir, "BTC/USDT", "1h").frame["close"]
    start = closes[decided - timedelta(hours=1)]  # the bar closing at the decision
    end = closes[decided + timedelta(hours=23)]  # the bar closing 24 bars later
    assert episode.outcome.market_return == pytest.approx(end / start - 1)
    assert episode.importance > 0.3  # reflection raised it
    assert episode.outcome.resolved_at == parse_as_of(as_of)

    close_runtimes()
    (repeat,) = outcomes(config, as_of)["result"]
    assert repeat["resolved"] == [] and repeat["already"] == 1 and repeat["pending"] == 2
    later = outcomes(config, "2022-05-13T00:00:00Z")["result"][0]
    assert later["resolved"] == [recent]  # its horizon has passed now


def test_a_decision_loops_outcome_is_resolved_over_its_own_horizon(
    make_config: ConfigFactory,
) -> None:
    """A reviewer's finding: a 4h loop's decision left without an outcome at the end of
    its run was resolved by the job after 24 1h bars ("1d"), while the loop reads
    outcomes at its own horizon (24 bars of 4h: "4d"), so it never used them."""
    from backend.tools.memory_toolkit import decision_episode

    config = str(make_config("horizon", scheduler={"persona_refresh": []}))
    rt = runtime_for(config)
    decided = datetime(2022, 5, 10, 12, tzinfo=UTC)
    four_days = 4 * 86_400
    episode = decision_episode(
        "agent", symbol="BTC/USDT", action="buy", size=0.5, rationale="trend up",
        memory_ids=[], as_of=decided, outcome_horizon_s=four_days,
    )  # fmt: skip
    rt.system().episodic.add([episode], as_of=decided)
    early = outcomes(config, "2022-05-12T00:00:00Z")["result"][0]
    assert early["resolved"] == [] and early["pending"] == 1  # one day is not its horizon
    done = outcomes(config, "2022-05-15T00:00:00Z")["result"][0]
    assert done["resolved"] == [episode.id]
    (got,) = rt.system().episodic.get("agent", [episode.id], as_of=parse_as_of("2022-05-15"))
    assert got.outcome is not None and got.outcome.horizon == "4d"
    closes = load_ohlcv(rt.settings.data.market_dir, "BTC/USDT", "1h").frame["close"]
    start, end = closes[decided - timedelta(hours=1)], closes[decided + timedelta(hours=95)]
    assert got.outcome.market_return == pytest.approx(end / start - 1)


def test_a_paper_step_past_until_decides_nothing(
    make_config: ConfigFactory, binance_loopback: str
) -> None:
    """The scheduler may fire once more after the last step of ``--until`` (seen: a 61st
    bar of a 60-bar replay on a loaded machine); that run steps nothing."""
    config = str(make_config("until"))
    args = (config, "binance", "BTC/USDT", "1h", "2022-05-10T00:00:00Z", binance_loopback)
    until = "2022-05-10T01:00:00Z"
    first = paper_step(*args, until=until)
    second = paper_step(*args, until=until)
    assert first["as_of"] == "2022-05-10T00:00:00+00:00" and second["result"] is not None
    state = runtime_for(config).db().paper_state(second["result"]["run_id"])
    assert state is not None and state.bars == 2
    third = paper_step(*args, until=until)
    assert third == {
        "job_id": "paper:binance:BTC/USDT:1h",
        "as_of": "2022-05-10T02:00:00+00:00",
        "result": None,
    }
    after = runtime_for(config).db().paper_state(second["result"]["run_id"])
    assert after == state


def test_an_outcome_a_paper_run_has_worked_out_but_not_written_is_protected() -> None:
    """Pruning and the outcomes job leave alone every episode a paper run still needs,
    including one whose outcome it queued for its next write (it had been pruned, and the
    paper run's outcome then failed; or resolved twice, once by each)."""
    from backend.agents._manager_state import ManagerState
    from backend.agents._writer_state import WriterState
    from backend.memory.models import Outcome
    from backend.service.consolidation import protected_ids

    at = datetime(2022, 5, 2, tzinfo=UTC)
    outcome = Outcome(horizon="24h", market_return=-0.01, resolved_at=at)
    writer = WriterState(queued=[("ep-queued", outcome)])
    state = PaperState(
        run_id="r", exchange="binance", pair="BTC/USDT", timeframe="1h", trader_id=TRADER,
        clock="replay", broker=BrokerState(cash=10_000.0),
        manager=ManagerState(writer=writer),
    )  # fmt: skip
    assert protected_ids([state], TRADER) == {"ep-queued"}
    assert protected_ids([state], "someone else") == set()
    # a decision still in the writer's buffer, and the memories it was taken with (a
    # reviewer's: pruning read the memory ids of stored episodes only)
    from backend.memory.models import Episode

    entry = Episode(
        id="dec-entry", trader_id=TRADER, symbol="BTC/USDT", event_type="decision",
        occurred_at=at, description="buy 0.5", importance=0.3, memory_ids=["ep-recalled"],
    )  # fmt: skip
    buffered = state.model_copy(
        update={"manager": ManagerState(writer=WriterState(buffer=[entry]))}
    )
    assert protected_ids([buffered], TRADER) == {"dec-entry", "ep-recalled"}


def test_an_export_with_no_fills_yet_is_a_refresh_with_nothing_new(
    make_config: ConfigFactory, shared_data: Path, tmp_path: Path
) -> None:
    """A header-only export (the trader has not traded yet) is not an error of every
    run; the data loader itself still refuses one by default."""
    from backend.errors import DataError

    fills_file = tmp_path / "export.csv"
    export = shared_data / "trades" / "hyperliquid_fills.csv"
    assert write_fills(export, fills_file, trader=TRADER, rows=slice(0, 0)) == 0
    job = {"trader_id": TRADER, "fills_path": str(fills_file), "trigger": {"interval_s": 60}}
    config = str(make_config("persona", scheduler={"persona_refresh": [job]}))
    result = persona_refresh(config, TRADER, NOW)["result"]
    assert result["fills_new"] == 0 and result["version_after"] == result["version_before"] == 0
    with pytest.raises(DataError, match="header but no data rows"):
        load_hyperliquid_fills(fills_file)
    assert result["warning"] is None  # no fill at all: nothing to say of the id


def test_a_trader_the_export_does_not_hold_is_said(
    make_config: ConfigFactory, shared_data: Path
) -> None:
    """A reviewer's: a trader id not in the fills file (a typo, or an address's case
    changed) refreshed nothing at every run, as a success with ``fills_read: 0``."""
    export = shared_data / "trades" / "hyperliquid_fills.csv"
    shouted = TRADER.upper().replace("0X", "0x")
    job = {"trader_id": shouted, "fills_path": str(export), "trigger": {"interval_s": 60}}
    config = str(make_config("persona", scheduler={"persona_refresh": [job]}))
    result = persona_refresh(config, shouted, NOW)["result"]
    assert result["fills_read"] == 0
    assert result["warning"].startswith(
        f"no fill of trader {shouted} in file:{export} (ids are case-sensitive; it holds "
    )


def test_a_paper_job_whose_trader_cannot_be_built_is_a_failed_run_in_job_run(
    make_config: ConfigFactory, binance_loopback: str
) -> None:
    """A reviewer's finding: with the chroma server down, the paper job's failure (its
    trader's memory could not be built) reached only the log; the other jobs' failures
    are rows of ``job_run`` with ``ok`` false, as the README says of every job."""
    from backend.errors import StoreError

    down = {"backend": "chroma", "mode": "server", "host": "127.0.0.1", "port": 9}
    config = str(make_config("paper-down", store=down))
    with pytest.raises(StoreError, match=r"chroma server 127\.0\.0\.1:9"):
        paper_step(config, "binance", "BTC/USDT", "1h", replay_from="2022-05-10T00:00:00Z",
                   api_url=binance_loopback)  # fmt: skip
    ((_, _, ok, summary),) = runtime_for(config).db().runs("paper:binance:BTC/USDT:1h")
    assert ok is False and "StoreError" in json.loads(summary)["error"]

"""The paper-trading loop against a loopback Binance (real BTC/USDT 1h candles of May 2022,
the LUNA crash): same decisions as the backtest engine over the same candles, the
backtest's fill rules, a restart from disk that changes nothing, failures that write
nothing."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
import pytest

from backend.backtest.engine import run_backtest
from backend.backtest.metrics import LLMUsage
from backend.compose import build_memory_system, make_manager
from backend.config import load_settings
from backend.data import OHLCVFrame
from backend.errors import ConfigError, ExchangeError, LookAheadError
from backend.memory import compute_features
from backend.service.models import PaperState
from backend.service.paper import PaperTrader, replay_now
from backend.service.runtime import Runtime, close_runtimes, runtime_for
from tests.data.binance_server import start_binance_server
from tests.llm.chat_server import start_chat_server
from tests.service.conftest import ConfigFactory

PAIR = "BTC/USDT"
START = datetime(2022, 5, 10, tzinfo=UTC)
HOUR = timedelta(hours=1)


def replay(trader: PaperTrader, steps: int) -> None:
    for _ in range(steps):
        trader.step(replay_now(trader.state(), start=START, timeframe="1h"), replay_from=START)


def paper(rt: Runtime, url: str) -> PaperTrader:
    return rt.paper("binance", PAIR, "1h", clock="replay", api_url=url)


def comparable(state: PaperState | None) -> dict[str, object]:
    """The state without the cached context's timings (wall-clock measurements)."""
    assert state is not None
    return state.model_dump(mode="json", exclude={"manager": {"context"}})


def decisions(rt: Runtime, run_id: str) -> list[dict[str, object]]:
    return [r.model_dump(mode="json", exclude={"retrieval_ms"}) for r in rt.db().decisions(run_id)]


def test_paper_decides_like_the_backtest_over_the_same_candles(
    make_config: ConfigFactory, binance_loopback: str
) -> None:
    steps = 48
    rt = runtime_for(str(make_config("paper")))
    trader = paper(rt, binance_loopback)
    replay(trader, steps)
    run = trader.run_id
    db = rt.db()
    records = db.decisions(run)
    candles = db.candles(run)
    assert len(records) == steps
    assert len(candles) == rt.settings.paper.warmup_bars + steps - 1
    assert records[0].as_of == START and records[-1].as_of == START + (steps - 1) * HOUR
    assert {r.decision.action for r in records} > {"hold"}  # it traded through the crash

    # the backtest engine over exactly the stored candles, its own memory store
    settings = load_settings(make_config("backtest"))  # same settings, its own store
    ohlcv = OHLCVFrame(PAIR, "1h", candles, gaps=(), repairs=(), source=Path("paper-candles"))
    features = compute_features(
        ohlcv, breakout_lookback_bars=settings.memory.detectors.breakout_lookback_bars
    )
    with build_memory_system(settings) as system:
        manager = make_manager(
            settings,
            features=features,
            news=trader.news.current(),
            system=system,
            policy=trader.policy,
        )
        result = run_backtest(
            ohlcv, manager, settings=settings.backtest, trader_id="agent", start=START - HOUR
        )
    expected = [r.model_dump(mode="json", exclude={"retrieval_ms"}) for r in result.decisions]
    assert decisions(rt, run) == expected
    assert db.trades(run) == list(result.trades)
    marked = db.equity(run)
    assert marked["equity"].tolist() == result.equity.tolist()
    assert marked["exposure"].tolist() == result.exposure.tolist()
    assert list(marked.index) == list(result.equity.index)


def test_fills_follow_the_backtest_rules(make_config: ConfigFactory, binance_loopback: str) -> None:
    rt = runtime_for(str(make_config("fills")))
    trader = paper(rt, binance_loopback)
    replay(trader, 30)
    db = rt.db()
    cost = rt.settings.backtest
    candles = db.candles(trader.run_id)
    by_close = {r.as_of: r for r in db.decisions(trader.run_id)}
    fills = db.fills(trader.run_id)
    assert fills, "the rule policy trades in the first 30 bars of May 10th"
    for fill in fills:
        # decided at the close of bar t (= the open of t+1), filled at the open of t+1
        assert by_close[fill.time].decision.action in ("buy", "sell", "close")
        assert fill.reference_price == candles.loc[pd.Timestamp(fill.time), "open"]
        side = 1.0 if fill.quantity > 0 else -1.0
        assert fill.price == pytest.approx(fill.reference_price * (1 + side * cost.slippage))
        assert fill.fee == pytest.approx(cost.fee_rate * abs(fill.quantity) * fill.price)
    state = trader.state()
    assert state is not None
    assert state.broker.fees_paid == pytest.approx(sum(f.fee for f in fills))
    cash = cost.initial_equity - sum(f.quantity * f.price + f.fee for f in fills)
    assert state.broker.cash == pytest.approx(cash)
    assert state.broker.quantity == pytest.approx(sum(f.quantity for f in fills))


@pytest.mark.slow
def test_a_restart_from_disk_changes_nothing(
    make_config: ConfigFactory, binance_loopback: str
) -> None:
    steps = 36
    once = runtime_for(str(make_config("once")))
    straight = paper(once, binance_loopback)
    replay(straight, steps)
    run = straight.run_id
    db = once.db()
    expected = (
        decisions(once, run),
        db.fills(run),
        db.trades(run),
        db.equity(run),
        comparable(straight.state()),
    )

    config = str(make_config("twice"))
    first = paper(runtime_for(config), binance_loopback)
    replay(first, 17)
    close_runtimes()  # everything rebuilt from disk: store, working memory, state
    rt = runtime_for(config)
    second = paper(rt, binance_loopback)
    state = second.state()
    assert state is not None and state.bars == 17 and state.manager is not None
    assert state.manager.writer is not None
    replay(second, steps - 17)

    db = rt.db()
    got = (decisions(rt, run), db.fills(run), db.trades(run), db.equity(run))
    assert got[:3] == expected[:3]
    assert got[3].equals(expected[3])
    assert comparable(second.state()) == expected[4]


def test_a_run_keeps_its_clock_and_rejects_calendar_timeframes(
    make_config: ConfigFactory, binance_loopback: str
) -> None:
    rt = runtime_for(str(make_config("clock")))
    replay(paper(rt, binance_loopback), 1)
    live = rt.paper("binance", PAIR, "1h", clock="live", api_url=binance_loopback)
    with pytest.raises(ConfigError, match="replay clock"):
        live.step(START + HOUR)
    with pytest.raises(ConfigError, match="fixed-length"):
        rt.paper("binance", PAIR, "1M", clock="live", api_url=binance_loopback)


def test_a_replay_resumes_only_from_its_own_start(
    make_config: ConfigFactory, binance_loopback: str
) -> None:
    """A resume asking for another replay start went on from the saved clock without a word."""
    rt = runtime_for(str(make_config("restart")))
    trader = paper(rt, binance_loopback)
    replay(trader, 2)
    state = trader.state()
    assert state is not None and state.replay_from == START
    with pytest.raises(ConfigError) as refused:
        replay_now(state, start=START + timedelta(days=3), timeframe="1h")
    assert str(refused.value) == (
        f"paper run {trader.run_id} replays from 2022-05-10T00:00:00+00:00, not "
        "2022-05-13T00:00:00+00:00: resume it with that --replay-from, or use another store"
    )
    assert replay_now(state, start=START, timeframe="1h") == START + 2 * HOUR
    # a state saved before the start was kept resumes as it did
    assert replay_now(state.model_copy(update={"replay_from": None}), start=START + HOUR,
                      timeframe="1h") == START + 2 * HOUR  # fmt: skip


def test_an_exchange_failure_writes_no_step(make_config: ConfigFactory, shared_data: Path) -> None:
    server, url = start_binance_server(shared_data / "market" / "binance" / "BTC_USDT-1h.csv.gz")
    try:
        rt = runtime_for(str(make_config("fault")))
        trader = paper(rt, url)
        replay(trader, 2)
        before = trader.state()
        server.fault_status = 500  # type: ignore[attr-defined]
        with pytest.raises(ExchangeError, match="binance BTC/USDT 1h"):
            trader.step(replay_now(before, start=START, timeframe="1h"))
        assert trader.state() == before
        assert len(rt.db().decisions(trader.run_id)) == 2
        server.fault_status = None  # type: ignore[attr-defined]
        replay(trader, 1)
        after = trader.state()
        assert after is not None and after.bars == 3
    finally:
        server.shutdown()
        server.server_close()


def test_an_llm_that_never_answers_is_counted_in_the_paper_state(
    make_config: ConfigFactory, binance_loopback: str
) -> None:
    """The paper state keeps how many decisions the LLM was asked for and answered, and
    the first error (what ``sentinel paper`` warns with), across steps; each step's
    result says it too."""
    dead = start_chat_server()
    dead.reject_formats = {"json_schema", "json_object", None}  # HTTP 500 to everything
    try:
        llm = {"base_url": dead.base_url, "model": "m", "max_retries": 0}
        rt = runtime_for(str(make_config("llm", agent={"policy": "llm"}, llm=llm)))
        trader = paper(rt, binance_loopback)
        steps = [trader.step(replay_now(trader.state(), start=START, timeframe="1h"))
                 for _ in range(3)]  # fmt: skip
        # every step says it (the scheduler's job runs keep each step's result), not only
        # the saved state and one log line per process
        assert [(s.llm_asked, s.llm_answered) for s in steps] == [(1, 0)] * 3
        assert [s.warning for s in steps] == [
            f"the LLM answered 0 of {n} decisions (0%, below 95%); first error: HTTP 500 "
            "from m: response_format None not supported"
            for n in (1, 2, 3)
        ]
        # ... and which of it is a dependency's failure: `scheduler run-once` exits 3 on it
        assert [s.failure for s in steps] == [s.warning for s in steps]
        state = trader.state()
        assert state is not None and state.bars == 3
        assert (state.llm_decisions, state.llm_answered) == (3, 0)
        assert state.llm_first_error == "HTTP 500 from m: response_format None not supported"
        usage = LLMUsage(state.llm_decisions, state.llm_answered, state.llm_first_error)
        assert usage.warning(min_share=rt.settings.llm.min_answered_share) is not None
    finally:
        dead.shutdown()
        dead.server_close()


def test_a_feed_without_new_candles_and_a_failing_memory_are_said_in_every_step(
    make_config: ConfigFactory, binance_loopback: str
) -> None:
    """Reviewers' findings: under the scheduler, steps that got no new closed candle
    (an exchange answering with nothing) logged ``ok`` with no warning (only ``sentinel
    paper``'s own summary said it), and a memory failing at a decision was said nowhere
    but in the decision's record and a log line. Outcomes after one bar, written at every
    bar; the decision episodes deleted behind the loop's back (another process's clean-up)
    so their outcomes cannot be written."""
    rt = runtime_for(str(make_config("quiet", agent={"outcome_horizon_bars": 1})))
    trader = paper(rt, binance_loopback)
    replay(trader, 1)
    state = trader.state()
    assert state is not None and state.last_now is not None
    first, second = trader.step(state.last_now), trader.step(state.last_now)  # nothing new
    assert first.warning is None and second.failure is None  # no candle: said, no failure
    assert second.warning == (
        "the last 2 steps got no new closed candle of BTC/USDT 1h from binance (last bar "
        f"decided: {START.isoformat()})"
    )
    replay(trader, 1)  # writes the first decision's episode; its outcome is queued
    recorded = [r.episode_id for r in rt.db().decisions(trader.run_id) if r.episode_id]
    assert recorded
    rt.system().store.delete("agent", recorded, as_of=START + HOUR)
    failing = trader.step(replay_now(trader.state(), start=START, timeframe="1h"))
    after = trader.state()
    assert after is not None and after.bars == 3 and after.memory_error_decisions == 1
    assert after.memory_first_error is not None and "no episode" in after.memory_first_error
    assert failing.warning is not None
    assert failing.warning.startswith("the memory failed at 1 of 3 decisions (1 of 6 writes); ")


def test_holds_while_the_features_warm_up_are_said(
    make_config: ConfigFactory, binance_loopback: str
) -> None:
    """A reviewer's finding: a run whose ``paper.warmup_bars`` is less than the features'
    30 days (the default 800 bars of 1m is 13 h) held at every bar, for days, and its
    summary said nothing. 100 bars of 1h: every decision is such a hold, and said."""
    rt = runtime_for(str(make_config("warm", paper={"warmup_bars": 100})))
    trader = paper(rt, binance_loopback)
    replay(trader, 2)
    state = trader.state()
    assert state is not None and (state.bars, state.warmup_decisions) == (2, 2)
    said = trader.step(replay_now(state, start=START, timeframe="1h")).warning
    assert said is not None and said.startswith(
        "3 of 3 decisions were holds while the features warmed up"
    ), said
    assert len(rt.db().candles(trader.run_id)) == 100 + 2  # whole candles, none short


def test_a_persona_written_after_the_first_close_and_before_now_is_not_written_over(
    make_config: ConfigFactory, binance_loopback: str
) -> None:
    """A reviewer's finding: at a service's start every job is due at once, and a persona
    refresh that ran between the newest bar's close and the paper step made that step fail
    (the seed note as of the close was a write into the persona's past); the run started
    a bar late. Now the step decides, the seed is not written, and the next bar reads the
    refreshed persona (here the trader's own words through the toolkit)."""
    rt = runtime_for(str(make_config("refreshed")))
    trader = paper(rt, binance_loopback)
    rt.system().toolkit.record_note(
        "agent", "Long only, I never short.", as_of=START + timedelta(minutes=30)
    )
    first = trader.step(START + timedelta(minutes=40))
    assert [d[0] for d in first.decided] == [START]
    second = trader.step(START + timedelta(minutes=100))
    assert [d[0] for d in second.decided] == [START + HOUR]
    persona = rt.system().persona
    profile = persona.get_profile("agent", START + HOUR)
    assert profile is not None and profile.version == 1  # the words only, no seed note
    records = rt.db().decisions(trader.run_id)
    limits = [r.decision.limits for r in records]
    assert limits[0] == [] and limits[1] and limits[1][0].startswith("long_only: sell")
    assert [r.decision.action for r in records] == ["sell", "close"]


def test_a_persona_written_after_now_still_refuses_the_seed(
    make_config: ConfigFactory, binance_loopback: str
) -> None:
    """A persona as of a time after the step's clock is a store of a later run: the seed
    note's write into its past is still a look-ahead error, as in a backtest."""
    rt = runtime_for(str(make_config("later")))
    trader = paper(rt, binance_loopback)
    rt.system().toolkit.record_note("agent", "Never more than 2x leverage.", as_of=START + HOUR)
    with pytest.raises(LookAheadError, match=r"has persona records from .* start the run"):
        trader.step(START + timedelta(minutes=40))
    assert trader.state() is None


def test_a_ruined_paper_account_is_said_and_is_no_dependency_failure() -> None:
    """A paper run whose account was ruined decides no more: its warning says so (it had
    said nothing), and it is no failure of the LLM or store (no exit 3)."""
    from backend.backtest.models import BrokerState
    from backend.service.paper import paper_failure, paper_warning

    state = PaperState(
        run_id="r", exchange="binance", pair="BTC/USDT", timeframe="1h", trader_id="t",
        clock="replay", broker=BrokerState(cash=-1000.0), ruined=True, bars=3,
    )  # fmt: skip
    assert paper_warning(state, min_answered_share=0.95) == (
        "the account was ruined: marked equity <= 0 at a close; the position is closed at "
        "the next bar's open and the agent decides no more"
    )
    assert paper_failure(state, min_answered_share=0.95) is None
    fine = state.model_copy(update={"ruined": False})
    assert paper_warning(fine, min_answered_share=0.95) is None

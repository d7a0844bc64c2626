"""The three tiers together on real data: parallel retrieval, as_of fences, token budget,
and the MemoryToolkit's function-calling tools."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from backend.compose import MemorySystem, build_memory_system
from backend.config import MemorySettings, load_settings
from backend.data import Fill, load_ohlcv
from backend.errors import ToolError
from backend.memory import compute_features, detect_market_events, events_to_episodes
from backend.memory.hierarchical import HierarchicalMemory
from backend.memory.models import ChatMessage, PersonaProfile, ScoredEpisode
from backend.text.tokens import count_tokens
from tests.conftest import StoreFactory

TRADER = "0x513b8629fe877bb581bf244e326a047b249c4ff1"
SYMBOL = "BTC/USDT"
NOTE_AT = datetime(2025, 2, 10, tzinfo=UTC)
AS_OF = datetime(2025, 3, 1, tzinfo=UTC)


@pytest.fixture()
def system(
    make_store: StoreFactory, real_fills: list[Fill], shared_data: Path, tmp_path: Path
) -> Iterator[MemorySystem]:
    settings = load_settings(memory=MemorySettings(working_state_path=tmp_path / "w.sqlite3"))
    built = build_memory_system(settings, store=make_store())
    fills = [f for f in real_fills if f.trader_id == TRADER]
    first = datetime(2025, 2, 1, tzinfo=UTC)
    built.persona.build_from_fills(TRADER, [f for f in fills if f.datetime <= first], as_of=first)
    built.toolkit.record_note(
        TRADER, "I never risk more than 2% per trade. No memecoins.", as_of=NOTE_AT
    )
    frame = load_ohlcv(shared_data / "market" / "binance", SYMBOL, "1h").frame
    features = compute_features(frame.loc["2024-11-01":"2025-03-15"], symbol=SYMBOL, timeframe="1h")
    detected = detect_market_events(features, settings=settings.memory.detectors)
    episodes = events_to_episodes(detected, trader_id=TRADER, features=features)
    past = [e for e in episodes if e.occurred_at <= AS_OF]
    future = [e for e in episodes if e.occurred_at > AS_OF]
    assert past and future, "the window must hold events before and after AS_OF"
    built.episodic.add(past, as_of=AS_OF)
    built.episodic.add(future, as_of=max(e.occurred_at for e in future))
    for at in features.frame.index:
        if AS_OF - timedelta(days=5) < at <= AS_OF:
            built.working.observe_bar(TRADER, features, at.to_pydatetime())
    yield built
    built.close()


def test_retrieval_merges_three_tiers_fenced_by_as_of(system: MemorySystem) -> None:
    ctx = system.memory.retrieve(TRADER, SYMBOL, as_of=AS_OF)
    assert not ctx.errors
    assert set(ctx.timings_ms) >= {"persona", "working", "episodic", "total"}
    assert ctx.persona is not None and ctx.persona.as_of <= AS_OF
    assert {c.kind for c in ctx.persona.constraints()} == {"max_risk_per_trade", "no_memecoins"}
    assert ctx.working and ctx.working[-1].as_of == AS_OF
    assert len(ctx.working) <= system.memory.settings.working_window
    assert ctx.query == ctx.working[-1].situation()  # "the last time things looked like this"
    assert ctx.episodes and all(s.episode.occurred_at <= AS_OF for s in ctx.episodes)
    scores = [s.score for s in ctx.episodes]
    assert scores == sorted(scores, reverse=True)
    # the same call earlier in time sees an older world
    before = system.memory.retrieve(TRADER, SYMBOL, as_of=NOTE_AT - timedelta(days=1))
    assert before.persona is not None and before.persona.constraints() == []
    assert all(s.as_of <= NOTE_AT for s in before.working)
    assert all(s.episode.occurred_at <= NOTE_AT for s in before.episodes)


def test_the_toolkit_records_market_context_into_working_memory(
    system: MemorySystem, shared_data: Path
) -> None:
    """``MemoryToolkit.record_market_context``: an agent's way to feed working memory a
    closed bar; the next retrieval at that time has it as the market now, not before."""
    frame = load_ohlcv(shared_data / "market" / "binance", SYMBOL, "1h").frame
    features = compute_features(frame.loc["2024-11-01":"2025-03-15"], symbol=SYMBOL, timeframe="1h")
    later = AS_OF + timedelta(hours=3)
    snapshot = system.working.snapshot_of(TRADER, features, later)
    assert snapshot.as_of == later
    system.toolkit.record_market_context(snapshot)
    now = system.memory.retrieve(TRADER, SYMBOL, as_of=later)
    assert now.working[-1] == snapshot
    before = system.memory.retrieve(TRADER, SYMBOL, as_of=AS_OF)
    assert before.working[-1].as_of == AS_OF


def test_parallel_equals_sequential(system: MemorySystem) -> None:
    para = system.memory.retrieve(TRADER, SYMBOL, as_of=AS_OF, parallel=True)
    seq = system.memory.retrieve(TRADER, SYMBOL, as_of=AS_OF, parallel=False)
    assert para.model_dump(exclude={"timings_ms"}) == seq.model_dump(exclude={"timings_ms"})


def test_tiers_are_fetched_at_the_same_time(system: MemorySystem) -> None:
    """The persona and the episodic tier each wait for the other at a barrier before
    answering: fetched one after the other, the first would time out (BrokenBarrierError).
    The calling thread runs the recall while a pool thread runs the persona."""
    barrier = threading.Barrier(2, timeout=10)
    threads: dict[str, str] = {}

    class Persona:
        def get_profile(self, trader_id: str, as_of: datetime) -> PersonaProfile | None:
            threads["persona"] = threading.current_thread().name
            barrier.wait()
            return system.persona.get_profile(trader_id, as_of)

        def render_profile(self, profile: PersonaProfile) -> str:
            return system.persona.render_profile(profile)

    class Episodic:
        def recall(self, trader_id: str, query_text: str, **kw: Any) -> list[ScoredEpisode]:
            threads["episodic"] = threading.current_thread().name
            barrier.wait()
            return system.episodic.recall(trader_id, query_text, **kw)

    with HierarchicalMemory(
        persona=Persona(),
        working=system.working,
        episodic=Episodic(),
        settings=system.memory.settings,
    ) as memory:
        ctx = memory.retrieve(TRADER, SYMBOL, as_of=AS_OF)
    assert not ctx.errors and ctx.persona is not None and ctx.episodes
    assert threads["episodic"] == threading.current_thread().name
    assert threads["persona"].startswith("memory")
    seq = system.memory.retrieve(TRADER, SYMBOL, as_of=AS_OF, parallel=False)
    assert ctx.model_dump(exclude={"timings_ms"}) == seq.model_dump(exclude={"timings_ms"})


def test_decision_context_fits_the_budget(system: MemorySystem) -> None:
    for budget in (300, 1500):
        ctx, rendered = system.memory.build_context(TRADER, SYMBOL, as_of=AS_OF, budget=budget)
        assert rendered.tokens == count_tokens(rendered.text) <= budget
        assert rendered.memory_ids[0].startswith("persona:v")
        assert "max_risk_per_trade" in rendered.text
    assert any(m.startswith("working:") for m in rendered.memory_ids)
    assert any(m == s.episode.id for s in ctx.episodes for m in rendered.memory_ids)


def test_toolkit_tools_are_scoped_and_validated(system: MemorySystem) -> None:
    kit = system.toolkit
    names = {tool["function"]["name"] for tool in kit.tool_schemas()}
    assert names == {
        "recall",
        "get_trader_profile",
        "record_note",
        "record_message",
        "record_event",
        "record_decision",
        "record_outcome",
        "build_decision_context",
    }
    recall_tool = next(t for t in kit.tool_schemas() if t["function"]["name"] == "recall")
    assert "trader_id" not in recall_tool["function"]["parameters"]["properties"]

    out = json.loads(
        kit.dispatch(
            "recall",
            {"query": "sharp selloff", "symbol": SYMBOL},
            trader_id=TRADER,
            as_of=AS_OF,
        )
    )
    episodic = [h for h in out["hits"] if h["tier"] == "episodic"]
    working = [h for h in out["hits"] if h["tier"] == "working"]
    assert out["persona"]["version"] >= 2 and episodic and working
    assert set(out) == {"as_of", "hits", "persona", "context", "errors"}  # each memory once
    assert len({h["id"] for h in out["hits"]}) == len(out["hits"])
    # the market: the top_k (5) newest snapshots, newest first, not the 48-bar window
    times = [w["id"].split("@")[1] for w in working]
    assert len(times) == 5 and times == sorted(times, reverse=True)
    assert times[0] == AS_OF.isoformat()
    tiers = [hit["tier"] for hit in out["hits"]]
    assert tiers[0] == "persona" and tiers.index("working") < tiers.index("episodic")
    # without a symbol: episodes of every symbol, no current-market snapshot
    anywhere = json.loads(
        kit.dispatch("recall", {"query": "sharp selloff"}, trader_id=TRADER, as_of=AS_OF)
    )
    assert {h["tier"] for h in anywhere["hits"]} == {"persona", "episodic"}
    # scope and time cannot come from the tool call
    widened = json.loads(
        kit.dispatch(
            "recall",
            json.dumps(
                {
                    "query": "x",
                    "symbol": SYMBOL,
                    "trader_id": "0x083384f897ee0f19899168e3b1bec365f52a9012",
                }
            ),
            trader_id=TRADER,
            as_of=AS_OF,
        )
    )
    assert "error" in widened and "trader_id" in widened["error"]
    assert "error" in json.loads(kit.dispatch("nope", {}, trader_id=TRADER, as_of=AS_OF))
    bad = json.loads(
        kit.dispatch(
            "record_decision",
            {"symbol": SYMBOL, "action": "yolo", "size": 0.1, "rationale": "x"},
            trader_id=TRADER,
            as_of=AS_OF,
        )
    )
    assert "error" in bad and "action" in bad["error"]

    decided = json.loads(
        kit.dispatch(
            "record_decision",
            {
                "symbol": SYMBOL,
                "action": "buy",
                "size": 0.1,
                "rationale": "breakout with volume",
                "memory_ids": [episodic[0]["id"]],
            },
            trader_id=TRADER,
            as_of=AS_OF,
        )
    )
    episode_id = decided["episode_id"]
    stored = system.episodic.get(TRADER, [episode_id], as_of=AS_OF)[0]
    # one decision per symbol and time: the same one again is a no-op, another is refused
    again = {"symbol": SYMBOL, "action": "buy", "size": 0.1, "rationale": "breakout with volume",
             "memory_ids": [episodic[0]["id"]]}  # fmt: skip
    assert json.loads(kit.dispatch("record_decision", again, trader_id=TRADER, as_of=AS_OF)) == {
        "episode_id": episode_id
    }
    other = json.loads(kit.dispatch("record_decision", again | {"action": "sell", "size": 0.5},
                                    trader_id=TRADER, as_of=AS_OF))  # fmt: skip
    assert "already recorded" in other["error"]
    cited = json.loads(kit.dispatch("record_decision", again | {"memory_ids": []},
                                    trader_id=TRADER, as_of=AS_OF))  # fmt: skip
    assert "already recorded" in cited["error"]  # the memories it cited are not rewritten
    assert system.episodic.get(TRADER, [episode_id], as_of=AS_OF)[0] == stored
    assert stored.event_type == "decision" and stored.memory_ids == [episodic[0]["id"]]
    later = AS_OF + timedelta(days=1)
    json.loads(
        kit.dispatch(
            "record_outcome",
            {"episode_id": episode_id, "horizon": "24h", "market_return": -0.06, "pnl": -500.0},
            trader_id=TRADER,
            as_of=later,
        )
    )
    after = system.episodic.get(TRADER, [episode_id], as_of=later)[0]
    assert after.outcome is not None and after.importance > stored.importance
    # the outcome is not visible before it happened
    assert system.episodic.get(TRADER, [episode_id], as_of=AS_OF)[0].outcome is None
    ctx = json.loads(
        kit.dispatch(
            "build_decision_context",
            {"symbol": SYMBOL, "budget": 800},
            trader_id=TRADER,
            as_of=later,
        )
    )
    assert ctx["tokens"] <= 800


def test_a_decision_cites_only_memories_known_at_its_time(system: MemorySystem) -> None:
    kit = system.toolkit
    said = ChatMessage(id="m1", speaker="trader", text="Keep me out of SOL leverage this month.",
                       time=AS_OF - timedelta(hours=2), session="s1")  # fmt: skip
    kit.record_message(TRADER, said)
    out = kit.recall(TRADER, "SOL leverage selloff", symbol=SYMBOL, as_of=AS_OF)
    ids = [h["id"] for h in out["hits"]]
    tiers = {h["tier"] for h in out["hits"]}
    assert {"persona", "working", "episodic", "conversation"} <= tiers and "message:m1" in ids
    decided = kit.record_decision(TRADER, symbol=SYMBOL, action="hold", size=0.0,
                                  rationale="cited", memory_ids=ids, as_of=AS_OF)  # fmt: skip
    assert system.episodic.get(TRADER, [decided], as_of=AS_OF)[0].memory_ids == ids
    # what build_decision_context rendered is citable too (its hard constraints' block)
    rendered = kit.build_decision_context(TRADER, SYMBOL, as_of=AS_OF).memory_ids
    assert any(i.endswith(":constraints") for i in rendered)
    kit.record_decision(TRADER, symbol="ETH/USDT", action="hold", size=0.0, rationale="ctx",
                        memory_ids=rendered, as_of=AS_OF)  # fmt: skip

    later = AS_OF + timedelta(days=7)
    future = [e.id for e in system.episodic.scan(TRADER, as_of=later) if e.occurred_at > AS_OF]
    version = out["persona"]["version"]
    bad = [
        future[0],  # an episode written after the decision
        "persona:v" + str(version + 1),  # a persona version not yet written
        f"working:{SYMBOL}@{(AS_OF + timedelta(hours=1)).isoformat()}",  # a later bar
        "working:BTC/USDT@not-a-time",
        "message:nobody-said-this",
        "ep-made-up",
        "persona:v\u00b2",  # a digit to str.isdigit, not to int
        "persona:v1:other",
        "",
    ]
    at = AS_OF - timedelta(hours=1)
    for wrong in bad:
        with pytest.raises(ToolError, match="not known at") as caught:
            kit.record_decision(TRADER, symbol=SYMBOL, action="buy", size=0.1, rationale="x",
                                memory_ids=[ids[0], wrong], as_of=at)  # fmt: skip
        assert repr(wrong) in str(caught.value) and ids[0] not in str(caught.value).split(": ")[-1]
    answer = json.loads(kit.dispatch("record_decision", {"symbol": SYMBOL, "action": "buy",
                        "size": 0.1, "rationale": "x", "memory_ids": bad},
                        trader_id=TRADER, as_of=at))  # fmt: skip
    assert "9 not known" in answer["error"] and "''" not in answer["error"]  # only 5 named
    assert not [e for e in system.episodic.scan(TRADER, as_of=at) if e.event_type == "decision"]
    # a message said after the decision's time is not known then either
    before = AS_OF - timedelta(hours=3)
    with pytest.raises(ToolError, match="message:m1"):
        kit.record_decision(TRADER, symbol=SYMBOL, action="buy", size=0.1, rationale="x",
                            memory_ids=["message:m1"], as_of=before)  # fmt: skip


def test_constraints_too_long_for_the_budget_are_a_memory_error_not_a_crash(
    system: MemorySystem,
) -> None:
    """A trader whose notes forbid hundreds of tickers: the hard-constraint line alone
    overflows the budget. The decision loop must go on (the constraints are enforced in
    code) with the failure reported, never a cut list nor an exception on every bar."""
    later = AS_OF + timedelta(hours=1)
    for i in range(6):
        tickers = ", ".join(f"Q{i}{j:02d}X" for j in range(80))
        system.toolkit.record_note(TRADER, f"Never touch {tickers}.", as_of=later)
    ctx, rendered = system.memory.build_context(TRADER, SYMBOL, as_of=later, query="selloff")
    assert "context" in ctx.errors and "hard constraints" in ctx.errors["context"]
    assert rendered.errors == ctx.errors  # the rendering says what it went without
    assert "Q000X" not in rendered.text and rendered.tokens <= 1500  # no cut list
    # ... and the text says so: a reviewer found a context that read as "no constraints"
    assert ctx.persona is not None
    rules = len(ctx.persona.constraints())  # 2% a trade, no memecoins, the long list
    assert rendered.text.splitlines()[1] == (
        f"HARD CONSTRAINTS: {rules}, too long for this token budget (not shown; enforced in code)"
    )
    assert f"### Market now (as of {later:%Y-%m-%d %H:%M}Z)" in rendered.text


def test_the_constraints_note_gives_way_to_a_tiny_budget(system: MemorySystem) -> None:
    """A third reader's: with an explicit budget just above the header, its note of the
    cut constraints made the fallback raise where it had rendered."""
    later = AS_OF + timedelta(hours=1)
    system.toolkit.record_note(TRADER, "Never touch " + ", ".join(
        f"Q{j:03d}X" for j in range(200)) + ".", as_of=later)  # fmt: skip
    ctx, rendered = system.memory.build_context(TRADER, SYMBOL, as_of=later, budget=60)
    assert "context" in ctx.errors and rendered.tokens <= 60  # the header: 42 tokens

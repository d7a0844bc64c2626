"""Persona alignment: each component by hand against a profile the product builds from
hand-made fills and words (PersonaManager on a throwaway store), and the behaviour of a
run recovered from hand-made curves, trades and decisions."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import pandas as pd
import pytest

from backend.agents import DEFAULT_CONSTRAINTS_NOTE
from backend.backtest import BrokerFill
from backend.backtest.models import Decision, DecisionRecord
from backend.config import load_settings
from backend.data import Fill
from backend.embeddings import HashingEmbedder
from backend.eval.ablation import reference_profile
from backend.eval.alignment import (
    agent_holding_hours,
    behaviour_of,
    buy_and_hold_behaviour,
    persona_alignment,
)
from backend.eval.models import RunBehaviour
from backend.memory.models import PersonaProfile

T0 = datetime(2024, 1, 1, tzinfo=UTC)
TRADER = "trader-a"
NOTE = DEFAULT_CONSTRAINTS_NOTE + " I'm a conservative trader."


def _fill(n: int, at: datetime, symbol: str, direction: str, price: float, start: float) -> Fill:
    side = "buy" if direction in ("open_long", "close_short") else "sell"
    return Fill(
        id=f"f{n}", order=f"o{n}", timestamp=int(at.timestamp() * 1000), datetime=at,
        symbol=symbol, side=side, price=price, amount=1.0, cost=price, fee_cost=0.0,
        fee_currency="USDC", taker_or_maker="taker", trader_id=TRADER, realized_pnl=0.0,
        direction=direction, raw_direction=direction, start_position=start,
        market_type="perp", source="test", tx_hash=None,
    )  # type: ignore[arg-type]  # fmt: skip


def hand_fills() -> list[Fill]:
    """Three BTC longs and one ETH short, each held exactly 24 h: long share of opening
    notional 150,000 / 152,000, median holding 24 h, ETH 1.3% of the notional."""
    fills: list[Fill] = []
    for k in range(3):
        at = T0 + timedelta(days=3 * k)
        fills.append(_fill(2 * k, at, "BTC/USDC:USDC", "open_long", 50_000.0, 0.0))
        fills.append(_fill(2 * k + 1, at + timedelta(hours=24), "BTC/USDC:USDC", "close_long",
                           50_000.0, 1.0))  # fmt: skip
    at = T0 + timedelta(days=10)
    fills.append(_fill(10, at, "ETH/USDC:USDC", "open_short", 2_000.0, 0.0))
    fills.append(_fill(11, at + timedelta(hours=24), "ETH/USDC:USDC", "close_short", 2_000.0, -1.0))
    return fills


@pytest.fixture(scope="module")
def profile() -> PersonaProfile:
    built = reference_profile(
        load_settings(),
        trader_id=TRADER,
        fills=hand_fills(),
        start=T0,
        end=T0 + timedelta(days=30),
        embedder=HashingEmbedder(),
        seed_note=NOTE,
    )
    assert built is not None
    return built


def test_the_product_built_the_reference_from_fills_and_words(profile: PersonaProfile) -> None:
    attrs = profile.attributes
    assert attrs["long_share"].value == pytest.approx(150_000 / 152_000, abs=1e-4)
    assert attrs["holding_period"].value == pytest.approx(24.0)
    assert attrs["preferred_assets"].detail["shares"]["ETH"] < 0.05
    assert attrs["stated_risk_tolerance"].value == "conservative"
    assert {c.kind for c in profile.constraints()} >= {"max_risk_per_trade", "max_leverage"}


def behaviour(**overrides: object) -> RunBehaviour:
    base: dict[str, object] = {
        "decisions": 10, "violating_decisions": 2, "long_share": 0.5,
        "holding_hours_median": 6.0, "positioned_share": 0.4, "mean_abs_exposure": 1.0,
        "turnover": 3.0,
    }  # fmt: skip
    return RunBehaviour.model_validate({**base, **overrides})


def test_each_component_by_hand(profile: PersonaProfile) -> None:
    score, parts = persona_alignment(behaviour(), profile, asset="BTC")
    long_share = profile.attributes["long_share"].value
    assert parts == pytest.approx(
        {
            "constraints": 0.8,  # 2 of 10 held positions broke a hard constraint
            "long_share": 1 - abs(0.5 - long_share),
            "holding_period": 1 - math.log(24 / 6) / math.log(24),  # 6 h vs 24 h
            "assets": 1.0,  # BTC is the trader's
            "risk": 0.5,  # conservative: cap 0.5 on a mean gross exposure of 1.0
        }
    )
    assert list(parts) == ["constraints", "long_share", "holding_period", "assets", "risk"]
    assert score == pytest.approx(sum(parts.values()) / 5)


def test_assets_the_trader_does_not_trade_score_by_time_out_of_them(
    profile: PersonaProfile,
) -> None:
    for asset in ("ETH", "sol"):  # ETH is under 5% of the notional; SOL never traded
        assert persona_alignment(behaviour(), profile, asset=asset)[1]["assets"] == 0.6
    never = behaviour(positioned_share=0.0, mean_abs_exposure=None, long_share=None)
    _, parts = persona_alignment(never, profile, asset="SOL")
    assert parts["assets"] == 1.0 and parts["risk"] == 1.0 and "long_share" not in parts


def test_an_agent_that_never_trades_the_traders_asset_is_not_aligned_best(
    profile: PersonaProfile,
) -> None:
    """A reviewer's case: on the trader's own asset an agent that never opened a position
    scored 1.0, above one that traded like the trader. Its direction and holding now
    score 0; on an asset the trader does not trade, staying out stays in character."""
    never = behaviour(
        violating_decisions=0, positioned_share=0.0, mean_abs_exposure=None,
        long_share=None, holding_hours_median=None,
    )  # fmt: skip
    score, parts = persona_alignment(never, profile, asset="BTC")
    assert parts["long_share"] == 0.0 and parts["holding_period"] == 0.0
    assert score == pytest.approx(3 / 5)  # constraints, assets and risk 1
    alike = behaviour(
        violating_decisions=0, long_share=profile.attributes["long_share"].value,
        holding_hours_median=48.0, mean_abs_exposure=0.5,
    )  # fmt: skip
    assert persona_alignment(alike, profile, asset="BTC")[0] > score
    _, elsewhere = persona_alignment(never, profile, asset="SOL")
    assert "long_share" not in elsewhere and "holding_period" not in elsewhere


def test_holding_period_is_log_scaled_and_floored_at_zero(profile: PersonaProfile) -> None:
    def hold(hours: float) -> float:
        b = behaviour(holding_hours_median=hours)
        return persona_alignment(b, profile, asset="BTC")[1]["holding_period"]

    assert hold(24.0) == pytest.approx(1.0)
    assert hold(24.0 * 24) == pytest.approx(0.0) and hold(0.5) == 0.0  # 48x apart
    assert hold(96.0) == pytest.approx(hold(6.0))  # 4x either way scores the same
    b = behaviour(holding_hours_median=None)
    assert "holding_period" not in persona_alignment(b, profile, asset="BTC")[1]


def test_without_fills_only_the_constraints_are_defined() -> None:
    note_only = reference_profile(
        load_settings(), trader_id=TRADER, fills=[], start=T0, end=T0 + timedelta(days=5),
        embedder=HashingEmbedder(),
    )  # fmt: skip
    assert note_only is not None and note_only.constraints()
    for reference in (note_only, None):
        score, parts = persona_alignment(behaviour(), reference, asset="BTC")
        assert parts == {"constraints": 0.8} and score == pytest.approx(0.8)
    assert persona_alignment(behaviour(decisions=0, violating_decisions=0), None, asset="X")[0] == 1


def test_buy_and_hold_against_the_same_reference(profile: PersonaProfile) -> None:
    held = buy_and_hold_behaviour(decisions=100, hours=24.0 * 24)
    score, parts = persona_alignment(held, profile, asset="BTC")
    assert parts["constraints"] == 1.0 and parts["assets"] == 1.0
    assert parts["holding_period"] == pytest.approx(0.0)  # a month vs a day
    assert parts["risk"] == 0.5 and parts["long_share"] == pytest.approx(
        profile.attributes["long_share"].value
    )
    assert 0.0 <= score <= 1.0
    assert persona_alignment(held, profile, asset="SOL")[1]["assets"] == 0.0
    # its violations are counted as the agent's: the entry once, a held breach every bar
    entry = buy_and_hold_behaviour(decisions=100, hours=1.0, violating_entry=True)
    assert persona_alignment(entry, profile, asset="BTC")[1]["constraints"] == 0.99
    both = buy_and_hold_behaviour(
        decisions=100, hours=1.0, violating_entry=True, violating_hold=True
    )
    assert persona_alignment(both, profile, asset="DOGE")[1]["constraints"] == 0.0


def test_buy_and_hold_is_checked_like_the_agent(profile: PersonaProfile) -> None:
    from backend.agents.constraints import check_decision
    from backend.backtest.models import Decision, PositionState

    flat = PositionState(quantity=0.0, entry_price=None, equity=1e4, exposure=0.0)
    full = PositionState(quantity=1.0, entry_price=1e4, equity=1e4, exposure=1.0)
    buy, hold = Decision(action="buy", size=1.0), Decision.hold("held")
    # the seed note: 2% risk per trade caps an entry (not a held position), no memecoins
    assert check_decision(buy, profile=profile, symbol="BTC/USDT", position=flat)[1]
    assert not check_decision(hold, profile=profile, symbol="BTC/USDT", position=full)[1]
    assert check_decision(hold, profile=profile, symbol="DOGE/USDT", position=full)[1]


def _decision(at: datetime, *, broke: bool) -> DecisionRecord:
    hold = Decision.hold("test")
    return DecisionRecord(as_of=at, symbol="BTC/USDT", decision=hold, proposed=hold,
                          violations=["max_leverage"] if broke else [])  # fmt: skip


def test_the_agents_holding_time_is_measured_as_the_personas_fifo() -> None:
    """A reviewer's finding: the agent's holding time was ``exit_time - entry_time`` of
    each reduction, from the position's *first* entry, while the trader's is the FIFO age
    of the lots each closing fill closes (``holding_samples``). Scaled in at 0 h and 10 h,
    closed half at 12 h and the rest at 20 h: FIFO ages 12 h and 10 h, where the old rule
    read 12 h and 20 h."""
    t0 = datetime(2024, 1, 1, tzinfo=UTC)
    hour = timedelta(hours=1)
    fills = [
        BrokerFill(time=t0, quantity=2, reference_price=1, price=1, fee=0),
        BrokerFill(time=t0 + 10 * hour, quantity=2, reference_price=1, price=1, fee=0),
        BrokerFill(time=t0 + 12 * hour, quantity=-2, reference_price=1, price=1, fee=0),
        BrokerFill(time=t0 + 20 * hour, quantity=-3, reference_price=1, price=1, fee=0),
        BrokerFill(time=t0 + 24 * hour, quantity=1, reference_price=1, price=1, fee=0),
    ]
    # the last sell flips: it closes 2 units (from 10 h, 10 h old) and opens a 1-unit
    # short, closed at 24 h (4 h old)
    assert agent_holding_hours(fills) == pytest.approx([12.0, 10.0, 4.0])
    assert agent_holding_hours([]) == []


def test_behaviour_from_curves_trades_and_decisions(profile: PersonaProfile) -> None:
    """Positions 0, +5, +5, -5, 0 units at closes 100, 100, 110, 110, 100: a long opened at
    bar 1, flipped short at bar 3, closed at bar 4; bar 2 is price drift only."""
    times = pd.date_range("2024-01-01 04:00", periods=5, freq="4h", tz="UTC")
    q = [0.0, 5.0, 5.0, -5.0, 0.0]
    price = [100.0, 100.0, 110.0, 110.0, 100.0]
    equity = [1000.0, 1000.0, 1050.0, 1050.0, 1000.0]
    exposure = [qi * p / e for qi, p, e in zip(q, price, equity, strict=True)]
    trades = [  # the broker's fills: buy 5, sell 10 (flip), buy 5
        BrokerFill(time=times[1], quantity=5, reference_price=100, price=100, fee=0),
        BrokerFill(time=times[3], quantity=-10, reference_price=110, price=110, fee=0),
        BrokerFill(time=times[4], quantity=5, reference_price=100, price=100, fee=0),
    ]
    decisions = [_decision(t, broke=i == 2) for i, t in enumerate(times)]
    got = behaviour_of(
        decisions,
        trades,
        equity=pd.Series(equity, index=times),
        exposure=pd.Series(exposure, index=times),
        price=pd.Series(price, index=times) * 7.0,  # any scale of the close
        profile=profile,
        symbol="BTC/USDT",
    )
    # executed behaviour only: bar 2's proposal broke a constraint (the check cut it), but
    # no held position broke the reference's (3x leverage, 2% a trade, no memecoins)
    assert got.decisions == 5 and got.violating_decisions == 0
    on_doge = behaviour_of(
        decisions, trades, equity=pd.Series(equity, index=times),
        exposure=pd.Series(exposure, index=times), price=pd.Series(price, index=times),
        profile=profile, symbol="DOGE/USDT",
    )  # fmt: skip
    assert on_doge.violating_decisions == 3  # every bar holding the memecoin
    assert on_doge.model_copy(update={"violating_decisions": 0}) == got
    assert got.long_share == pytest.approx(500 / (500 + 550))  # 5 x 100 long, 5 x 110 short
    assert got.holding_hours_median == pytest.approx(6.0)  # 8 h and 4 h
    assert got.positioned_share == pytest.approx(0.6)
    assert got.mean_abs_exposure == pytest.approx((0.5 + 2 * 550 / 1050) / 3)
    assert got.turnover == pytest.approx(0.5 + 10 * 110 / 1050 + 0.5)  # drift not counted
    flat = behaviour_of([], [], equity=pd.Series([1.0, 1.0]), exposure=pd.Series([0.0, 0.0]),
                        price=pd.Series([1.0, 2.0]))  # fmt: skip
    assert flat.long_share is None and flat.mean_abs_exposure is None and flat.turnover == 0

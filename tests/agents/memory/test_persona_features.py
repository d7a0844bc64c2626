"""Persona attributes from fills: the three real traders, the as_of fence, the rules."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pandas as pd
import pytest

from backend.agents.memory._persona_features import (
    ATTRIBUTE_NAMES,
    CONFIDENCE_K,
    compute_persona_attributes,
)
from backend.data import Fill, fills_to_frame
from backend.errors import DataError
from backend.memory.models import PersonaAttribute
from backend.types import base_asset
from tests.agents.conftest import ALTS_SPOT, BTC_LONG_HF, ETH_SOL_SHORT, TRADERS
from tests.agents.memory.helpers import T0, fill

END = datetime(2026, 1, 1, tzinfo=UTC)


@pytest.fixture(scope="module")
def personas(by_trader: dict[str, list[Fill]]) -> dict[str, dict[str, PersonaAttribute]]:
    return {t: compute_persona_attributes(fills_to_frame(by_trader[t]), as_of=END) for t in TRADERS}


def test_base_asset() -> None:
    assert base_asset("BTC/USDC:USDC") == "BTC"
    assert base_asset("PURR/USDC") == "PURR"
    assert base_asset("@107") == "@107"
    assert base_asset("ETH") == "ETH"


def test_profiles_tell_the_three_real_traders_apart(
    personas: dict[str, dict[str, PersonaAttribute]],
) -> None:
    eth, btc, alts = personas[ETH_SOL_SHORT], personas[BTC_LONG_HF], personas[ALTS_SPOT]
    # 0x083384f8: ETH/SOL, mostly short
    assert eth["preferred_assets"].value[:2] == ["ETH", "SOL"]
    assert eth["long_share"].value < 0.5
    # 0x513b8629: BTC-heavy, mostly long, high frequency
    assert btc["preferred_assets"].value[0] == "BTC"
    assert btc["preferred_assets"].detail["shares"]["BTC"] > 0.8
    assert btc["long_share"].value > 0.5
    freq = {t: personas[t]["trade_frequency"].value for t in TRADERS}
    assert max(freq, key=lambda t: freq[t]) == BTC_LONG_HF
    # 0xae5eacaf: small alts and spot, mostly long
    assert alts["long_share"].value > 0.5
    assert "@107" in alts["preferred_assets"].value
    assert not {"BTC", "ETH"} & set(alts["preferred_assets"].value)
    median = {t: personas[t]["position_notional"].value["median"] for t in TRADERS}
    assert median[ALTS_SPOT] == min(median.values())
    # the risk rule separates them too
    assert [personas[t]["risk_tolerance"].value for t in TRADERS] == [
        "aggressive",
        "moderate",
        "conservative",
    ]


def test_every_attribute_has_provenance(personas: dict[str, dict[str, PersonaAttribute]]) -> None:
    for trader, attrs in personas.items():
        for name, attr in attrs.items():
            assert attr.name == name and attr.source == "fills"
            if attr.value is None:
                assert attr.confidence == 0 and attr.evidence_count == 0
                continue
            assert len(attr.evidence) == min(50, attr.evidence_count) > 0, (trader, name)
            assert attr.first_seen <= attr.last_updated
            assert attr.detail, (trader, name)
    leverage = personas[BTC_LONG_HF]["leverage"]
    assert leverage.value is None and leverage.confidence == 0


def test_evidence_is_newest_last_and_confidence_follows_the_formula(
    by_trader: dict[str, list[Fill]], personas: dict[str, dict[str, PersonaAttribute]]
) -> None:
    fills = [f for f in by_trader[ALTS_SPOT] if f.direction != "other"]  # a dust sweep is no trade
    assert len(fills) == len(by_trader[ALTS_SPOT]) - 1
    attr = personas[ALTS_SPOT]["preferred_assets"]
    assert attr.evidence == [f.id for f in fills[-50:]]
    assert attr.evidence_count == len(fills)
    assert attr.last_updated == fills[-1].datetime and attr.first_seen == fills[0].datetime
    k = CONFIDENCE_K["preferred_assets"]
    orders = len({f.order or f.id for f in fills})  # one order fills many times
    assert orders < len(fills)
    assert attr.confidence == round(orders / (orders + k), 4)
    # the win rate's confidence counts its closing orders, as its value does (it had
    # counted 498 closing fills of 15 orders: 0.94 for 0.33)
    win = personas[ETH_SOL_SHORT]["win_rate"]
    closing = win.detail["closing_orders"]
    assert closing < win.detail["closing_fills"]
    assert win.confidence == round(closing / (closing + CONFIDENCE_K["win_rate"]), 4)
    shares = attr.detail["shares"]
    assert sum(shares.values()) == pytest.approx(1.0, abs=1e-4)
    assert list(shares) == attr.value


def test_fills_after_as_of_are_never_used(by_trader: dict[str, list[Fill]]) -> None:
    fills = by_trader[ETH_SOL_SHORT]
    cut = fills[len(fills) // 2].datetime
    fenced = compute_persona_attributes(fills_to_frame(fills), as_of=cut)
    early = [f for f in fills if f.datetime <= cut]
    alone = compute_persona_attributes(fills_to_frame(early), as_of=cut)
    assert {k: a.value for k, a in fenced.items()} == {k: a.value for k, a in alone.items()}
    assert fenced["preferred_assets"].evidence_count == len(early) < len(fills)
    with pytest.raises(ValueError):
        compute_persona_attributes(fills_to_frame(fills), as_of=datetime(2025, 1, 1))


def test_missing_columns_raise_data_error() -> None:
    with pytest.raises(DataError, match="missing columns"):
        compute_persona_attributes(pd.DataFrame({"id": ["a"]}), as_of=END)


def test_no_fills_means_no_values() -> None:
    attrs = compute_persona_attributes(fills_to_frame([]), as_of=END)
    assert list(attrs) == list(ATTRIBUTE_NAMES)  # every attribute, each said to be unknown
    assert all(a.value is None and a.confidence == 0 for a in attrs.values())


def test_fifo_holding_long_share_and_drawdown_on_a_small_book() -> None:
    fills = [
        fill(1, hours=0, side="buy", amount=1, direction="open_long", start=0),
        fill(2, hours=1, side="buy", amount=1, direction="open_long", start=1),
        fill(3, hours=3, side="sell", amount=1.5, direction="close_long", start=2, pnl=100),
        fill(4, hours=5, side="sell", amount=0.5, direction="close_long", start=0.5, pnl=-150),
        fill(5, hours=6, side="sell", amount=2, direction="open_short", start=0),
        fill(6, hours=30, side="buy", amount=2, direction="close_short", start=-2, pnl=20),
    ]
    attrs = compute_persona_attributes(fills_to_frame(fills), as_of=END)
    # closes: (1*3h + 0.5*2h)/1.5 = 2.667 h, 0.5 lot aged 4 h = 4 h, the short 24 h
    assert attrs["holding_period"].value == pytest.approx(4.0)
    assert attrs["holding_period"].detail["mean_h"] == pytest.approx((8 / 3 + 4 + 24) / 3, 1e-3)
    assert attrs["style"].value == "day"
    # opening notional: long 200 + 100, short 200
    assert attrs["long_share"].value == pytest.approx(0.5)
    assert attrs["win_rate"].value == pytest.approx(2 / 3, 1e-3)
    pnl = attrs["pnl_profile"].value
    assert pnl == {"total": -30.0, "mean_win": 60.0, "mean_loss": -150.0, "profit_factor": 0.8}
    # cumulative PnL 100, -50, -30: worst peak-to-trough 150 = 1.5x the peak
    assert attrs["max_drawdown"].value == 150.0
    assert attrs["max_drawdown"].detail["fraction_of_peak"] == 1.5
    assert attrs["trade_frequency"].value == 3.0  # 6 fills on 2 UTC days


def test_flip_counts_only_its_opening_part_and_gaps_are_untimed() -> None:
    fills = [
        # position of unknown age: a close of it is never timed
        fill(1, hours=0, side="sell", amount=1, direction="close_long", start=3, pnl=5),
        # the export skipped fills: start 1 instead of 2 -> inventory reset, unknown age
        fill(2, hours=1, side="sell", amount=1, direction="close_long", start=1, pnl=5),
        fill(3, hours=2, side="buy", amount=1, direction="open_long", start=0),
        # flip: sells 3, closes 1 (timed: 1 h) and opens a 2 short
        fill(4, hours=3, side="sell", amount=3, direction="flip_long_to_short", start=1, pnl=1),
    ]
    attrs = compute_persona_attributes(fills_to_frame(fills), as_of=END)
    detail = attrs["holding_period"].detail
    assert (detail["timed_closes"], detail["untimed_closes"]) == (1, 2)
    assert attrs["holding_period"].value == pytest.approx(1.0)
    # long opening 100 (fill 3), short opening = 2/3 of fill 4's 300 = 200
    assert attrs["long_share"].value == pytest.approx(1 / 3, abs=1e-4)


def test_a_spot_buy_pays_its_fee_in_the_coin_bought() -> None:
    """Hyperliquid takes a spot buy's fee from the coin received: the next start position
    is start + amount - fee. Read as a USDC fee, that gap reset the inventory to a lot
    of unknown age and no spot close was ever timed."""
    spot = {"symbol": "@107", "price": 10.0}
    fills = [
        fill(1, hours=0, side="buy", amount=100, direction="buy", start=0, **spot),
        fill(2, hours=5, side="sell", amount=99.9, direction="sell", start=99.9, **spot),
    ]
    fills[0] = fills[0].model_copy(update={"fee_cost": 0.1, "fee_currency": "@107"})
    attrs = compute_persona_attributes(fills_to_frame(fills), as_of=END)
    detail = attrs["holding_period"].detail
    assert (detail["timed_closes"], detail["untimed_closes"]) == (1, 0)
    assert attrs["holding_period"].value == pytest.approx(5.0)
    # fees in USDC: 0.1 coin at 10 plus the sell's 0.01 USDC
    assert attrs["pnl_profile"].detail["fees"] == pytest.approx(1.01)
    # the same buy with its fee read as USDC leaves a 0.1 gap: taken from the oldest lot
    # (a gap no longer resets the inventory), the close is still timed
    as_quote = [fills[0].model_copy(update={"fee_currency": "USDC"}), fills[1]]
    attrs = compute_persona_attributes(fills_to_frame(as_quote), as_of=END)
    assert attrs["holding_period"].detail["timed_closes"] == 1


def test_a_gap_in_the_export_reconciles_only_the_difference() -> None:
    """A reviewer's finding: at a gap (the export is a subset) the whole position became
    one lot of unknown age, so every later close of it was untimed (748 of 0x513b's 5,515
    closes, the ones closing the oldest lots: the median biased down)."""
    grew = [  # an unseen buy of 1 between the two fills: a lot of unknown age after
        fill(1, hours=0, side="buy", amount=1, direction="open_long", start=0),
        fill(2, hours=10, side="sell", amount=1, direction="close_long", start=2, pnl=1),
        fill(3, hours=12, side="sell", amount=1, direction="close_long", start=1, pnl=1),
    ]
    detail = compute_persona_attributes(fills_to_frame(grew), as_of=END)["holding_period"].detail
    assert (detail["timed_closes"], detail["untimed_closes"], detail["median_h"]) == (1, 1, 10.0)
    shrank = [  # an unseen sell of 1: taken from the oldest lot, the rest keeps its age
        fill(1, hours=0, side="buy", amount=2, direction="open_long", start=0),
        fill(2, hours=4, side="sell", amount=1, direction="close_long", start=1, pnl=1),
    ]
    detail = compute_persona_attributes(fills_to_frame(shrank), as_of=END)["holding_period"].detail
    assert (detail["timed_closes"], detail["untimed_closes"], detail["median_h"]) == (1, 0, 4.0)
    flipped = [  # the position changed side unseen: one lot of unknown age
        fill(1, hours=0, side="buy", amount=1, direction="open_long", start=0),
        fill(2, hours=4, side="buy", amount=1, direction="close_short", start=-1, pnl=1),
    ]
    detail = compute_persona_attributes(fills_to_frame(flipped), as_of=END)["holding_period"].detail
    assert (detail["timed_closes"], detail["untimed_closes"]) == (0, 1)


def test_a_dust_conversion_moves_the_position_but_is_no_trading() -> None:
    fills = [
        fill(1, hours=0, side="buy", amount=1, direction="open_long", start=0),
        fill(2, hours=30, side="sell", amount=1, direction="close_long", start=1, pnl=5),
        fill(3, hours=60, side="sell", amount=0.001, direction="other", start=0.001, price=100),
    ]
    attrs = compute_persona_attributes(fills_to_frame(fills), as_of=END)
    assert attrs["trade_frequency"].detail["fills"] == 2  # the conversion's day not counted
    assert attrs["trade_frequency"].value == 1.0  # 2 fills on 2 UTC days
    assert "f0003" not in attrs["active_hours"].evidence


def test_style_thresholds() -> None:
    def style_for(hours: float) -> str:
        fills = [
            fill(1, hours=0, side="buy", amount=1, direction="open_long", start=0),
            fill(2, hours=hours, side="sell", amount=1, direction="close_long", start=1),
        ]
        return str(compute_persona_attributes(fills_to_frame(fills), as_of=END)["style"].value)

    assert [style_for(h) for h in (0.5, 5, 24 * 3, 24 * 20)] == [
        "scalper",
        "day",
        "swing",
        "position",
    ]


def test_active_hours_are_utc(by_trader: dict[str, list[Fill]]) -> None:
    fills = [
        fill(i, hours=h, side="buy", amount=1, direction="open_long", start=float(i))
        for i, h in enumerate([0, 0.1, 0.2, 1, 1.1, 5, timedelta(days=1).total_seconds() / 3600])
    ]
    attrs = compute_persona_attributes(fills_to_frame(fills), as_of=END)
    assert attrs["active_hours"].value == [T0.hour, T0.hour + 1, T0.hour + 5]


@pytest.mark.parametrize("trader", TRADERS)
def test_fills_of_one_millisecond_in_any_order_give_the_same_persona(
    by_trader: dict[str, list[Fill]], trader: str
) -> None:
    """A reviewer's finding: fills of one order at one millisecond arrive from ccxt in
    trade-id order (random on Hyperliquid); read out of their start-position chain, each
    reset the inventory to a lot of unknown age, and the holding period and style of
    every trader were lost. They are put back in chain order (``chain_ties``). A second
    reviewer's newest-first export (ties reversed) still chained wrong on 0x513b (the
    match's tolerance, 1e-6 of a 20 BTC position, was wider than a 1e-5 BTC fill): 2.433
    h for 2.167 h."""
    import random

    fills = by_trader[trader]
    rng = random.Random(11)
    shuffled = sorted(fills, key=lambda f: (f.timestamp, rng.random()))
    newest_first = sorted(reversed(fills), key=lambda f: f.timestamp)  # stable: ties reversed
    assert shuffled != fills and newest_first != fills  # the export's times are to the minute
    at = fills[-1].datetime
    given = compute_persona_attributes(fills_to_frame(fills), as_of=at)
    for other in (shuffled, newest_first):
        again = compute_persona_attributes(fills_to_frame(other), as_of=at)
        assert {k: a.value for k, a in again.items()} == {k: a.value for k, a in given.items()}
    assert given["holding_period"].detail["timed_closes"] > 0


@pytest.mark.parametrize("trader", TRADERS)
def test_a_normalized_ledger_gives_the_same_persona(
    by_trader: dict[str, list[Fill]], trader: str
) -> None:
    """The persona manager hands its ledger already normalized (``normalized=True``
    skips doing it twice): the attributes are those of the raw fills."""
    from backend.agents.memory._persona_features import normalize_fills_frame

    frame = fills_to_frame(by_trader[trader])
    at = by_trader[trader][len(by_trader[trader]) // 2].datetime
    raw = compute_persona_attributes(frame, as_of=at)
    ready = compute_persona_attributes(normalize_fills_frame(frame), as_of=at, normalized=True)
    assert {k: a.model_dump() for k, a in ready.items()} == {
        k: a.model_dump() for k, a in raw.items()
    }

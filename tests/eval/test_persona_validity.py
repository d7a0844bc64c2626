"""Persona predictive validity: the metric math on hand-computed fills, causality on the
real export, the ``sentinel eval persona`` contract (also for a single-trader file)."""

from __future__ import annotations

import json
import math
import os
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from backend.agents.memory import compute_persona_attributes, normalize_fills_frame
from backend.cli import app
from backend.data import Fill, fills_to_frame, load_hyperliquid_fills
from backend.data.models import Direction
from backend.eval.persona_validity import (
    METHODS,
    METRICS,
    Outcome,
    ProfileView,
    evaluate_persona_validity,
    evaluation_times,
    holding_bucket,
    outcome_after,
    population_view,
    predict,
    score_point,
)
from tests.sentinel_cli import sentinel

A, B = "0xaaaa", "0xbbbb"
T = datetime(2025, 2, 1, tzinfo=UTC)
SENTINEL = sentinel()


def fill(
    trader: str,
    when: datetime,
    coin: str,
    direction: Direction,
    amount: float,
    price: float,
    start: float,
    pnl: float = 0.0,
) -> Fill:
    side = "buy" if direction in ("open_long", "close_short", "buy") else "sell"
    return Fill(
        id=f"{trader}-{when:%m%d%H%M}-{coin}",
        order=None,
        timestamp=int(when.timestamp() * 1000),
        datetime=when,
        symbol=f"{coin}/USDC:USDC",
        side=side,
        price=price,
        amount=amount,
        cost=amount * price,
        fee_cost=0.0,
        fee_currency="USDC",
        taker_or_maker="taker",
        trader_id=trader,
        realized_pnl=pnl,
        direction=direction,
        raw_direction=direction,
        start_position=start,
        market_type="perp",
        source="test",
        tx_hash=None,
    )


def at(day: int, hour: int = 0, month: int = 1) -> datetime:
    return datetime(2025, month, day, hour, tzinfo=UTC)


# Trader A before T: BTC held 10 h, an ETH short, a SOL long opened the day before T;
# after T: the SOL long closed after 48 h, a BTC long, a DOGE long.
A_FILLS = [
    fill(A, at(10, 10), "BTC", "open_long", 1, 100, 0),
    fill(A, at(10, 20), "BTC", "close_long", 1, 110, 1, pnl=10),
    fill(A, at(20), "ETH", "open_short", 2, 50, 0),
    fill(A, at(31), "SOL", "open_long", 10, 3, 0),
    fill(A, at(2, month=2), "SOL", "close_long", 10, 4, 10, pnl=10),
    fill(A, at(3, month=2), "BTC", "open_long", 2, 100, 0),
    fill(A, at(5, month=2), "DOGE", "open_long", 100, 0.6, 0),
]
# Trader B, all before T: one BTC long held 24 h.
B_FILLS = [
    fill(B, at(5), "BTC", "open_long", 1, 100, 0),
    fill(B, at(6), "BTC", "close_long", 1, 90, 1, pnl=-10),
]


def frames(fills: list[Fill]) -> dict[str, pd.DataFrame]:
    table = fills_to_frame(fills)
    return {str(t): normalize_fills_frame(g) for t, g in table.groupby("trader_id")}


def test_predictions_and_outcome_by_hand() -> None:
    f = frames(A_FILLS + B_FILLS)
    persona, _ = predict("persona", f, A, T)
    assert persona is not None
    assert persona.top3 == ["BTC", "ETH", "SOL"]
    assert persona.asset_shares["BTC"] == pytest.approx(210 / 340)
    assert persona.long_share == pytest.approx(130 / 230, abs=1e-4)  # long 100+30, short 100
    assert persona.median_notional == pytest.approx(100.0)  # of 100, 110, 100, 30
    assert persona.holding_hours == pytest.approx(10.0) and persona.bucket == "day"
    recent, _ = predict("recent7d", f, A, T)
    assert recent is not None and recent.top3 == ["SOL"] and recent.long_share == 1.0
    assert recent.median_notional == pytest.approx(30.0) and recent.holding_hours is None
    prior, pooled = predict("prior", f, A, T)
    assert not pooled and prior is not None
    assert prior.top3 == ["BTC"] and prior.long_share == 1.0
    assert prior.median_notional == pytest.approx(95.0) and prior.bucket == "swing"  # 24 h

    actual = outcome_after(f[A], t=T, horizon=timedelta(days=30))
    assert actual is not None and actual.fills == 3
    assert actual.asset_shares == pytest.approx({"SOL": 40 / 300, "BTC": 200 / 300, "DOGE": 0.2})
    assert actual.long_share == 1.0  # the SOL close opens nothing
    assert actual.median_notional == pytest.approx(60.0)  # of 40, 200, 60
    assert actual.holding_hours == pytest.approx(48.0)  # SOL lot opened before T
    assert actual.bucket == "swing"

    assert score_point(persona, actual) == pytest.approx(
        {
            "top3_asset_hit_rate": 240 / 300,
            "top3_asset_overlap": 2 / 3,
            "long_share_mae": 1 - 130 / 230,
            "median_notional_abs_log_error": math.log(100 / 60),
            "holding_bucket_accuracy": 0.0,
        },
        abs=1e-4,
    )
    scored = score_point(recent, actual)
    assert scored["top3_asset_hit_rate"] == pytest.approx(40 / 300)
    assert scored["median_notional_abs_log_error"] == pytest.approx(math.log(2))
    assert scored["long_share_mae"] == 0 and scored["holding_bucket_accuracy"] is None
    scored = score_point(prior, actual)
    assert scored["top3_asset_hit_rate"] == pytest.approx(200 / 300)
    assert scored["holding_bucket_accuracy"] == 1.0


def test_outcome_reads_the_fills_the_profile_reads() -> None:
    """A dust conversion (direction ``other``) is no trade of the trader's: the profile
    leaves it out of its shares and notional, and so must the outcome it is scored on."""
    dust = fill(A, at(4, month=2), "PURR", "other", 1_000, 0.2, 1_000)
    f = frames([*A_FILLS, dust])
    assert (
        "PURR"
        not in compute_persona_attributes(f[A], as_of=datetime(2025, 3, 1, tzinfo=UTC))[
            "preferred_assets"
        ].detail["shares"]
    )
    actual = outcome_after(f[A], t=T, horizon=timedelta(days=30))
    assert actual is not None and actual.fills == 3
    assert actual.asset_shares == pytest.approx({"SOL": 40 / 300, "BTC": 200 / 300, "DOGE": 0.2})
    assert actual.median_notional == pytest.approx(60.0)
    only_dust = frames([*A_FILLS[:4], dust])
    assert outcome_after(only_dust[A], t=T, horizon=timedelta(days=30)) is None


def test_a_close_by_dust_conversion_counts_in_the_outcomes_holding_time() -> None:
    """The profile times every close, a dust conversion's too (it moves the position):
    the outcome's holding time does the same, while its shares and size leave it out."""
    fills = [
        fill(A, at(10), "BTC", "open_long", 1, 100, 0),
        fill(A, at(2, month=2), "BTC", "other", 1, 100, 1),  # swept: closes the lot
        fill(A, at(3, month=2), "ETH", "open_long", 2, 50, 0),
    ]
    actual = outcome_after(frames(fills)[A], t=T, horizon=timedelta(days=30))
    assert actual is not None and actual.fills == 1 and actual.asset_shares == {"ETH": 1.0}
    assert actual.holding_hours == pytest.approx(23 * 24)  # Jan 10 -> Feb 2


def test_whole_evaluation_by_hand() -> None:
    # the file ends Feb 5 (A's DOGE fill): 4 days after T is the longest horizon in it
    result = evaluate_persona_validity(A_FILLS + B_FILLS, horizon_days=4)
    assert result["evaluation_points"] == 1 and result["prior_pooled_points"] == 0
    assert result["points"][0]["t"] == T.isoformat()  # B has no month start in its span
    persona = result["methods"]["persona"]
    assert persona["top3_asset_hit_rate"] == pytest.approx(0.8)
    assert persona["n_points"] == 1 and persona["coverage"] == 1.0
    assert result["methods"]["recent7d"]["n_per_metric"]["holding_bucket_accuracy"] == 0
    assert result["methods"]["recent7d"]["holding_bucket_accuracy"] is None
    assert result["methods"]["prior"]["holding_bucket_accuracy"] == 1.0


def test_single_trader_prior_is_the_pooled_own_history() -> None:
    result = evaluate_persona_validity(A_FILLS, horizon_days=4)
    assert result["prior_pooled_points"] == result["evaluation_points"] == 1
    assert result["methods"]["prior"] == result["methods"]["persona"]


def test_a_horizon_past_the_files_last_fill_is_not_scored() -> None:
    """A reviewer's point 97 minutes before the file's end was scored as 30 days."""
    result = evaluate_persona_validity(A_FILLS + B_FILLS, horizon_days=5)
    assert result["evaluation_points"] == 0
    assert result["cut_points"] == [{"trader_id": A, "t": T.isoformat()}]


def test_population_view_averages() -> None:
    views = [
        ProfileView({"BTC": 1.0}, 0.2, 10.0, 1.0),
        ProfileView({"BTC": 0.5, "ETH": 0.5}, 0.6, 1000.0, 100.0),
    ]
    avg = population_view(views)
    assert avg.asset_shares == pytest.approx({"BTC": 0.75, "ETH": 0.25})
    assert avg.long_share == pytest.approx(0.4)
    assert avg.median_notional == pytest.approx(100.0)  # geometric mean
    assert avg.holding_hours == pytest.approx(10.0)
    with pytest.raises(ValueError):
        population_view([])


def test_buckets_and_undefined_metrics() -> None:
    assert [holding_bucket(h) for h in (0.5, 1.0, 23.9, 24.0, 335.9, 336.0, None)] == [
        "scalper", "day", "day", "swing", "swing", "position", None,
    ]  # fmt: skip
    empty = ProfileView({}, None, None, None)
    actual = Outcome({"BTC": 1.0}, None, 5.0, None, fills=1)
    assert score_point(empty, actual) == dict.fromkeys(METRICS)


def test_evaluation_times() -> None:
    first, last = datetime(2024, 11, 11, 8, 28, tzinfo=UTC), datetime(2025, 2, 3, tzinfo=UTC)
    assert evaluation_times(first, last) == [
        datetime(2024, 12, 1, tzinfo=UTC),
        datetime(2025, 1, 1, tzinfo=UTC),
        datetime(2025, 2, 1, tzinfo=UTC),
    ]
    assert evaluation_times(first, last, every_days=30) == [
        first + timedelta(days=30),
        first + timedelta(days=60),
    ]
    assert evaluation_times(datetime(2025, 1, 1, tzinfo=UTC), last)[0].month == 2  # not t == first


@pytest.fixture(scope="module")
def real_fills(shared_data: Path) -> list[Fill]:
    return load_hyperliquid_fills(shared_data / "trades" / "hyperliquid_fills.csv")


def test_predictions_never_read_fills_after_t(real_fills: list[Fill]) -> None:
    t = datetime(2025, 3, 1, tzinfo=UTC)
    trader = "0x513b8629fe877bb581bf244e326a047b249c4ff1"
    change = {"symbol": "PEPE/USDC:USDC", "direction": "open_short", "side": "sell"}
    mutated = [
        f.model_copy(update={**change, "amount": f.amount * 7, "cost": f.cost * 7})
        if f.datetime > t
        else f
        for f in real_fills
    ]
    before, after = frames(real_fills), frames(mutated)
    for method in METHODS:
        assert predict(method, before, trader, t) == predict(method, after, trader, t)
    horizon = timedelta(days=30)
    assert outcome_after(before[trader], t=t, horizon=horizon) != outcome_after(
        after[trader], t=t, horizon=horizon
    )  # the mutation does change the target


def test_real_export_shape_and_ranges(real_fills: list[Fill]) -> None:
    result = evaluate_persona_validity(real_fills)
    assert len(result["per_trader"]) == 3 and result["evaluation_points"] >= 3
    first: dict[str, datetime] = {}
    for f in real_fills:
        first[f.trader_id] = min(first.get(f.trader_id, f.datetime), f.datetime)
    for point in result["points"]:
        assert datetime.fromisoformat(point["t"]) > first[point["trader_id"]]
        assert point["future_fills"] >= 1
    for method in METHODS:
        scores = result["methods"][method]
        assert scores["n_points"] <= result["evaluation_points"]
        for metric in METRICS:
            value = scores[metric]
            assert value is None or value >= 0
            if value is not None and metric != "median_notional_abs_log_error":
                assert value <= 1
    assert result["methods"]["persona"]["coverage"] == 1.0  # every point has a history


def test_cli_contract_and_single_trader_file(shared_data: Path, tmp_path: Path) -> None:
    source = shared_data / "trades" / "hyperliquid_fills.csv"
    runner = CliRunner()
    out = tmp_path / "validity.json"
    result = runner.invoke(app, ["eval", "persona", "--fills", str(source), "--out", str(out)])
    assert result.exit_code == 0, result.output
    data = json.loads(out.read_text())
    assert set(data["methods"]) == {"persona", "prior", "recent7d"}
    for scores in data["methods"].values():
        assert {"top3_asset_hit_rate", "long_share_mae"} <= set(scores)
    # the methods are averaged over different points: the common ones are printed too
    assert data["common_points"] < data["evaluation_points"]
    assert f"the {data['common_points']} points where all three predicted" in result.output
    assert all(p["t"] for p in data["cut_points"])  # the file's last month start is cut
    lines = source.read_text(encoding="utf-8").splitlines()
    one = [lines[0]] + [line for line in lines[1:] if line.startswith("0xae5eacaf")]
    single = tmp_path / "one_trader.csv"
    single.write_text("\n".join(one) + "\n", encoding="utf-8")
    out1 = tmp_path / "one.json"
    result = runner.invoke(app, ["eval", "persona", "--fills", str(single), "--out", str(out1)])
    assert result.exit_code == 0, result.output
    data = json.loads(out1.read_text())
    assert data["config"]["traders"] == ["0xae5eacaf9c6b9111fd53034a602c192a04e082ed"]
    assert data["evaluation_points"] >= 1
    assert data["prior_pooled_points"] == data["evaluation_points"]
    assert data["methods"]["prior"] == data["methods"]["persona"]


def test_damaged_file_is_one_line_and_exit_2(shared_data: Path, tmp_path: Path) -> None:
    rows = (shared_data / "trades" / "hyperliquid_fills.csv").read_text().splitlines()[:20]
    cells = rows[4].split(",")
    cells[6] = "32-13-2024 99:99"  # Timestamp IST
    rows[4] = ",".join(cells)
    damaged = tmp_path / "damaged.csv"
    damaged.write_text("\n".join(rows) + "\n")
    out = tmp_path / "never.json"
    result = subprocess.run(
        [str(SENTINEL), "eval", "persona", "--fills", str(damaged), "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
        env=dict(os.environ),
    )
    assert result.returncode == 2 and not out.exists()
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "damaged.csv" in lines[0] and "row 5" in lines[0]

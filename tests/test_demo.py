"""The demo smoke job end to end on the real data (hashing embedder to keep it fast)."""

from __future__ import annotations

import re
from io import StringIO
from pathlib import Path

import pandas as pd
import pytest
from rich.console import Console

from backend.config import EmbeddingSettings, StoreSettings, load_settings
from backend.data import fills_to_frame, load_hyperliquid_fills, load_ohlcv
from backend.demo import MARKET_SCOPE, daily_fill_notes, market_notes, run_demo


def test_market_notes_are_created_at_candle_close(shared_data: Path) -> None:
    daily = load_ohlcv(shared_data / "market" / "binance", "BTC/USDT", "1d").frame
    notes = market_notes(daily.loc["2022-05-01":"2022-05-31"], pair="BTC/USDT")
    luna = next(n for n in notes if "2022-05-09" in n.text)
    assert luna.created_at == pd.Timestamp("2022-05-10", tz="UTC")
    close = daily["close"]
    expected = close["2022-05-09"] / close["2022-05-08"] - 1
    assert f"day return {expected:+.1%}" in luna.text and expected < -0.1


def test_fill_notes_are_per_trader_and_sum_pnl(shared_data: Path) -> None:
    fills = fills_to_frame(load_hyperliquid_fills(shared_data / "trades" / "hyperliquid_fills.csv"))
    notes = daily_fill_notes(fills)
    assert {n.trader_id for n in notes} == set(fills["trader_id"].unique())
    total = sum(float(n.metadata["realized_pnl"]) for n in notes)
    assert abs(total - fills["realized_pnl"].fillna(0).sum()) < 1.0
    # the outcome in words, so that a text search for a loss finds the losing days
    for n in notes:
        pnl = float(n.metadata["realized_pnl"])
        word = "no realised PnL" if round(pnl) == 0 else "loss" if pnl < 0 else "gain"
        assert word in n.text and ("realised loss" in n.text) is (round(pnl) < 0)
    assert any("realised loss of" in n.text for n in notes)


@pytest.mark.slow
def test_run_demo_twice_is_idempotent(shared_data: Path, tmp_path: Path) -> None:
    settings = load_settings(
        store=StoreSettings(path=tmp_path / "khala"),
        embedding=EmbeddingSettings(provider="hashing"),
    )
    outputs = []
    for _ in range(2):
        buffer = StringIO()
        run_demo(settings, data_dir=shared_data, console=Console(file=buffer, width=200))
        outputs.append(buffer.getvalue())
    assert f"ingest {MARKET_SCOPE}" in outputs[0]
    assert ", 0 new," not in outputs[0].split("\n")[1]
    assert all(", 0 new," in line for line in outputs[1].splitlines() if "ingest" in line)
    assert "Celsius" in outputs[0]  # the June 2022 withdrawal halt is found as of 2022-06-14
    for out in outputs:  # the three tiers at the LUNA crash, within the token budget
        assert "HARD CONSTRAINTS (enforced in code): max_risk_per_trade=0.02" in out
        assert "### Market now" in out and "### Similar past episodes" in out
        found = re.search(r"prompt section (\d+) tokens \(budget 1500\)", out)
        assert found is not None and int(found.group(1)) <= 1500

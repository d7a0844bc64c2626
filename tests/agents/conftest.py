"""Fixtures of the agent tests: the real Hyperliquid fills, loaded once per session."""

from __future__ import annotations

from pathlib import Path

import pytest

from backend.data import Fill, load_hyperliquid_fills

ETH_SOL_SHORT = "0x083384f897ee0f19899168e3b1bec365f52a9012"
BTC_LONG_HF = "0x513b8629fe877bb581bf244e326a047b249c4ff1"
ALTS_SPOT = "0xae5eacaf9c6b9111fd53034a602c192a04e082ed"
TRADERS = (ETH_SOL_SHORT, BTC_LONG_HF, ALTS_SPOT)


@pytest.fixture(scope="session")
def fills_path(shared_data: Path) -> Path:
    return shared_data / "trades" / "hyperliquid_fills.csv"


@pytest.fixture(scope="session")
def hl_fills(fills_path: Path) -> list[Fill]:
    """All fills of the export, time-sorted (the loader's order)."""
    return load_hyperliquid_fills(fills_path)


@pytest.fixture(scope="session")
def by_trader(hl_fills: list[Fill]) -> dict[str, list[Fill]]:
    out: dict[str, list[Fill]] = {t: [] for t in TRADERS}
    for fill in hl_fills:
        out[fill.trader_id].append(fill)
    return out

"""``backend.types``: pair spellings a user types become one ccxt symbol."""

from __future__ import annotations

import pytest

from backend.types import base_asset, normalize_pair


@pytest.mark.parametrize(
    ("typed", "symbol"),
    [
        ("BTC/USDT", "BTC/USDT"),
        ("btc/usdt", "BTC/USDT"),
        ("BTC_USDT", "BTC/USDT"),  # freqtrade's file stem
        ("BTC-USDT", "BTC/USDT"),
        ("BTCUSDT", "BTC/USDT"),
        (" BTC / USDT ", "BTC/USDT"),
        ("ethbtc", "ETH/BTC"),
        ("eth/usdc:usdc", "ETH/USDC:USDC"),
        ("kPEPE/USDC:USDC", "kPEPE/USDC:USDC"),  # mixed case is kept
    ],
)
def test_normalize_pair(typed: str, symbol: str) -> None:
    assert normalize_pair(typed) == symbol


@pytest.mark.parametrize("typed", ["BTC", "", "/USDT", "BTC/", "BTC//USDT", "A_B_C"])
def test_normalize_pair_refuses_what_is_not_a_pair(typed: str) -> None:
    with pytest.raises(ValueError, match="is not a pair"):
        normalize_pair(typed)


def test_base_asset_of_every_spelling() -> None:
    # a separator other than "/" once gave "DOGE_": the memecoin rule then missed DOGE
    spellings = ("DOGE/USDT", "DOGE_USDT", "DOGE-USDT", "DOGEUSDT", "DOGE/USDC:USDC", "DOGE")
    assert {base_asset(s) for s in spellings} == {"DOGE"}
    assert base_asset("@107") == "@107" and base_asset("kPEPE/USDC:USDC") == "kPEPE"

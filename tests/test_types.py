"""``backend.types``: pair spellings a user types become one ccxt symbol."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from backend.types import base_asset, normalize_pair, parse_utc, quote_asset, to_utc


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


def test_quote_asset_of_a_ccxt_symbol() -> None:
    assert quote_asset("BTC/USDT") == "USDT" and quote_asset("ETH/USDC:USDC") == "USDC"
    assert quote_asset("BTCUSDT") == ""  # not a unified symbol: normalise it first


def test_a_time_outside_the_calendar_once_in_utc_is_a_value_error() -> None:
    """``0001-01-01T00:00+05:00`` is a valid ISO-8601 time whose UTC time is before year 1:
    Python's ``OverflowError`` had ended the CLI as an internal error (exit 1)."""
    for text in ("0001-01-01T00:00:00+05:00", "9999-12-31T23:59:59-05:00"):
        with pytest.raises(ValueError, match=r"outside the years 1\.\.9999 in UTC"):
            parse_utc(text)
        with pytest.raises(ValueError, match=r"outside the years 1\.\.9999 in UTC"):
            to_utc(datetime.fromisoformat(text))
    assert parse_utc("9999-12-31T23:59:59Z") == datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC)

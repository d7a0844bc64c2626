"""The one ticker vocabulary of what traders write (:mod:`backend.text.tickers`)."""

from __future__ import annotations

import pytest

from backend.text.tickers import mentioned_tickers, parse_tickers


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("I got liquidated on Solana last week", ["SOL"]),  # a coin name, any case
        ("keep me out of leverage on btc", ["BTC"]),
        ("Bitcoin and ETH, then SOL, then bitcoin again", ["BTC", "ETH", "SOL"]),
        ("ARB pumped", ["ARB"]),  # a known ticker as written
        ("OK, the USA is closed, I read an op-ed", []),  # upper-case words, "op" in "op-ed"
        ("a solid parasol", []),  # coin names only as whole words
        ("no FOMO on PEPE", ["PEPE"]),
        ("chasing the hype on BTC", ["BTC"]),  # word-like coin names only in upper case
        ("an avalanche of sells hit ETH", ["ETH"]),
        ("Ada got liquidated on BTC", ["BTC"]),
        ("HYPE pumped, then ADA", ["HYPE", "ADA"]),
        ("my Sui long, then Matic", ["SUI", "MATIC"]),
    ],
)
def test_mentioned_tickers(text: str, expected: list[str]) -> None:
    assert mentioned_tickers(text) == expected


def test_a_list_and_a_message_read_the_same_coin_names() -> None:
    assert parse_tickers("Solana and bitcoin") == ["SOL", "BTC"]
    assert mentioned_tickers("Solana and bitcoin") == ["SOL", "BTC"]

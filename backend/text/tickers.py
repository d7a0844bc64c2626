"""The ticker vocabulary of what traders write: coin names, the words that are not
tickers, the pattern of a list of tickers and :func:`parse_tickers` (the persona's text
rules), and :func:`mentioned_tickers` (the assets a chat message names: conversation
events). One vocabulary, so a message and a note read the same coins."""

from __future__ import annotations

import re

__all__ = [
    "COIN_NAMES",
    "KNOWN_TICKERS",
    "LIST",
    "SEP",
    "TICKER",
    "mentioned_tickers",
    "parse_tickers",
]

COIN_NAMES: dict[str, str] = {
    "bitcoin": "BTC", "btc": "BTC", "ethereum": "ETH", "ether": "ETH", "eth": "ETH",
    "solana": "SOL", "sol": "SOL", "dogecoin": "DOGE", "doge": "DOGE", "ripple": "XRP",
    "xrp": "XRP", "cardano": "ADA", "ada": "ADA", "avalanche": "AVAX", "avax": "AVAX",
    "chainlink": "LINK", "polkadot": "DOT", "litecoin": "LTC", "ltc": "LTC", "bnb": "BNB",
    "shiba": "SHIB", "shib": "SHIB", "pepe": "PEPE", "hyperliquid": "HYPE", "hype": "HYPE",
    "sui": "SUI", "matic": "MATIC", "polygon": "MATIC", "arbitrum": "ARB",
}  # fmt: skip
"""Coin names (matched in any case) -> ticker; other tickers must be written in upper case."""

KNOWN_TICKERS = frozenset(COIN_NAMES.values()) | {"OP"}
"""Tickers :func:`mentioned_tickers` finds in free text, where any upper-case word could
be one ("OK", "USA"): the coin names' tickers and a few more."""

_WORDS = frozenset({"hype", "avalanche", "ripple", "ada"})
"""Coin names that are also English words or names ("chasing the hype", "an avalanche of
sells", "Ada said"): in free text they count only as written in upper case."""

_NOT_TICKERS = frozenset({
    "AND", "OR", "NOR", "THE", "ALL", "NO", "NOT", "PERPS", "SPOT", "MY", "FOMO", "FUD", "ATH",
    "DCA", "PNL", "ROI", "YOLO", "HODL", "IMO", "LOL", "TP", "SL", "ETF", "OTC", "KYC", "AI",
})  # fmt: skip
"""Upper-case words of traders' talk that are not tickers ("no FOMO")."""
_NAMES = "|".join(sorted(COIN_NAMES, key=len, reverse=True))
TICKER = rf"(?>[A-Z][A-Z0-9]{{1,9}}|(?i:{_NAMES}))\b"
"""Atomic: an upper-case coin name ("BTC") matches one way only, else a list of n of them
followed by what a rule needs backtracked 2^n times (22 coins: 19 s)."""
SEP = r"\s*(?:,(?:\s*(?i:and|or)\b)?|/|&|(?i:\band\b|\bor\b|\bnor\b))\s*"
LIST = rf"({TICKER}(?:{SEP}{TICKER})*)"
"""A list of tickers (one group): ``BTC, eth and Solana``."""


def parse_tickers(raw: str) -> list[str]:
    """Upper-case tickers in a list like ``"BTC, eth and Solana"`` (known names mapped,
    unknown lower-case words dropped), in order, without repeats."""
    out: list[str] = []
    for token in re.split(SEP, raw):
        token = token.strip()
        ticker = COIN_NAMES.get(token.lower(), token if token.isupper() else "")
        valid = re.fullmatch(r"[A-Z0-9@]{2,10}", ticker) is not None
        if valid and ticker not in _NOT_TICKERS and ticker not in out:
            out.append(ticker)
    return out


def mentioned_tickers(text: str) -> list[str]:
    """The :data:`KNOWN_TICKERS` ``text`` names, in order, without repeats: a ticker as
    written in upper case ("SOL"; not "op" in "op-ed") or a coin name in any case
    ("solana", "Bitcoin"), but the word-like names of ``_WORDS`` only in upper case
    ("chasing the hype on BTC" names BTC only)."""
    out: list[str] = []
    for match in re.finditer(rf"\b{TICKER}", text):
        word = match.group(0)
        if word.isupper() and word in KNOWN_TICKERS:
            ticker = word
        elif word.lower() not in _WORDS or word.isupper():
            ticker = COIN_NAMES.get(word.lower(), "")
        else:
            continue
        if ticker in KNOWN_TICKERS and ticker not in out:
            out.append(ticker)
    return out

"""The types every package shares, defined once: the frozen base model, UTC time, assets.

Nothing here imports another ``backend`` module, so every layer may import it.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, ValidationError

__all__ = [
    "END_OF_TIME",
    "EPOCH",
    "MAX_SIZE",
    "Action",
    "FrozenModel",
    "base_asset",
    "first_problem",
    "normalize_pair",
    "parse_utc",
    "quote_asset",
    "to_utc",
]

Action = Literal["buy", "sell", "hold", "close"]
"""What a decision does: ``buy`` targets a long position of its size, ``sell`` a short of
its size, ``close`` goes flat, ``hold`` keeps the current position."""

MAX_SIZE = 10.0
"""The largest size (target |exposure|, fraction of equity: 10 = 10x leverage) a decision,
a decision episode's action or ``agent.max_exposure`` may carry: one bound for all."""

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
"""The Unix epoch, UTC: exchange millisecond and store microsecond stamps count from it."""

END_OF_TIME = datetime(9999, 12, 31, tzinfo=UTC)
"""The fence of a writer's read: every record stored, whatever its time (a write is an
upsert over all of them)."""


class FrozenModel(BaseModel):
    """The base of the project's value models: immutable, unknown fields rejected."""

    model_config = ConfigDict(frozen=True, extra="forbid")


def parse_utc(text: str) -> datetime:
    """A time as a user types it: ISO-8601 (``2024-01-01``, ``2024-01-01T09:30``,
    ``...Z``, ``...+02:00``), naive read as UTC, returned in UTC. Raises ``ValueError``
    naming the text for anything else."""
    try:
        parsed = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"not an ISO-8601 date/time: {text!r}") from None
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else to_utc(parsed)


def to_utc(value: datetime) -> datetime:
    """Return ``value`` in UTC. Raises ``ValueError`` for a naive datetime (ambiguous)
    and for one whose UTC time falls outside the years 1..9999 (``0001-01-01T00:00+05:00``:
    Python's ``OverflowError`` had ended the CLI as an internal error). Use as a
    pydantic validator (``field_validator("as_of")(to_utc)``) or directly."""
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError("datetime must be timezone-aware (UTC)")
    try:
        return value.astimezone(UTC)
    except OverflowError:
        raise ValueError(f"{value.isoformat()} is outside the years 1..9999 in UTC") from None


_STABLE_QUOTES = ("FDUSD", "USDT", "USDC", "BUSD", "TUSD")
"""Quote currencies recognised at the end of an exchange's pair id without a separator
(Binance's ``BTCUSDT``); the longest is tried first."""
_OTHER_QUOTES = ("USD", "EUR", "BTC", "ETH", "BNB")
"""Further quotes of a pair given without a separator (``ETHBTC``), tried after the
stablecoins: they apply when normalising a pair a user typed, not to a bare coin."""
_SEPARATORS = ("/", "_", "-")


def _split_pair(symbol: str, quotes: tuple[str, ...]) -> tuple[str, str, str] | None:
    """``(base, quote, settle)`` of a pair (settle ``""`` for spot), case kept, or None
    for a bare coin or an id it cannot split."""
    text = "".join(symbol.split())
    text, _, settle = text.partition(":")
    for sep in _SEPARATORS:
        if sep in text:
            base, _, quote = text.partition(sep)
            return (base, quote, settle) if base and quote and sep not in quote else None
    for quote in quotes:
        if text.upper().endswith(quote) and len(text) > len(quote):
            return text[: -len(quote)], text[-len(quote) :], settle
    return None


def base_asset(symbol: str) -> str:
    """Base asset of a ccxt symbol, case kept: ``BTC/USDT`` -> ``BTC``, ``ETH/USDC:USDC``
    -> ``ETH``, ``kPEPE/USDC:USDC`` -> ``kPEPE``; freqtrade's and exchanges' spellings
    too (``DOGE_USDT``, ``BTC-USDT``); an exchange pair id without a separator that ends
    in a stablecoin quote (:data:`_STABLE_QUOTES`) loses it (``DOGEUSDT`` -> ``DOGE``); a
    bare coin and a Hyperliquid spot pair id (``@107``) stay as they are. Compare assets
    case-insensitively (``.upper()``)."""
    if symbol.startswith("@"):
        return symbol
    parts = _split_pair(symbol, _STABLE_QUOTES)
    return parts[0] if parts is not None else "".join(symbol.split()).partition(":")[0]


def quote_asset(symbol: str) -> str:
    """Quote currency of a ccxt unified symbol, the unit of its prices, P&L and fees:
    ``BTC/USDT`` -> ``USDT``, ``ETH/USDC:USDC`` -> ``USDC``; ``""`` for text with no
    ``/`` (normalise it first: :func:`normalize_pair`)."""
    _, slash, rest = symbol.partition("/")
    return rest.partition(":")[0].strip() if slash else ""


def normalize_pair(symbol: str) -> str:
    """The ccxt unified symbol of a pair as a user may type it: ``btc/usdt``, ``BTC_USDT``
    (freqtrade's file stem), ``BTC-USDT``, ``BTCUSDT``, ``BTC / USDT`` -> ``BTC/USDT``;
    ``ETHBTC`` -> ``ETH/BTC``; a settle currency is kept (``eth/usdc:usdc`` ->
    ``ETH/USDC:USDC``). Text with no upper-case letter is upper-cased, else its case is
    kept (``kPEPE/USDC:USDC``). Quotes recognised without a separator: the stablecoins of
    :data:`_STABLE_QUOTES`, then :data:`_OTHER_QUOTES`.

    Raises ``ValueError`` naming the text when it is not a pair (a bare coin, an empty
    side, two separators)."""
    text = symbol if any(c.isupper() for c in symbol) else symbol.upper()
    parts = _split_pair(text, _STABLE_QUOTES + _OTHER_QUOTES)
    if parts is None:
        raise ValueError(f"{symbol!r} is not a pair (expected BASE/QUOTE, e.g. BTC/USDT)")
    base, quote, settle = parts
    return f"{base}/{quote}" + (f":{settle}" if settle else "")


def first_problem(exc: ValidationError, *, whole: str = "value") -> tuple[str, str]:
    """``(where, message)`` of ``exc``'s first error, never its input (a value may be a
    secret): ``where`` is the dotted field path (``whole`` when the error is the whole
    value's), for the one-line errors that name a file, line or tool and the field."""
    first = exc.errors(include_input=False, include_url=False)[0]
    message = first["msg"].removeprefix("Value error, ")  # pydantic's, for a validator's own
    return ".".join(str(p) for p in first["loc"]) or whole, message

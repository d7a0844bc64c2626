"""The types every package shares, defined once: the frozen base model, UTC time, assets.

Nothing here imports another ``backend`` module, so every layer may import it.
"""

from __future__ import annotations

from datetime import UTC, datetime

from pydantic import BaseModel, ConfigDict, ValidationError

__all__ = ["END_OF_TIME", "FrozenModel", "base_asset", "first_problem", "to_utc"]

END_OF_TIME = datetime(9999, 12, 31, tzinfo=UTC)
"""The fence of a writer's read: every record stored, whatever its time (a write is an
upsert over all of them)."""


class FrozenModel(BaseModel):
    """The base of the project's value models: immutable, unknown fields rejected."""

    model_config = ConfigDict(frozen=True, extra="forbid")


def to_utc(value: datetime) -> datetime:
    """Return ``value`` in UTC. Raises ``ValueError`` for a naive datetime (ambiguous).
    Use as a pydantic validator (``field_validator("as_of")(to_utc)``) or directly."""
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError("datetime must be timezone-aware (UTC)")
    return value.astimezone(UTC)


_STABLE_QUOTES = ("FDUSD", "USDT", "USDC", "BUSD", "TUSD")
"""Quote currencies recognised at the end of an exchange's pair id without a separator
(Binance's ``BTCUSDT``); the longest is tried first."""


def base_asset(symbol: str) -> str:
    """Base asset of a ccxt symbol, case kept: ``BTC/USDT`` -> ``BTC``, ``ETH/USDC:USDC``
    -> ``ETH``, ``kPEPE/USDC:USDC`` -> ``kPEPE``; an exchange pair id without a separator
    that ends in a stablecoin quote (:data:`_STABLE_QUOTES`) loses it (``DOGEUSDT`` ->
    ``DOGE``); a bare coin and a Hyperliquid spot pair id (``@107``) stay as they are.
    Compare assets case-insensitively (``.upper()``)."""
    if symbol.startswith("@"):
        return symbol
    base = symbol.split("/", 1)[0].split(":", 1)[0].strip()
    if "/" not in symbol:
        for quote in _STABLE_QUOTES:
            if base.upper().endswith(quote) and len(base) > len(quote):
                return base[: -len(quote)]
    return base


def first_problem(exc: ValidationError, *, whole: str = "value") -> tuple[str, str]:
    """``(where, message)`` of ``exc``'s first error, never its input (a value may be a
    secret): ``where`` is the dotted field path (``whole`` when the error is the whole
    value's), for the one-line errors that name a file, line or tool and the field."""
    first = exc.errors(include_input=False, include_url=False)[0]
    return ".".join(str(p) for p in first["loc"]) or whole, first["msg"]

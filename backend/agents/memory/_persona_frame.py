"""The fills frame the persona features read (:mod:`._persona_features`): the columns it
needs (:data:`REQUIRED_COLUMNS`) and :func:`normalize_fills_frame`, which fixes their
dtypes and adds the UTC ``datetime`` and the fee columns."""

from __future__ import annotations

import numpy as np
import pandas as pd

from backend.agents.memory._persona_positions import base_assets, chain_ties
from backend.errors import DataError

__all__ = ["REQUIRED_COLUMNS", "normalize_fills_frame"]

REQUIRED_COLUMNS: tuple[str, ...] = (
    "id",
    "order",
    "timestamp",
    "symbol",
    "side",
    "price",
    "amount",
    "cost",
    "fee_cost",
    "realized_pnl",
    "direction",
    "start_position",
)


def _base_fee(frame: pd.DataFrame, out: pd.DataFrame) -> pd.Series:
    """Per fill, the fee paid in the coin bought (base units; else 0): ``base_fee`` when
    ``frame`` has it (a stored ledger), else ``fee_cost`` where ``fee_currency`` is the
    symbol's base asset (ccxt's fee structure; a Hyperliquid spot buy pays its fee in
    the coin received)."""
    if "base_fee" in frame.columns:
        return pd.to_numeric(frame["base_fee"], errors="coerce").fillna(0.0).astype("float64")
    if "fee_currency" not in frame.columns:
        return pd.Series(0.0, index=out.index)
    bases = base_assets(out["symbol"])
    in_base = [
        currency is not None and currency == base
        for currency, base in zip(frame["fee_currency"], bases, strict=True)
    ]
    fee = out["fee_cost"].fillna(0.0).to_numpy(dtype=np.float64)
    return pd.Series(np.where(in_base, fee, 0.0), index=out.index)


def normalize_fills_frame(frame: pd.DataFrame, *, source: str = "fills frame") -> pd.DataFrame:
    """The :data:`REQUIRED_COLUMNS` of ``frame`` with fixed dtypes plus a UTC ``datetime``
    from ``timestamp`` (ms), ``base_fee`` (the fee taken from the coin bought, base
    units: :func:`_base_fee`) and ``fee_quote`` (the fee in the quote currency: ``base_fee
    x price`` for those, else ``fee_cost``), ``order_key`` (an int per order id, a fill
    without one its own: what the persona counts as a trade), stably
    sorted by time, fresh index. Raises
    :class:`DataError` (naming ``source``) if a column is missing."""
    missing = [c for c in REQUIRED_COLUMNS if c not in frame.columns]
    if missing:
        raise DataError(f"missing columns {', '.join(missing)}", path=source)
    out = frame.loc[:, list(REQUIRED_COLUMNS)].copy()
    out["id"] = out["id"].astype(str)
    out["order"] = out["order"].astype(object).where(out["order"].notna(), None)
    out["timestamp"] = out["timestamp"].astype("int64")
    for column in ("symbol", "side", "direction"):
        out[column] = out[column].astype(str)
    for column in ("price", "amount", "cost", "fee_cost", "realized_pnl", "start_position"):
        out[column] = pd.to_numeric(out[column], errors="coerce").astype("float64")
    out["base_fee"] = _base_fee(frame, out)
    fee = out["fee_cost"].fillna(0.0)
    out["fee_quote"] = fee.where(out["base_fee"] == 0, out["base_fee"] * out["price"])
    out["datetime"] = pd.to_datetime(out["timestamp"], unit="ms", utc=True)
    # what counts as one trade: one Hyperliquid order fills up to hundreds of times (int
    # codes: 12 counts of a profile over 12k string keys had cost 13 ms, ~30% of it)
    keys = out["order"].where(out["order"].notna(), "fill:" + out["id"])
    out["order_key"] = pd.factorize(keys)[0].astype("int64")
    return chain_ties(out.sort_values("timestamp", kind="stable").reset_index(drop=True))

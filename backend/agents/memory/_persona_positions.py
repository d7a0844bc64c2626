"""Position reconstruction from fills: opening notional and FIFO holding times.

Fills as normalised by :func:`backend.agents.memory._persona_features.normalize_fills_frame`
(one trader, time order). Quantities in base units, notional in quote currency (USDC),
times in ms since the epoch (UTC).
"""

from __future__ import annotations

import math
from collections import deque

import numpy as np
import pandas as pd

from backend.types import base_asset

__all__ = [
    "LONG_OPENING",
    "SHORT_OPENING",
    "asset_shares",
    "base_assets",
    "chain_ties",
    "holding_rows",
    "holding_samples",
    "opening_notional",
    "traded_fills",
]

LONG_OPENING = ("open_long", "buy")
SHORT_OPENING = ("open_short",)


def traded_fills(fills: pd.DataFrame) -> pd.DataFrame:
    """The fills the trader made: every row but those of direction ``other`` (Hyperliquid's
    "Spot Dust Conversion", an automatic sweep of a balance's dust, which still moves
    positions and so still counts for :func:`holding_samples`). Index reset."""
    return fills.loc[fills["direction"] != "other"].reset_index(drop=True)


def asset_shares(fills: pd.DataFrame) -> dict[str, float]:
    """Each base asset's share (0..1, summing to 1) of the absolute notional (quote
    currency) of ``fills``, largest first (ties by name); empty when the notional is 0."""
    notional = fills["cost"].abs().groupby(base_assets(fills["symbol"])).sum()
    total = float(notional.sum())
    if total <= 0:
        return {}
    ranked = sorted(notional.items(), key=lambda kv: (-float(kv[1]), str(kv[0])))
    return {str(asset): float(v) / total for asset, v in ranked}


def base_assets(symbols: pd.Series) -> pd.Series:
    """:func:`~backend.types.base_asset` of each symbol, parsed once per distinct symbol
    (per fill it was ~19% of a persona's computation at 12k fills)."""
    return symbols.map({s: base_asset(s) for s in symbols.unique()})


def opening_notional(fills: pd.DataFrame) -> tuple[pd.Series, pd.Series]:
    """(long, short) opening notional per fill: ``open_long``/spot ``buy`` -> long,
    ``open_short`` -> short; a flip opens only the part beyond its start position."""
    cost = fills["cost"].abs()
    direction = fills["direction"]
    long_ = cost.where(direction.isin(LONG_OPENING), 0.0)
    short = cost.where(direction.isin(SHORT_OPENING), 0.0)
    start = fills["start_position"].abs().fillna(0.0)
    beyond = ((fills["amount"] - start).clip(lower=0.0) / fills["amount"]).fillna(0.0)
    long_ = long_ + (cost * beyond).where(direction == "flip_short_to_long", 0.0)
    short = short + (cost * beyond).where(direction == "flip_long_to_short", 0.0)
    return long_, short


def holding_samples(fills: pd.DataFrame) -> tuple[list[float], list[str], int]:
    """FIFO holding times: ``(hours per timed closing fill, their ids, untimed closes)``.

    Per symbol, in order, opening quantity becomes lots stamped with the fill time; a fill
    against the position consumes the oldest lots first and its sample is the quantity-
    weighted mean age (hours) of what it closed. When a fill's ``start_position``
    disagrees with the reconstructed position (the export is a subset; spot balances move
    by transfers), only the difference is reconciled (:func:`_reconcile`): more of the
    same side is a lot of unknown age after the others, less is taken from the oldest
    lots (FIFO, as a close would), and a position that changed side starts over as one
    lot of unknown age. This assumes a gap hides a change in one direction (the real
    export's gaps look like fills missing inside one sweep of closes); a gap that hid
    trades on both sides (a sell, then a larger buy) gets its ages from the wrong lots.
    A close that consumes any unknown-age quantity is counted as untimed. (Resetting the
    whole inventory at every gap had left 748 of 0x513b's 5,515 closes untimed, the ones
    closing the oldest lots, and biased the median down: 2.167 h for 2.65 h.)
    """
    hours, rows, untimed = holding_rows(fills)
    ids = fills["id"].tolist()
    return hours, [str(ids[i]) for i in rows], untimed


def holding_rows(fills: pd.DataFrame) -> tuple[list[float], list[int], int]:
    """:func:`holding_samples` with the closing fills as row positions in ``fills``
    (``iloc``) instead of ids. The loop reads plain lists: iterating the pandas 3 string
    columns element by element and matching ids back with ``isin`` (twice) had made a
    persona's computation at 0x513b's 12k fills 91 ms; it is 29 ms so (measured
    2026-12-07, ``docs/benchmarks.md``)."""
    hours: list[float] = []
    rows: list[int] = []
    untimed = 0
    columns = ("timestamp", "side", "amount", "start_position", "base_fee")
    stamp, sides, amounts, starts, fees = (fills[c].tolist() for c in columns)
    for positions in fills.groupby("symbol", sort=False).indices.values():
        lots: deque[list[float]] = deque()  # [signed qty, open ms or NaN]
        pos = 0.0
        for row in np.asarray(positions, dtype=np.int64).tolist():
            ts, side, amount, start = stamp[row], sides[row], amounts[row], starts[row]
            base_fee = fees[row]
            # a buy whose fee is taken from the coin bought adds amount - fee
            signed = float(amount) - float(base_fee) if side == "buy" else -float(amount)
            tol = 1e-6 * max(abs(pos), abs(float(amount)), 1e-6)
            if not math.isnan(start) and abs(pos - float(start)) > tol:
                lots = _reconcile(lots, pos, float(start), tol)
                pos = float(start)
            if abs(pos) > tol and (pos > 0) != (signed > 0):
                closing = min(abs(signed), abs(pos))
                left, age_qty, timed_qty, unknown = closing, 0.0, 0.0, False
                while left > tol and lots:
                    lot = lots[0]
                    take = min(abs(lot[0]), left)
                    if math.isnan(lot[1]):
                        unknown = True
                    else:
                        age_qty += take * (float(ts) - lot[1])
                        timed_qty += take
                    lot[0] -= math.copysign(take, lot[0])
                    left -= take
                    if abs(lot[0]) <= tol:
                        lots.popleft()
                if unknown or timed_qty <= 0:
                    untimed += 1
                else:
                    hours.append(age_qty / timed_qty / 3_600_000.0)
                    rows.append(row)
                pos += math.copysign(closing, signed)
                rest = abs(signed) - closing
                if abs(pos) <= tol:
                    pos, lots = 0.0, deque()
                if rest > tol:
                    lots.append([math.copysign(rest, signed), float(ts)])
                    pos += math.copysign(rest, signed)
            else:
                lots.append([signed, float(ts)])
                pos += signed
    return hours, rows, untimed


def _reconcile(
    lots: deque[list[float]], pos: float, start: float, tol: float
) -> deque[list[float]]:
    """The lots of a position rebuilt as ``pos`` that the export says is ``start``
    (:func:`holding_samples`)."""
    if abs(start) <= tol:
        return deque()
    if abs(pos) <= tol or (pos > 0) != (start > 0):
        return deque([[start, math.nan]])
    if abs(start) > abs(pos):
        lots.append([start - pos, math.nan])
        return lots
    left = abs(pos) - abs(start)
    while left > tol and lots:
        lot = lots[0]
        take = min(abs(lot[0]), left)
        lot[0] -= math.copysign(take, lot[0])
        left -= take
        if abs(lot[0]) <= tol:
            lots.popleft()
    return lots


def chain_ties(fills: pd.DataFrame) -> pd.DataFrame:
    """``fills`` (sorted by time) with the fills of one symbol at one millisecond put in
    the order their ``start_position`` chains (each starts where the one before ended).

    One order filled against several makers is several fills at one millisecond, and a
    ccxt export orders them by trade id, which Hyperliquid draws at random: read out of
    order, every start position disagreed with the position rebuilt, each reset the
    inventory to a lot of unknown age, and the holding period and style of all three
    traders were lost (a reviewer's shuffle of the real fills within their transaction).
    A tie group whose chain cannot be followed keeps its given order from there on."""
    ts = fills["timestamp"].to_numpy()
    cut = np.flatnonzero(ts[1:] != ts[:-1]) + 1
    firsts, stops = np.concatenate([[0], cut]), np.concatenate([cut, [len(ts)]])
    tied = np.flatnonzero(stops - firsts > 1)
    if tied.size == 0:
        return fills
    symbols = fills["symbol"].to_numpy()
    start = fills["start_position"].to_numpy(dtype=float)
    amount = fills["amount"].to_numpy(dtype=float)
    signed = np.where(fills["side"].to_numpy() == "buy", amount - fills["base_fee"], -amount)
    before = pd.Series(np.arange(len(ts))).groupby(symbols).shift(1).to_numpy()
    order = np.arange(len(ts))
    chained: dict[int, float] = {}  # the last slot of a reordered run -> its position after
    for g in tied:
        i, j = int(firsts[g]), int(stops[g])
        for symbol in dict.fromkeys(symbols[i:j]):
            slots = [k for k in range(i, j) if symbols[k] == symbol]
            if len(slots) < 2 or np.isnan(start[slots]).any():
                continue
            prev = before[slots[0]]
            at = (
                None
                if np.isnan(prev)
                else chained.get(int(prev), start[int(prev)] + signed[int(prev)])
            )
            rows = _chained(slots, start, signed, at)
            order[slots] = rows
            chained[slots[-1]] = start[rows[-1]] + signed[rows[-1]]
    return fills.iloc[order].reset_index(drop=True)


def _chained(rows: list[int], start: np.ndarray, signed: np.ndarray, at: float | None) -> list[int]:
    """``rows`` in chain order from position ``at``, else from the row no other row of
    the group ends at (the first of a chain)."""
    left, out = list(rows), list[int]()
    ends = [start[k] + signed[k] for k in rows]

    def near(a: float, b: float) -> bool:  # float noise only: 1e-6 of a 20 BTC position
        # (2e-5) was wider than a 1e-5 BTC fill, and a newest-first export chained wrong
        return bool(abs(a - b) <= 1e-9 * max(abs(a), abs(b), 1e-6))

    while left:
        nxt = None if at is None else next((k for k in left if near(start[k], at)), None)
        if nxt is None:  # a new chain (a transfer moved the position): where none ends
            nxt = next((k for k in left if not any(near(start[k], e) for e in ends)), None)
        if nxt is None:  # no chain to follow: the rest in the given order
            return out + left
        out.append(nxt)
        left.remove(nxt)
        at = start[nxt] + signed[nxt]
    return out

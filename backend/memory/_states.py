"""Episodes as points of market state: "what happened the last time things looked like
this", answered by nearest neighbours over the causal features of the bar, not by the
text of the descriptions (method of analogues, Lorenz 1969; nearest-neighbour forecasts
of asset returns, Fernández-Rodríguez, Sosvilla-Rivero & Andrada-Félix 1999).

Every episode written by the detectors and the decision loop carries ``state``: the
feature values of its bar (:data:`backend.memory.detectors.STATE_COLUMNS`, all computed
from candles at or before the bar). :class:`StateIndex` holds, for one trader and
symbol, one row per (episode, outcome) pair: the outcome's market return over its
horizon and the time it became known, so a query at ``as_of`` only sees outcomes
recorded at or before ``as_of`` (an outcome later replaced by another is a second row,
valid from its own time on).

Distance: Euclidean over :data:`STATE_FEATURES`, each scaled by its robust spread over
the candidates visible at the query (median absolute deviation x 1.4826, the normal
consistency factor); ``similarity = exp(-d^2 / (2 * n_features))`` in (0, 1].
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from backend.memory.detectors import STATE_COLUMNS
from backend.memory.models import Episode

__all__ = ["STATE_FEATURES", "StateIndex", "StateNeighbour"]

STATE_FEATURES: tuple[str, ...] = tuple(
    name for name in STATE_COLUMNS if name not in ("close", "ret_bar", "volume_shock")
)
"""Scale-free features the neighbours are matched on: 1-day and 7-day returns, 1-day and
30-day realised vol (annualised), their ratio, drawdown from the 30-day high and the EMA
spread (fractions). Price level, bar return and volume shock are left out: the first is
not comparable across years, the other two are one-bar noise."""

_MAD_TO_SD = 1.4826
_MIN_SCALE = 1e-9


@dataclass(frozen=True)
class StateNeighbour:
    """One neighbour: the episode id, its similarity (0..1], the market return over the
    outcome horizon (fraction) and the horizon label (``"4d"``)."""

    episode_id: str
    similarity: float
    market_return: float
    horizon: str


@dataclass(frozen=True)
class _Row:
    episode_id: str
    created_ts: float
    valid_from: float
    valid_to: float
    market_return: float
    horizon: str
    values: tuple[float, ...]


class StateIndex:
    """The state points of one trader's episodes on one symbol (module doc).

    Build with :meth:`from_rows`; query with :meth:`nearest`. Immutable: a new write to
    the store means a new index (the caller validates it against the store's change
    counter)."""

    def __init__(self, rows: Iterable[_Row]) -> None:
        kept = list(rows)
        self._ids = [r.episode_id for r in kept]
        self._horizons = np.array([r.horizon for r in kept], dtype=object)
        self._created = np.array([r.created_ts for r in kept], dtype=np.float64)
        self._from = np.array([r.valid_from for r in kept], dtype=np.float64)
        self._to = np.array([r.valid_to for r in kept], dtype=np.float64)
        self._returns = np.array([r.market_return for r in kept], dtype=np.float64)
        self._x = (
            np.array([r.values for r in kept], dtype=np.float64)
            if kept
            else np.empty((0, len(STATE_FEATURES)))
        )

    def __len__(self) -> int:
        return len(self._ids)

    @staticmethod
    def row(
        episode_id: str,
        *,
        created_ts: float,
        state: Mapping[str, float],
        outcomes: list[tuple[float, float, str]],
    ) -> list[_Row]:
        """Rows of one episode: ``outcomes`` are ``(recorded_at epoch s, market_return,
        horizon)`` in time order; none when a feature is missing or no outcome exists."""
        values = vector(state)
        if values is None or not outcomes:
            return []
        ordered = sorted(outcomes, key=lambda o: o[0])
        out = []
        for n, (ts, ret, horizon) in enumerate(ordered):
            until = ordered[n + 1][0] if n + 1 < len(ordered) else math.inf
            if math.isfinite(ret):
                out.append(_Row(episode_id, created_ts, ts, until, ret, horizon, values))
        return out

    @staticmethod
    def episode_rows(
        base: Episode, log: Sequence[Mapping[str, Any]], *, created_ts: float
    ) -> list[_Row]:
        """Rows of a stored episode: ``base`` as first added and its ``log``
        (:mod:`backend.memory.episodic`: outcome entries carry ``ts`` and ``outcome``)."""
        outcomes = (
            [(created_ts, base.outcome.market_return, base.outcome.horizon)]
            if base.outcome is not None
            else []
        )
        for entry in log:
            if entry.get("op") == "outcome":
                o = entry["outcome"]
                outcomes.append((float(entry["ts"]), float(o["market_return"]), str(o["horizon"])))
        return StateIndex.row(base.id, created_ts=created_ts, state=base.state, outcomes=outcomes)

    @classmethod
    def from_rows(cls, rows: Iterable[_Row]) -> StateIndex:
        return cls(rows)

    def nearest(
        self,
        state: Mapping[str, float],
        *,
        as_of_ts: float,
        k: int,
        horizon: str | None = None,
    ) -> list[StateNeighbour]:
        """The ``k`` most similar episodes to ``state`` whose outcome was known at
        ``as_of_ts`` (epoch s), best first (ties: newer first); only outcomes over
        ``horizon`` when given. Empty when ``state`` lacks a feature."""
        query = vector(state)
        if query is None or k < 1 or not self._ids:
            return []
        live = (self._created <= as_of_ts) & (self._from <= as_of_ts) & (as_of_ts < self._to)
        if horizon is not None:
            live &= self._horizons == horizon
        idx = np.flatnonzero(live)
        if idx.size == 0:
            return []
        x = self._x[idx]
        median = np.median(x, axis=0)
        scale = _MAD_TO_SD * np.median(np.abs(x - median), axis=0)
        scale = np.where(scale > _MIN_SCALE, scale, np.maximum(x.std(axis=0), 1.0))
        d2 = (((x - np.asarray(query)) / scale) ** 2).sum(axis=1)
        sim = np.exp(-d2 / (2 * len(STATE_FEATURES)))
        order = np.lexsort((-self._created[idx], -sim))[:k]
        return [
            StateNeighbour(
                episode_id=self._ids[idx[j]],
                similarity=float(sim[j]),
                market_return=float(self._returns[idx[j]]),
                horizon=str(self._horizons[idx[j]]),
            )
            for j in order
        ]


def vector(state: Mapping[str, float]) -> tuple[float, ...] | None:
    """``state``'s :data:`STATE_FEATURES` in order, None when one is missing or not finite."""
    out = []
    for name in STATE_FEATURES:
        value = state.get(name)
        if value is None or not math.isfinite(value):
            return None
        out.append(float(value))
    return tuple(out)

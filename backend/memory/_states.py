"""Episodes as points of market state: "what happened the last time things looked like
this", answered by nearest neighbours over the causal features of the bar, not by the
text of the descriptions (method of analogues, Lorenz 1969; nearest-neighbour forecasts
of asset returns, Fernández-Rodríguez, Sosvilla-Rivero & Andrada-Félix 1999).

Every episode written by the detectors and the decision loop carries ``state``: the
feature values of its bar (:data:`backend.memory.detectors.STATE_COLUMNS`, all computed
from candles at or before the bar). :class:`StateIndex` holds, for one trader and
symbol, one row per (episode, outcome) pair: the outcome's market return over its
horizon and the time it became known, so a query at ``as_of`` only sees outcomes
recorded at or before ``as_of``. An outcome later replaced by another over the same
horizon is a second row, valid from its own time on; an outcome over another horizon
does not end it (a decision episode's ``"trade"`` outcome, written when its position
closes after the horizon, had hidden its horizon outcome from every later query over
that horizon: the agent's own held trades left the neighbour pool). A query over any
horizon sees each episode's latest outcome.

Distance: Euclidean over :data:`STATE_FEATURES`, each scaled by its robust spread over
the candidates visible at the query (median absolute deviation x 1.4826, the normal
consistency factor); ``similarity = exp(-d^2 / (2 * n_features))`` in (0, 1].
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from backend.memory.detectors import STATE_COLUMNS
from backend.memory.models import Episode

__all__ = ["SCALE_SAMPLE", "STATE_FEATURES", "StateIndex", "StateNeighbour"]

STATE_FEATURES: tuple[str, ...] = tuple(
    name for name in STATE_COLUMNS if name not in ("close", "ret_bar", "volume_shock")
)
"""Scale-free features the neighbours are matched on: 1-day and 7-day returns, 1-day and
30-day realised vol (annualised), their ratio, drawdown from the 14-day high and the EMA
spread (fractions; :mod:`backend.memory._features`). Price level, bar return and volume
shock are left out: the first is not comparable across years, the other two are one-bar
noise."""

_MAD_TO_SD = 1.4826
_MIN_SCALE = 1e-9
SCALE_SAMPLE = 8192
"""Above twice this many live rows the feature scales are estimated on a sample of this
many: the rows with the smallest hash of (episode id, outcome time), so the same rows
whatever order the index received them in (two medians of 100k rows per feature took
~24 of a query's ~40 ms; the MAD of 8k draws is within ~2% of the full one; at 10k rows
choosing the sample cost more than it saved: 2.6 ms a query, 2.0 with every row)."""
_MIX = np.uint64(0x9E3779B97F4A7C15)
"""Fibonacci hashing's multiplier (Knuth, TAOCP 6.4) for the outcome time's bits."""


def _sample_keys(rows: Sequence[_Row], valid_from: np.ndarray) -> np.ndarray:
    """A deterministic pseudo-random key per row (CRC-32 of the episode id, high bits;
    the outcome time's bits mixed, low bits): it orders the scale sample."""
    ids = np.array([zlib.crc32(r.episode_id.encode()) for r in rows], dtype=np.uint64)
    with np.errstate(over="ignore"):
        mixed = (valid_from.view(np.uint64) * _MIX) >> np.uint64(32)
    return (ids << np.uint64(32)) | mixed


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
    """When the next outcome over the same horizon replaced this one (inf: never)."""
    latest_to: float
    """When the next outcome over any horizon was recorded (inf: never)."""
    market_return: float
    horizon: str
    values: tuple[float, ...]


class StateIndex:
    """The state points of one trader's episodes on one symbol (module doc).

    Build with :meth:`from_rows`; query with :meth:`nearest`. Immutable: a write to the
    store gives a new index, by :meth:`with_changes` (only the changed episodes' rows) or
    from scratch (the caller validates it against the store's change counter). The
    answer does not depend on the order of the rows (ties: newer, then the smaller id).

    Costs on this machine (``scripts/bench_state_index.py``: real 1h bar states, k 24):
    at 100k rows a recall takes 7.5 / 7.9 ms (p50 / p95; 39.6 / 41.3 ms with full-sample
    scales and a full sort, the earlier code) and a change 11.0 / 12.9 ms (a rebuild
    takes 87 ms); at 10k, 2.0 / 2.2 ms (2.9 / 3.0 before) and 0.5 ms.
    """

    def __init__(self, rows: Iterable[_Row]) -> None:
        kept = list(rows)
        self._ids = np.array([r.episode_id for r in kept], dtype=object)
        labels = sorted({r.horizon for r in kept})
        self._labels = {label: code for code, label in enumerate(labels)}
        self._horizons = np.array([self._labels[r.horizon] for r in kept], dtype=np.int32)
        self._created = np.array([r.created_ts for r in kept], dtype=np.float64)
        self._from = np.array([r.valid_from for r in kept], dtype=np.float64)
        self._to = np.array([r.valid_to for r in kept], dtype=np.float64)
        self._to_any = np.array([r.latest_to for r in kept], dtype=np.float64)
        self._returns = np.array([r.market_return for r in kept], dtype=np.float64)
        self._x = (  # feature-major: one contiguous column per feature
            np.array([r.values for r in kept], dtype=np.float64).T.copy()
            if kept
            else np.empty((len(STATE_FEATURES), 0))
        )
        self._keys = _sample_keys(kept, self._from)
        self._rows = kept
        self._alive = np.ones(len(kept), dtype=bool)
        self._where_map: dict[str, list[int]] | None = None

    def _where(self) -> dict[str, list[int]]:
        """Episode id -> its row positions, built at the first change (~0.1 s at 100k
        rows: a plain build does not pay it)."""
        if self._where_map is None:
            where: dict[str, list[int]] = {}
            for n, r in enumerate(self._rows):
                where.setdefault(r.episode_id, []).append(n)
            self._where_map = where
        return self._where_map

    def __len__(self) -> int:
        return int(self._alive.sum())

    def with_changes(self, changes: Mapping[str, Sequence[_Row]]) -> StateIndex:
        """A new index where each episode id of ``changes`` has exactly the rows given
        (none: it is gone); this one is unchanged. Costs the changed rows plus one copy
        of the arrays; it compacts (a rebuild) once half the rows are superseded."""
        where = self._where()
        gone = [n for eid in changes for n in where.get(eid, ())]
        added = [r for rows in changes.values() for r in rows]
        if not gone and not added:
            return self
        if 2 * (len(self._rows) - len(self) + len(gone)) > len(self._rows) + len(added):
            kept = [r for n, r in enumerate(self._rows) if self._alive[n]]
            return StateIndex([r for r in kept if r.episode_id not in changes] + added)
        new = StateIndex(added)
        out = StateIndex.__new__(StateIndex)
        out._labels = dict(self._labels)
        for label in new._labels:
            out._labels.setdefault(label, len(out._labels))
        recode = np.array([out._labels[label] for label in new._labels], dtype=np.int32)
        out._ids = np.concatenate([self._ids, new._ids])
        codes = recode[new._horizons] if len(added) else new._horizons
        out._horizons = np.concatenate([self._horizons, codes])
        out._created = np.concatenate([self._created, new._created])
        out._from = np.concatenate([self._from, new._from])
        out._to = np.concatenate([self._to, new._to])
        out._to_any = np.concatenate([self._to_any, new._to_any])
        out._returns = np.concatenate([self._returns, new._returns])
        out._x = np.concatenate([self._x, new._x], axis=1)
        out._keys = np.concatenate([self._keys, new._keys])
        out._rows = self._rows + added
        out._alive = np.concatenate([self._alive, new._alive])
        out._alive[gone] = False
        out._where_map = dict(where)
        for eid in changes:
            out._where_map.pop(eid, None)
        base = len(self._rows)
        for eid, positions in new._where().items():
            out._where_map[eid] = [base + n for n in positions]
        return out

    @staticmethod
    def row(
        episode_id: str,
        *,
        created_ts: float,
        state: Mapping[str, float],
        outcomes: list[tuple[float, float, str]],
    ) -> list[_Row]:
        """Rows of one episode: ``outcomes`` are ``(recorded_at epoch s, market_return,
        horizon)``; none when a feature is missing or no outcome exists. A row is valid
        until the next outcome over its horizon (``valid_to``) and is the episode's
        latest until the next outcome over any (``latest_to``; module doc)."""
        values = vector(state)
        if values is None or not outcomes:
            return []
        ordered = sorted(outcomes, key=lambda o: o[0])  # stable: log order within a time
        out = []
        for n, (ts, ret, horizon) in enumerate(ordered):
            later = ordered[n + 1 :]
            latest_to = later[0][0] if later else math.inf
            until = next((t for t, _, h in later if h == horizon), math.inf)
            if math.isfinite(ret):
                out.append(_Row(episode_id, created_ts, ts, until, latest_to, ret, horizon, values))
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
        scale_sample: int = SCALE_SAMPLE,
    ) -> list[StateNeighbour]:
        """The ``k`` most similar episodes to ``state`` whose outcome was known at
        ``as_of_ts`` (epoch s), best first (ties: newer first); with ``horizon`` each
        episode's latest outcome over it, else its latest outcome. Empty when ``state``
        lacks a feature. The scales are those of the rows visible at ``as_of_ts`` (a
        sample of ``scale_sample`` of them when there are more than twice as many)."""
        query = vector(state)
        if query is None or k < 1 or not self._rows:
            return []
        t = as_of_ts
        live = self._alive & (self._created <= t) & (self._from <= t)
        if horizon is None:
            live &= t < self._to_any
        else:
            code = self._labels.get(horizon)
            if code is None:
                return []
            live &= (t < self._to) & (self._horizons == code)
        idx = np.flatnonzero(live)
        if idx.size == 0:
            return []
        x = self._x[:, idx]
        sample = x  # the robust scales of a large index: from a sample of its live rows
        if idx.size > 2 * scale_sample:
            keys = self._keys[idx]
            pick = np.argpartition(keys, scale_sample)[:scale_sample]
            sample = x[:, pick[np.argsort(keys[pick])]]
        median = np.median(sample, axis=1)
        scale = _MAD_TO_SD * np.median(np.abs(sample - median[:, None]), axis=1)
        scale = np.where(scale > _MIN_SCALE, scale, np.maximum(sample.std(axis=1), 1.0))
        d2 = np.zeros(idx.size)
        for j, value in enumerate(query):
            z = (x[j] - value) / scale[j]
            d2 += z * z
        sim = np.exp(-d2 / (2 * len(STATE_FEATURES)))
        cand: list[int] | range = range(idx.size)
        if idx.size > k:  # every row tied with the k-th best stays a candidate
            kth = np.partition(sim, idx.size - k)[idx.size - k]
            cand = np.flatnonzero(sim >= kth).tolist()
        created, ids = self._created, self._ids
        order = sorted(cand, key=lambda j: (-sim[j], -created[idx[j]], ids[idx[j]]))[:k]
        labels = list(self._labels)
        return [
            StateNeighbour(
                episode_id=str(ids[idx[j]]),
                similarity=float(sim[j]),
                market_return=float(self._returns[idx[j]]),
                horizon=labels[int(self._horizons[idx[j]])],
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

"""The read caches of :class:`~backend.memory.episodic.EpisodicMemory`: the episode of a
stored record as of a time (memoised per record content) and the state index of a
(trader, symbol), validated against the store's change counter of the trader and, when
it moved, brought up to date from the records written since (by any process).

The state index is read at every decision. Rebuilding it from a full scan whenever the
trader wrote anything (the decision loop writes at almost every bar; the scheduler's
jobs write between bars) cost the 10,000-bar soak of ``tests/reliability`` 58 of its
118 s on a chroma store (1,016 scans of every episode, 440,099 decodes, cProfile);
reading only the records the audit trail says were written since is the fix.
"""

from __future__ import annotations

import bisect
import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from backend.memory._episode_codec import decode, record_filters, replay
from backend.memory._states import StateIndex
from backend.memory.models import Episode
from backend.storage import KhalaStore, MemoryRecord
from backend.types import END_OF_TIME

__all__ = ["EpisodeCache"]

_REBUILD_AT = 1000
"""Written records since the index was read above which (and above a quarter of its
rows) it is rebuilt from a scan instead of fetched by id."""
_DECODED_MAX = 8192
"""Decoded episodes kept by :meth:`EpisodeCache.as_of`."""
_Decoded = tuple[Episode, list[dict[str, Any]], list[float]]
"""A decoded record: base episode, its log, and the log's times sorted."""


@dataclass(frozen=True)
class _StateEntry:
    """A state index with what keeps it current: the trader's change counter and the
    audit cursor it was read at."""

    stamp: int
    cursor: int
    index: StateIndex


class EpisodeCache:
    """The read caches of the episodes of one store (module doc); thread-safe (one lock)."""

    def __init__(self, store: KhalaStore) -> None:
        self._store = store
        self._decoded: OrderedDict[tuple[str, str, str], _Decoded] = OrderedDict()
        self._replayed: dict[tuple[str, str, str, int, str | None], Episode] = {}
        self._cache_lock = threading.Lock()
        self._states: dict[tuple[str, str], _StateEntry] = {}
        """(trader, symbol) -> its state index (module doc; used by
        :meth:`EpisodicMemory.recall_by_state`)."""

    def state_index(self, trader_id: str, symbol: str) -> StateIndex:
        """The state index of the episodes of ``trader_id`` on ``symbol`` (every one
        stored: the index fences by time itself), current with every write confirmed
        before the call (module doc)."""
        stamp = self._store.changes(trader_id)
        key = (trader_id, symbol)
        with self._cache_lock:
            cached = self._states.get(key)
        if cached is not None and cached.stamp == stamp:
            return cached.index
        ids: list[str] = []
        if cached is not None:
            cursor, ids = self._store.changed_since(trader_id, cached.cursor)
        if cached is None or len(ids) > max(_REBUILD_AT, len(cached.index) // 4):
            # the first read, or many writes since (or one stuck in flight: the cursor
            # waits for it): a scan is cheaper than fetching them by id
            cursor, _ = self._store.changed_since(trader_id, None)
            records = self._store.scan(
                trader_id, as_of=END_OF_TIME, filters=record_filters(symbol, None)
            )
            index = StateIndex.from_rows(row for r in records for row in _index_rows(r))
        else:
            fresh = {r.id: r for r in self._store.get(trader_id, ids, as_of=END_OF_TIME)}
            index = cached.index.with_changes(
                {
                    rid: _index_rows(fresh[rid])
                    if rid in fresh and _is_episode_of(fresh[rid], symbol)
                    else []
                    for rid in ids
                }
            )
        with self._cache_lock:
            self._states[key] = _StateEntry(stamp, cursor, index)
        return index

    def as_of(self, record: MemoryRecord, ts: float, *, horizon: str | None = None) -> Episode:
        """The episode of ``record`` as of ``ts``, memoised: a decision loop recalls the
        same candidates bar after bar, and parsing them was most of a recall's time:
        decoding and replaying a decision episode with its outcome takes ~15 us, a
        memoised one ~0.7 us (measured 2026-12-06 on 50 such episodes), and a recall reads
        32 (``agent.episode_neighbours``) of a decision that takes ~1.6 ms in all. Keys
        hold the record's stored JSON, so any write is a new key. ``horizon``: the
        episode's outcome is its latest over that horizon (:func:`replay`)."""
        key = (
            record.id,
            str(record.metadata.get("episode", "")),
            str(record.metadata.get("log", "[]")),
        )
        with self._cache_lock:
            decoded = self._decoded.get(key)
        if decoded is None:
            base, log = decode(record)
            decoded = (base, log, sorted(float(e["ts"]) for e in log))
            with self._cache_lock:
                self._decoded[key] = decoded
                if len(self._decoded) > _DECODED_MAX:
                    self._decoded.popitem(last=False)
                    self._replayed.clear()
        base, log, times = decoded
        # the entries at or before ts are the `applied` earliest ones: the count is a key
        applied = bisect.bisect_right(times, ts)
        replay_key = (*key, applied, horizon)
        with self._cache_lock:
            episode = self._replayed.get(replay_key)
        if episode is None:
            episode = replay(base, log, ts, horizon=horizon)
            with self._cache_lock:
                if len(self._replayed) > 4 * _DECODED_MAX:
                    self._replayed.clear()
                self._replayed[replay_key] = episode
        return episode


def _is_episode_of(record: MemoryRecord, symbol: str) -> bool:
    """Whether ``record`` is an episode on ``symbol`` (what :func:`record_filters` selects)."""
    filters = record_filters(symbol, None)
    meta = {**record.metadata, "kind": record.kind}
    return all(meta.get(k) == v for k, v in filters.items())


def _index_rows(record: MemoryRecord) -> list[Any]:
    """The record's :class:`StateIndex` rows."""
    base, log = decode(record)
    return StateIndex.episode_rows(base, log, created_ts=record.created_at.timestamp())

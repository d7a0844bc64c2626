"""Episodic memory: salient events of a trader, stored on the Khala layer, recalled by
similarity, recency and importance (FinMem, Yu et al. 2023, arXiv 2311.13743; O-Mem's
episodic tier, arXiv 2511.13593).

Storage: one :class:`MemoryRecord` per episode (``kind="episodic"``, ``id`` = episode id,
``text`` = description, ``created_at`` = ``occurred_at`` = when it became known). Metadata:
``event_type``, ``symbol``, ``occurred_at_ts`` (epoch s), ``episode`` (the Episode as first
added, JSON, without actions or outcome) and ``log`` (JSON list of what happened to it
later: linked actions, outcomes with their importance change, decays, each with the
``as_of`` it was recorded at). The episode *as of* ``T`` is the base replayed with the log
entries recorded at or before ``T``, so a later outcome never leaks into an earlier read
(the record's top-level importance is the latest value, for store-side filters only).

Reflection rule of :meth:`EpisodicMemory.record_outcome` (importance in [0, 1]):
``move = min(1, |market_return| / 0.10)``; ``delta = 0.2 * move``; if an action other
than ``hold`` is linked and ``pnl`` is known: ``+0.25`` for a loss (so mistakes are
remembered), ``+0.10`` for a win; if nothing was done and the move was small
(``move < 0.2``): ``-0.05`` (an event that led nowhere fades). ``importance' =
clip(importance + delta, 0, 1)``. :meth:`EpisodicMemory.decay` multiplies by a factor.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from backend.config import MemorySettings
from backend.errors import LookAheadError, StoreError, UnknownRecordError
from backend.memory._episode_cache import EpisodeCache
from backend.memory._episode_codec import (
    EPISODIC_KIND,
    added_record,
    age_decay_entry,
    decode,
    encode,
    log_outcome,
    outcome_delta,
    record_as_of,
    record_filters,
    replay,
)
from backend.memory._episode_codec import MOVE_SCALE as MOVE_SCALE  # re-exported
from backend.memory._episode_rank import finmem_ranked, recency
from backend.memory.models import ActionLink, Episode, EpisodeType, Outcome, ScoredEpisode
from backend.storage import KhalaStore, MemoryRecord, SearchMethod, UpsertResult
from backend.types import to_utc

__all__ = ["EPISODIC_KIND", "EpisodicMemory", "outcome_delta", "record_as_of"]


class EpisodicMemory:
    """Trader-scoped episodes on a :class:`KhalaStore` (see the module docstring).

    Writes are read-modify-write of an episode's log (add, link_action, record_outcome,
    decay, decay_by_age): each holds the store's writer lock
    (:meth:`KhalaStore.writer_lock`, across processes sharing the store, re-entrant in a
    thread), so concurrent writers (the decision loop of ``sentinel paper``, the
    scheduler's consolidation in another process, the MCP server's ``record_outcome``)
    never lose each other's entries. Reads take no lock.
    """

    def __init__(self, store: KhalaStore, *, settings: MemorySettings) -> None:
        self._store = store
        self._settings = settings
        self._cache = EpisodeCache(store)
        """Episodes as of a time, memoised, and the state indexes (:meth:`recall_by_state`)."""

    @property
    def store(self) -> KhalaStore:
        return self._store

    # ----------------------------------------------------------------- writes

    def add(self, episodes: Sequence[Episode], *, as_of: datetime) -> UpsertResult:
        """Store ``episodes`` (batched per trader, idempotent by id).

        An episode already stored keeps its later history (linked actions, outcomes,
        decays); given again, it must be the same episode (description, state, base
        importance): replacing them would change what reads as of earlier times return,
        so that is a :class:`StoreError` (nothing of the batch is written). Actions or an
        outcome carried by the given episode are logged as recorded at ``as_of`` (once:
        ones already logged are not logged again), without an importance change.
        Raises :class:`LookAheadError` if an episode occurred after ``as_of``, or carries
        an action taken or an outcome resolved after it (as :meth:`link_action` and
        :meth:`record_outcomes` do): nothing is written then.
        """
        moment = to_utc(as_of)
        for ep in episodes:
            late = [a.at for a in ep.actions if a.at > moment]
            if ep.outcome is not None and ep.outcome.resolved_at > moment:
                late.append(ep.outcome.resolved_at)
            if late:
                raise LookAheadError(
                    f"episode {ep.id!r} carries an action or outcome at {max(late).isoformat()}"
                    f", after as_of {moment.isoformat()}"
                )
        with self._store.writer_lock():
            return self._add(episodes, as_of=as_of)

    def _add(self, episodes: Sequence[Episode], *, as_of: datetime) -> UpsertResult:
        by_trader: dict[str, list[Episode]] = defaultdict(list)
        for ep in episodes:
            by_trader[ep.trader_id].append(ep)
        batches: list[tuple[str, list[MemoryRecord]]] = []  # all checked before any write
        for trader_id, items in by_trader.items():
            existing = {
                r.id: r for r in self._store.get(trader_id, [e.id for e in items], as_of=as_of)
            }
            records: list[MemoryRecord] = []
            batches.append((trader_id, records))
            for ep in items:
                log: list[dict[str, Any]] = []
                if ep.id in existing:
                    held, log = decode(existing[ep.id])
                    # the outcome horizon is not what the episode is: the stored one is
                    # kept (a decision recorded again by a tool, or by a loop of another
                    # horizon, or stored before the field was, is the same decision)
                    ep = ep.model_copy(update={"outcome_horizon_s": held.outcome_horizon_s})
                    fresh = ep.model_copy(update={"actions": [], "outcome": None})
                    if held != fresh:  # reads as of earlier times would see the new text
                        raise StoreError(
                            f"episode {ep.id!r} is already stored with another description, "
                            "state or importance: an episode is written once"
                        )
                records.append(added_record(ep, log, as_of))
        total = UpsertResult()
        for trader_id, records in batches:
            res = self._store.upsert(trader_id, records, as_of=as_of)
            total = UpsertResult(
                added=total.added + res.added,
                updated=total.updated + res.updated,
                unchanged=total.unchanged + res.unchanged,
            )
        return total

    def _append(self, record: MemoryRecord, entry: dict[str, Any], *, as_of: datetime) -> Episode:
        base, log = decode(record)
        moment = to_utc(as_of)
        log.append({"at": moment.isoformat(), "ts": moment.timestamp(), **entry})
        self._store.upsert(record.trader_id, [encode(base, log)], as_of=moment)
        return replay(base, log, moment.timestamp())

    def _one(self, trader_id: str, episode_id: str, *, as_of: datetime) -> MemoryRecord:
        found = self._store.get(trader_id, [episode_id], as_of=as_of)
        if not found or found[0].kind != EPISODIC_KIND:
            raise UnknownRecordError(
                f"trader {trader_id}: no episode {episode_id!r} as of {to_utc(as_of).isoformat()}"
            )
        return found[0]

    def link_action(
        self, trader_id: str, episode_id: str, action: ActionLink, *, as_of: datetime
    ) -> Episode:
        """Link the agent's ``action`` to an episode; returns the episode as of ``as_of``.

        Raises :class:`LookAheadError` if the action is after ``as_of``,
        :class:`StoreError` if the episode does not exist as of ``as_of``.
        """
        if action.at > to_utc(as_of):
            raise LookAheadError(f"action at {action.at.isoformat()} is after as_of {as_of}")
        with self._store.writer_lock():
            record = self._one(trader_id, episode_id, as_of=as_of)
            entry = {"op": "action", "action": action.model_dump(mode="json")}
            return self._append(record, entry, as_of=as_of)

    def record_outcome(
        self, trader_id: str, episode_id: str, outcome: Outcome, *, as_of: datetime
    ) -> Episode:
        """Attach what happened after the episode and update its importance (reflection
        rule in the module docstring); returns the episode as of ``as_of``.

        Raises :class:`LookAheadError` if the outcome resolves after ``as_of``,
        :class:`StoreError` if it resolves before the episode or the episode is unknown.
        """
        return self.record_outcomes(trader_id, [(episode_id, outcome)], as_of=as_of)[0]

    def record_outcomes(
        self,
        trader_id: str,
        outcomes: Sequence[tuple[str, Outcome]],
        *,
        as_of: datetime,
    ) -> list[Episode]:
        """:meth:`record_outcome` for many ``(episode_id, outcome)`` pairs in ONE read and
        ONE write (a decision loop writes its outcomes in batches).

        Each outcome is logged as known from its own ``resolved_at`` (<= ``as_of``; a batch
        written at ``as_of`` may hold outcomes resolved earlier), in time order (ties: in
        the given order), so two outcomes of one episode both count. Returns the episodes
        as of ``as_of``, one per pair, in the given order. Validates everything first: on
        any error (same ones as :meth:`record_outcome`, naming the episode) nothing is
        written.
        """
        moment = to_utc(as_of)
        for episode_id, outcome in outcomes:
            if outcome.resolved_at > moment:
                raise LookAheadError(
                    f"outcome of {episode_id!r} resolved {outcome.resolved_at} is after {moment}"
                )
        with self._store.writer_lock():  # a read-modify-write of the logs (class doc)
            return self._record_outcomes(trader_id, outcomes, moment)

    def _record_outcomes(
        self, trader_id: str, outcomes: Sequence[tuple[str, Outcome]], moment: datetime
    ) -> list[Episode]:
        ts = moment.timestamp()
        ids = list(dict.fromkeys(episode_id for episode_id, _ in outcomes))
        found = {
            r.id: r
            for r in self._store.get(trader_id, ids, as_of=moment)
            if r.kind == EPISODIC_KIND
        }
        decoded: dict[str, tuple[Episode, list[dict[str, Any]]]] = {}
        order = sorted(range(len(outcomes)), key=lambda i: outcomes[i][1].resolved_at)
        for i in order:
            episode_id, outcome = outcomes[i]
            if episode_id not in found:
                raise UnknownRecordError(
                    f"trader {trader_id}: no episode {episode_id!r} as of {moment.isoformat()}"
                )
            if episode_id not in decoded:
                decoded[episode_id] = decode(found[episode_id])
            log_outcome(episode_id, *decoded[episode_id], outcome)
        out = [replay(*decoded[episode_id], ts) for episode_id, _ in outcomes]
        if decoded:
            records = [encode(base, log) for base, log in decoded.values()]
            self._store.upsert(trader_id, records, as_of=moment)
        return out

    def decay(self, trader_id: str, *, as_of: datetime, factor: float) -> int:
        """Multiply the importance of every episode known at ``as_of`` by ``factor``
        (0 < factor <= 1); one batched write. Returns how many episodes were decayed."""
        if not 0.0 < factor <= 1.0:
            raise StoreError(f"decay factor must be in (0, 1], got {factor}")
        moment = to_utc(as_of)
        entry = {"at": moment.isoformat(), "ts": moment.timestamp(), "op": "decay"}
        with self._store.writer_lock():
            records = self._store.scan(trader_id, as_of=moment, filters={"kind": EPISODIC_KIND})
            updated = []
            for record in records:
                base, log = decode(record)
                updated.append(encode(base, [*log, {**entry, "factor": factor}]))
            self._store.upsert(trader_id, updated, as_of=moment)
        return len(updated)

    def decay_by_age(self, trader_id: str, *, as_of: datetime, half_life_days: float) -> int:
        """Age-based importance decay of every episode known at ``as_of``: importance is
        multiplied by ``0.5 ** (d / half_life_days)`` where ``d`` is the number of WHOLE
        days since the episode's last age decay (or since it occurred). The entry keeps
        the time it decayed through, so calls at any cadence add up to the same decay
        (no drift) and a second call at the same ``as_of`` changes nothing. One batched
        write; returns how many episodes were decayed. Entries are read as of their
        ``as_of`` like every other (:func:`~backend.memory._episode_codec.replay`)."""
        if half_life_days <= 0:
            raise StoreError(f"half_life_days must be > 0, got {half_life_days}")
        moment = to_utc(as_of)
        with self._store.writer_lock():
            records = self._store.scan(trader_id, as_of=moment, filters={"kind": EPISODIC_KIND})
            updated = []
            for record in records:
                base, log = decode(record)
                entry = age_decay_entry(base, log, moment, half_life_days)
                if entry is not None:
                    updated.append(encode(base, [*log, entry]))
            if updated:
                self._store.upsert(trader_id, updated, as_of=moment)
        return len(updated)

    # ------------------------------------------------------------------ reads

    def get(
        self,
        trader_id: str,
        ids: Sequence[str],
        *,
        as_of: datetime,
        horizon: str | None = None,
    ) -> list[Episode]:
        """Episodes by id as of ``as_of`` (unknown or later ids skipped), in the given
        order; with ``horizon``, each one's ``outcome`` is its outcome over that horizon
        (None if none is known at ``as_of``), not its latest of any horizon."""
        ts = to_utc(as_of).timestamp()
        out = []
        for record in self._store.get(trader_id, ids, as_of=as_of):
            if record.kind == EPISODIC_KIND:
                base, log = decode(record)
                out.append(replay(base, log, ts, horizon=horizon))
        return out

    def scan(
        self,
        trader_id: str,
        *,
        as_of: datetime,
        symbol: str | None = None,
        event_types: Sequence[EpisodeType] | None = None,
    ) -> list[Episode]:
        """Every episode known at ``as_of`` (optionally one symbol / some types), oldest first."""
        ts = to_utc(as_of).timestamp()
        records = self._store.scan(
            trader_id, as_of=as_of, filters=record_filters(symbol, event_types)
        )
        return [replay(*decode(r), ts) for r in records]

    def recall(
        self,
        trader_id: str,
        query_text: str,
        *,
        as_of: datetime,
        top_k: int | None = None,
        symbol: str | None = None,
        event_types: Sequence[EpisodeType] | None = None,
        method: SearchMethod = "dense",
        pool: int | None = None,
    ) -> list[ScoredEpisode]:
        """The ``top_k`` (default ``settings.episodic_top_k``) best episodes for
        ``query_text`` known at ``as_of``, best first.

        A candidate pool (default ``max(50, 10 * top_k)``, at most 1000) is fetched by
        ``store.search_scored`` (``method``: ``dense`` cosine or ``hybrid`` RRF similarity,
        both in [0, 1]) and re-ranked by ``score = ws * similarity + wr * 0.5 ** (age_days /
        half_life_days) + wi * importance`` (weights from :class:`MemorySettings`; age from
        ``occurred_at`` to ``as_of``, in days). Ties: newer first, then by id.
        """
        if event_types is not None and not event_types:
            return []
        s = self._settings
        k = s.episodic_top_k if top_k is None else top_k
        if k < 1:
            raise StoreError(f"top_k must be >= 1, got {k}")
        size = min(1000, max(k, pool if pool is not None else max(50, 10 * k)))
        moment = to_utc(as_of)
        ts = moment.timestamp()
        hits = self._store.search_scored(
            trader_id,
            query_text,
            as_of=moment,
            top_k=size,
            method=method,
            filters=record_filters(symbol, event_types),
        )
        episodes = (
            (self._cache.as_of(record, ts), similarity)
            for record, similarity in hits
            if record.created_at <= moment  # the store fences too; never trust one layer
        )
        return finmem_ranked(episodes, as_of_ts=ts, settings=s, top_k=k)

    def recall_by_state(
        self,
        trader_id: str,
        symbol: str,
        state: dict[str, float],
        *,
        as_of: datetime,
        top_k: int,
        horizon: str | None = None,
    ) -> list[ScoredEpisode]:
        """The ``top_k`` episodes of ``symbol`` whose market state was most like ``state``
        and whose outcome was known at ``as_of`` (over ``horizon`` when given: each
        episode then carries its latest outcome over that horizon, whatever came after
        over another), best first, as of ``as_of`` (:mod:`backend.memory._states`:
        nearest neighbours over the bar's causal features). ``score`` = ``similarity``
        (0..1]; ``recency`` as in :meth:`recall`. Episodes without a state or an outcome
        are not candidates.

        Read through :mod:`backend.memory._episode_cache`, whose two caches each carry
        their measurement: the decoded episodes, and the index of a (trader, symbol),
        validated against the store's change counter of the trader
        (:meth:`KhalaStore.changes`, any process's write) and, when it moved, brought up
        to date with the records written since (costs in
        :class:`~backend.memory._states.StateIndex`). Measured on BTC/USDT 1h, May 2022,
        the default decision loop (291 state rows): a recall on the index ~0.8 ms
        (median; p95 1.1, the 24 records read and replayed included)."""
        if top_k < 1:
            raise StoreError(f"top_k must be >= 1, got {top_k}")
        moment = to_utc(as_of)
        ts = moment.timestamp()
        index = self._cache.state_index(trader_id, symbol)
        found = index.nearest(state, as_of_ts=ts, k=top_k, horizon=horizon)
        if not found:
            return []
        by_id = {
            r.id: r for r in self._store.get(trader_id, [n.episode_id for n in found], as_of=moment)
        }
        out = []
        s = self._settings
        for n in found:
            record = by_id.get(n.episode_id)
            if record is None:
                continue
            episode = self._cache.as_of(record, ts, horizon=horizon)
            out.append(
                ScoredEpisode(
                    episode=episode,
                    score=n.similarity,
                    similarity=n.similarity,
                    recency=recency(episode, ts, s.recency_half_life_days),
                    importance=episode.importance,
                )
            )
        return out

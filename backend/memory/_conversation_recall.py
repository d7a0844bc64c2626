"""Conversation recall's ranking (:meth:`backend.memory.conversation.ConversationMemory.
recall`): :func:`rank_messages` fuses every signal over a trader's messages, the fusion
:class:`~backend.config.ConversationSettings` describes (module doc of
:mod:`backend.memory.conversation`), with the pure steps of
:mod:`backend.memory._conversation_rank`."""

from __future__ import annotations

from datetime import datetime

import numpy as np

from backend.config import ConversationSettings
from backend.errors import StoreError
from backend.memory._conversation_rank import (
    asks_when,
    diverse_order,
    named_speakers,
    states_time,
)
from backend.memory._conversation_records import (
    MESSAGE_KIND,
    PREFIX,
    SESSION_KIND,
    WINDOW_KIND,
    message_of,
)
from backend.memory._dialog import strip_names, zscore
from backend.memory._periods import query_period
from backend.memory.models import RecalledMessage
from backend.storage import KhalaStore, SearchMethod
from backend.types import to_utc

__all__ = ["MAX_TOP_K", "rank_messages"]

MAX_TOP_K = 1000
"""The most messages one recall returns (and reads per signal)."""


CONVERSATION_CORPUS = (MESSAGE_KIND, WINDOW_KIND, SESSION_KIND)
"""The rows whose statistics (IDF, mean length) score the BM25 signals: the trader's
conversation as one corpus, whatever else the store holds (market episodes, a persona:
a store that held them ranked 194 of 199 LoCoMo questions differently, a reviewer's).
One corpus, not one per kind: on the tuning split (conv-26, 30, 41) R@10 0.852 against
0.836 with each kind's own statistics (docs/benchmarks.md, twenty-eighth session)."""


def rank_messages(
    store: KhalaStore,
    settings: ConversationSettings,
    trader_id: str,
    query: str,
    *,
    as_of: datetime,
    top_k: int = 10,
) -> list[RecalledMessage]:
    """The ``top_k`` messages of ``trader_id`` in ``store`` known at ``as_of`` that
    best answer ``query``, best first: the fusion
    :class:`~backend.config.ConversationSettings` describes (module doc of
    :mod:`backend.memory.conversation`). ``top_k`` in 1..1000, else
    :class:`StoreError`; raises the store's errors."""
    if not 1 <= top_k <= MAX_TOP_K:
        raise StoreError(f"top_k must be in 1..{MAX_TOP_K}, got {top_k}")
    # one scan: the messages, and which windows and sessions are known at as_of
    scanned = store.scan_metadata(
        trader_id, as_of=as_of, filters={"kind": [MESSAGE_KIND, WINDOW_KIND, SESSION_KIND]}
    )
    rows = [r for r in scanned if r[0].startswith(PREFIX[MESSAGE_KIND])]
    if not rows:
        return []
    cut = len(PREFIX[WINDOW_KIND])
    known_windows = {r[0][cut:] for r in scanned if r[0].startswith(PREFIX[WINDOW_KIND])}
    known_sessions = {
        str(meta["session"])
        for rid, _, meta in scanned
        if not rid.startswith((PREFIX[MESSAGE_KIND], PREFIX[WINDOW_KIND]))
    }
    first: dict[str, float] = {}
    for _, t, meta in rows:
        key = str(meta["session"])
        first[key] = min(first.get(key, t), t)
    rows.sort(key=lambda r: (first[str(r[2]["session"])], str(r[2]["session"]), int(r[2]["seq"])))
    ids = [str(meta["message_id"]) for _, _, meta in rows]
    position = {m: i for i, m in enumerate(ids)}
    sessions = np.array([str(meta["session"]) for _, _, meta in rows])
    stamps = np.array([t for _, t, _ in rows])
    said_by = np.array([str(meta["speaker"]) for _, _, meta in rows])
    speakers = sorted({str(meta["speaker"]) for _, _, meta in rows})
    s = settings
    n = min(s.candidates, MAX_TOP_K)
    stripped = strip_names(query, speakers)
    if stripped == query:
        vec = svec = store.embedder.embed_one(query)
    else:  # one batch: one padded matrix product, about the cost of one query
        vec, svec = store.embedder.embed([query, stripped])
    found: dict[str, set[int]] = {}

    def signal(name: str, q: str | np.ndarray, method: SearchMethod, kind: str) -> np.ndarray:
        hits = store.search_ids(
            trader_id, q, as_of=as_of, top_k=n, method=method, filters={"kind": kind},
            bm25_corpus=CONVERSATION_CORPUS,
        )  # fmt: skip
        cut = len(PREFIX[kind])  # record ids are <prefix><message id>
        pairs = [(position[rid[cut:]], sim) for rid, sim in hits if rid[cut:] in position]
        floor = min((v for _, v in pairs), default=0.0) if len(pairs) >= n else 0.0
        out = np.full(len(ids), floor)
        for i, value in pairs:
            out[i] = value
        found.setdefault(name, set()).update(i for i, _ in pairs)
        return zscore(out)

    message_bm25 = signal("message_bm25", query, "bm25", MESSAGE_KIND)
    message_dense = signal("message_dense", vec, "dense", MESSAGE_KIND)
    window_bm25 = signal("window_bm25", query, "bm25", WINDOW_KIND)
    window_dense = signal("window_dense", vec, "dense", WINDOW_KIND)
    # a window (or session) with a message said after as_of is stored as of that message,
    # so it is not known at as_of: the window signals of its centre are its own message's
    # (not the floor of an unseen window), and its session scores neutral (module doc)
    unseen = np.array([m not in known_windows for m in ids], dtype=bool)
    if unseen.any():
        window_bm25 = np.where(unseen, message_bm25, window_bm25)
        window_dense = np.where(unseen, message_dense, window_dense)
    total = (
        message_bm25
        + message_dense
        + signal("message_dense", svec, "dense", MESSAGE_KIND)
        + window_bm25
        + window_dense
    )
    smoothed = total.copy()
    same = sessions[1:] == sessions[:-1]
    smoothed[1:] += s.neighbour * total[:-1] * same
    smoothed[:-1] += s.neighbour * total[1:] * same
    smoothed += s.session * _session_scores(
        store, trader_id, query, vec, sessions, as_of, known=known_sessions
    )
    period = query_period(query, as_of=to_utc(as_of))
    timed = np.zeros(len(ids), dtype=bool)
    if period is not None:
        start, end = (p.timestamp() for p in period)
        # said after the period, about it: for time_tail_days, or the period's own
        # length when shorter (the day after a day, not the two weeks after it)
        tail = end + min(s.time_tail_days * 86_400, end - start)
        inside = (stamps >= start) & (stamps < end)
        after = (stamps >= end) & (stamps < tail)
        smoothed += s.time * (inside + 0.5 * after)
        timed = inside | after
    by_named = np.isin(said_by, sorted(named_speakers(query, speakers)))
    smoothed += s.speaker * by_named
    says_when = np.zeros(len(ids), dtype=bool)
    if s.when > 0 and asks_when(query):
        says_when = np.array(
            [
                bool(meta["says_time"])
                if "says_time" in meta  # messages stored before the flag: read the text
                else states_time(str(meta.get("text", "")))
                for _, _, meta in rows
            ],
            dtype=bool,
        )
        smoothed += s.when * says_when
    order = diverse_order(smoothed, sessions, top_k, s.diversity)
    held = {r.id: r for r in store.get(trader_id, [rows[i][0] for i in order], as_of=as_of)}
    out = []
    for i in order:
        if rows[i][0] not in held:  # deleted since the scan
            continue
        names = [k for k, v in found.items() if i in v] + (["time"] if timed[i] else [])
        names += ["speaker"] if by_named[i] and s.speaker > 0 else []
        names += ["when"] if says_when[i] else []
        message = message_of(held[rows[i][0]])
        out.append(RecalledMessage(message=message, score=float(smoothed[i]), signals=names))
    return out


def _session_scores(
    store: KhalaStore,
    trader_id: str,
    query: str,
    vec: np.ndarray,
    sessions: np.ndarray,
    as_of: datetime,
    *,
    known: set[str],
) -> np.ndarray:
    """Per message, its session's z-scored BM25 + dense match of ``query``, over the
    sessions whose record is ``known`` at ``as_of``; 0 (the mean) for the others."""
    per = dict.fromkeys(set(sessions.tolist()), 0.0)
    names = sorted(known & set(per))
    if not names:
        return np.zeros(len(sessions))
    searches: list[tuple[str | np.ndarray, SearchMethod]] = [(query, "bm25"), (vec, "dense")]
    for q, method in searches:
        hits = store.search_scored(
            trader_id, q, as_of=as_of, top_k=MAX_TOP_K, method=method,
            filters={"kind": SESSION_KIND}, bm25_corpus=CONVERSATION_CORPUS,
        )  # fmt: skip
        raw = {str(r.metadata["session"]): sim for r, sim in hits}
        z = zscore(np.array([raw.get(name, 0.0) for name in names]))
        for name, value in zip(names, z, strict=True):
            per[name] += float(value)
    return np.array([per[str(x)] for x in sessions])

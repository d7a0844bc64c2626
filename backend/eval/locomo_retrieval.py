"""Retrieval methods of the LoCoMo evaluation: a ranked list of dialog ids per question.

Flat methods (``dense``, ``bm25``, ``hybrid``) are one :meth:`KhalaStore.search` over the
conversation's turn records. ``hierarchical`` reads every tier of the memory
(:mod:`backend.eval.locomo_memory`) concurrently and fuses them onto the turns:

1. signals per turn, each read for the top :attr:`FusionWeights.candidates` hits (the
   other turns get the last hit's score) and z-normalised over the conversation's turns
   (``(x - mean) / std``; scores fuse better than ranks here: measured 0.64 vs 0.57 recall@10 for
   BM25 + dense): turn BM25, turn dense, turn dense with the speakers' names removed from
   the query (names dominate MiniLM's vector of a short question), episode (dialog
   window) BM25 and episode dense, each episode scoring the turn at its centre;
2. their sum ``s`` is smoothed along the dialog: ``s_i + g * (s_{i-1} + s_{i+1})`` over
   neighbours in the same session (an answer often sits next to the turn that matches
   the question);
3. plus ``w_session *`` the z-normalised session score (session BM25 + session dense) of
   the turn's session: a session-level hit lifts its turns, ranked by their turn scores;
4. plus a time boost when the question names a month and year, or a year (``in July
   2023``): ``w_time`` for turns of sessions dated inside that period, ``w_time / 2`` for
   sessions up to 14 days after it (events are told after they happen).

The persona tier (each speaker's profile from :class:`PersonaManager`) is read for the
context; its facts come from turns the other tiers already rank, so it adds no ranking
signal. Weights are :class:`FusionWeights`; the values were chosen on the six dev
conversations (docs/benchmarks.md lists every variant measured).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np

from backend.eval.locomo_memory import (
    DIALOGUE_SYMBOL,
    SESSION_KIND,
    TURN_KIND,
    LocomoMemory,
    persona_tenant,
)
from backend.eval.locomo_models import LocomoConversation
from backend.memory.models import PersonaProfile
from backend.storage import SearchMethod

__all__ = [
    "MAX_CANDIDATES",
    "FusionWeights",
    "HierarchicalResult",
    "HierarchicalRetriever",
    "flat_ranking",
    "question_period",
    "strip_names",
    "zscore",
]

MAX_CANDIDATES = 1000
"""The store's largest ``top_k``: sessions (at most ~35 per conversation) are all read."""
_MONTHS = [
    "january", "february", "march", "april", "may", "june",
    "july", "august", "september", "october", "november", "december",
]  # fmt: skip
_MONTH_RE = re.compile(r"\b(" + "|".join(_MONTHS) + r")\b(?:\s*,?\s*(\d{4}))?", re.IGNORECASE)
_YEAR_RE = re.compile(r"\b(19\d\d|20\d\d)\b")


def flat_ranking(
    memory: LocomoMemory,
    conversation_id: str,
    query: str,
    *,
    as_of: datetime,
    method: SearchMethod,
    top_k: int,
) -> list[str]:
    """Dialog ids of the ``top_k`` turn records for ``query`` by ``method``, best first."""
    hits = memory.store.search(
        conversation_id,
        query,
        as_of=as_of,
        top_k=top_k,
        method=method,
        filters={"kind": TURN_KIND},
    )
    return [str(h.record.metadata["dia_id"]) for h in hits]


def zscore(values: np.ndarray) -> np.ndarray:
    """``(x - mean) / std`` (a constant vector becomes zeros)."""
    std = float(values.std())
    return (values - values.mean()) / std if std > 0 else np.zeros_like(values)


def strip_names(query: str, names: list[str]) -> str:
    """``query`` without the given names (and their possessive ``'s``)."""
    out = query
    for name in names:
        out = re.sub(rf"\b{re.escape(name)}(?:'s|’s)?\b", " ", out, flags=re.IGNORECASE)
    return " ".join(out.split()) or query


def question_period(question: str) -> tuple[datetime, datetime] | None:
    """The period a question names, ``[start, end)`` in UTC: a month with a year
    (``July 2023``, ``July, 2023``, or a month and a year elsewhere in the question), or
    a year alone (``in 2022``); ``None`` otherwise."""
    month = _MONTH_RE.search(question)
    year = _YEAR_RE.search(question)
    if month is not None and (month.group(2) or year):
        y = int(month.group(2) or (year.group(1) if year else 0))
        m = _MONTHS.index(month.group(1).lower()) + 1
        start = datetime(y, m, 1, tzinfo=UTC)
        end = datetime(y + (m == 12), m % 12 + 1, 1, tzinfo=UTC)
        return start, end
    if year is not None:
        y = int(year.group(1))
        return datetime(y, 1, 1, tzinfo=UTC), datetime(y + 1, 1, 1, tzinfo=UTC)
    return None


@dataclass(frozen=True)
class FusionWeights:
    """Weights of the hierarchical fusion (module docstring): ``neighbour`` = g,
    ``session`` = w_session, ``time`` = w_time (z-score units), ``time_tail_days``,
    ``candidates`` (1..1000)."""

    neighbour: float = 0.15
    session: float = 0.8
    time: float = 2.0
    time_tail_days: float = 14.0
    candidates: int = 100
    """Hits read per turn/episode signal; the rest of the turns get the last hit's score
    (measured on the dev set: recall@10 0.795 with all turns, 0.800 with 100, 0.804 with
    200, 0.797 with 50 — the floor clips the long tail — at a fifth of the latency)."""


@dataclass(frozen=True)
class HierarchicalResult:
    """Dialog ids best first (every turn of the conversation) and the speakers'
    profiles as known at ``as_of`` (speaker -> profile; absent when nothing is known)."""

    dia_ids: list[str]
    personas: dict[str, PersonaProfile]


class HierarchicalRetriever:
    """The ``hierarchical`` method over one :class:`LocomoMemory` (module docstring).

    ``max_workers`` threads read the tiers concurrently (as
    :class:`~backend.memory.hierarchical.HierarchicalMemory` does). Call
    :meth:`close` when done.
    """

    def __init__(
        self, memory: LocomoMemory, *, weights: FusionWeights | None = None, max_workers: int = 4
    ) -> None:
        self.memory = memory
        self.weights = weights or FusionWeights()
        self._pool = ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="locomo")
        self._index: dict[str, tuple[list[str], dict[str, int], np.ndarray, np.ndarray]] = {}

    def close(self) -> None:
        self._pool.shutdown(wait=True)

    def _turn_index(
        self, conversation: LocomoConversation
    ) -> tuple[list[str], dict[str, int], np.ndarray, np.ndarray]:
        """Dialog ids in order, their positions, session numbers and session timestamps."""
        cached = self._index.get(conversation.sample_id)
        if cached is None:
            ids = [t.dia_id for t in conversation.turns]
            sessions = np.array([t.session for t in conversation.turns])
            stamps = np.array([t.at.timestamp() for t in conversation.turns])
            cached = (ids, {d: i for i, d in enumerate(ids)}, sessions, stamps)
            self._index[conversation.sample_id] = cached
        return cached

    def retrieve(
        self, conversation: LocomoConversation, question: str, *, as_of: datetime
    ) -> HierarchicalResult:
        """Every turn of ``conversation`` ranked for ``question`` with the memory as of
        ``as_of`` (turns of sessions after it are never seen)."""
        cid = conversation.sample_id
        ids, position, sessions, stamps = self._turn_index(conversation)
        names = [conversation.speaker_a, conversation.speaker_b]
        stripped = strip_names(question, names)
        store, episodic = self.memory.store, self.memory.episodic

        n = self.weights.candidates

        def spread(found: list[tuple[str, float]]) -> np.ndarray:
            """Scores of the ``n`` best on the turns; the rest get the n-th score (they
            were cut off below it), or 0 when fewer than ``n`` matched."""
            floor = min((v for _, v in found), default=0.0) if len(found) >= n else 0.0
            out = np.full(len(ids), floor)
            for dia_id, value in found:
                out[position[dia_id]] = value
            return out

        def turns(query: str, method: SearchMethod) -> Callable[[], np.ndarray]:
            def run() -> np.ndarray:
                hits = store.search(
                    cid, query, as_of=as_of, top_k=n, method=method, filters={"kind": TURN_KIND}
                )
                return spread([(str(h.record.metadata["dia_id"]), h.similarity) for h in hits])

            return run

        def episodes(method: SearchMethod) -> Callable[[], np.ndarray]:
            def run() -> np.ndarray:
                found = episodic.recall(
                    cid, question, as_of=as_of, top_k=n, pool=n, symbol=DIALOGUE_SYMBOL,
                    method=method,
                )  # fmt: skip
                return spread([(e.episode.sources[0], e.similarity) for e in found])

            return run

        def session_scores() -> np.ndarray:
            per: dict[int, float] = {}
            for method in ("bm25", "dense"):
                hits = store.search(
                    cid, question, as_of=as_of, top_k=MAX_CANDIDATES, method=method,
                    filters={"kind": SESSION_KIND},
                )  # fmt: skip
                raw = {int(h.record.metadata["session"]): h.similarity for h in hits}
                numbers = sorted(set(sessions.tolist()))
                z = zscore(np.array([raw.get(num, 0.0) for num in numbers]))
                for num, value in zip(numbers, z, strict=True):
                    per[num] = per.get(num, 0.0) + float(value)
            return np.array([per.get(int(s), 0.0) for s in sessions])

        def personas() -> dict[str, PersonaProfile]:
            out = {}
            for name in names:
                profile = self.memory.persona.get_profile(persona_tenant(cid, name), as_of)
                if profile is not None:
                    out[name] = profile
            return out

        calls: dict[str, Callable[[], Any]] = {
            "turn_bm25": turns(question, "bm25"),
            "turn_dense": turns(question, "dense"),
            "turn_dense_stripped": turns(stripped, "dense"),
            "episode_bm25": episodes("bm25"),
            "episode_dense": episodes("dense"),
            "session": session_scores,
            "persona": personas,
        }
        futures = {name: self._pool.submit(call) for name, call in calls.items()}
        results = {name: fut.result() for name, fut in futures.items()}
        fused = ("turn_bm25", "turn_dense", "turn_dense_stripped", "episode_bm25", "episode_dense")
        signal = np.sum([zscore(results[name]) for name in fused], axis=0)
        score = self._fuse(np.asarray(signal, dtype=np.float64), results["session"], sessions)
        score += self._time_boost(question, stamps)
        order = np.argsort(-score, kind="stable")
        return HierarchicalResult(
            dia_ids=[ids[i] for i in order.tolist()], personas=results["persona"]
        )

    def _fuse(self, signal: np.ndarray, session: np.ndarray, sessions: np.ndarray) -> np.ndarray:
        g = self.weights.neighbour
        out = signal.copy()
        same = sessions[1:] == sessions[:-1]
        out[1:] += g * signal[:-1] * same
        out[:-1] += g * signal[1:] * same
        return out + self.weights.session * session

    def _time_boost(self, question: str, stamps: np.ndarray) -> np.ndarray:
        period = question_period(question)
        if period is None:
            return np.zeros(len(stamps))
        start, end = (p.timestamp() for p in period)
        tail = end + timedelta(days=self.weights.time_tail_days).total_seconds()
        inside = (stamps >= start) & (stamps < end)
        after = (stamps >= end) & (stamps < tail)
        return self.weights.time * (inside + 0.5 * after)

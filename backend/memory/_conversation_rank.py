"""Pure ranking steps of conversation recall (:mod:`backend.memory.conversation`):
the speakers a query names, and the greedy session-diverse selection of the top messages."""

from __future__ import annotations

import re

import numpy as np

__all__ = ["diverse_order", "named_speakers"]


def named_speakers(query: str, speakers: list[str]) -> set[str]:
    """The ``speakers`` named in ``query`` (whole words, case-insensitive, a possessive
    ``'s`` allowed)."""
    return {
        s
        for s in speakers
        if s.strip() and re.search(rf"\b{re.escape(s)}(?:'s|’s)?\b", query, flags=re.IGNORECASE)
    }


def diverse_order(
    scores: np.ndarray, sessions: np.ndarray, top_k: int, penalty: float
) -> list[int]:
    """Indices of the ``top_k`` best ``scores``, chosen greedily: each pick lowers the
    remaining messages of its session by ``penalty`` (score units), so evidence spread
    over several sessions (LoCoMo's multi-hop questions) is not crowded out by one
    session's run of neighbours. ``penalty`` 0 is the plain descending order (stable)."""
    if penalty <= 0 or len(scores) <= 1:
        return [int(i) for i in np.argsort(-scores, kind="stable")[:top_k]]
    names, codes = np.unique(sessions, return_inverse=True)
    taken = np.zeros(len(names))
    live = scores.astype(np.float64).copy()
    out: list[int] = []
    for _ in range(min(top_k, len(scores))):
        i = int(np.argmax(live - penalty * taken[codes]))
        out.append(i)
        live[i] = -np.inf
        taken[codes[i]] += 1
    return out

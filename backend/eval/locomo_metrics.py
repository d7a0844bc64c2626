"""Metrics of the LoCoMo evaluation: recall@k over evidence turns, latency percentiles.

Recall@k is LoCoMo's retrieval metric: for one question, the fraction of its evidence
dialog ids found among the first ``k`` retrieved turns, ``|top_k ∩ evidence| /
|evidence|`` (a fraction in [0, 1]); a method's recall@k is the mean over questions.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

from backend.eval.locomo_models import RecallAtK

__all__ = ["KS", "percentile", "recall_at_k", "recall_summary"]

KS = (1, 5, 10, 25)
"""The cut-offs reported."""


def recall_at_k(ranked: Sequence[str], evidence: Iterable[str], k: int) -> float:
    """``|set(ranked[:k]) ∩ evidence| / |evidence|``; raises ``ValueError`` for no evidence
    or ``k < 1``."""
    wanted = set(evidence)
    if not wanted:
        raise ValueError("recall needs at least one evidence id")
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    return len(set(ranked[:k]) & wanted) / len(wanted)


def recall_summary(rows: Sequence[tuple[Sequence[str], Sequence[str]]]) -> RecallAtK:
    """Mean recall@1/5/10/25 over ``(ranked ids, evidence ids)`` rows (0 for no rows)."""
    means = {
        f"recall@{k}": float(np.mean([recall_at_k(r, e, k) for r, e in rows])) if rows else 0.0
        for k in KS
    }
    return RecallAtK.model_validate({"n": len(rows), **means})


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0..100, linear interpolation) of ``values``; 0 if empty."""
    return float(np.percentile(np.asarray(values, dtype=np.float64), q)) if values else 0.0

"""The episodic score (FinMem, Yu et al. 2023, arXiv 2311.13743): similarity, recency
and importance weighted (:meth:`~backend.memory.episodic.EpisodicMemory.recall`)."""

from __future__ import annotations

from collections.abc import Iterable

from backend.config import MemorySettings
from backend.memory._episode_codec import DAY_S
from backend.memory.models import Episode, ScoredEpisode

__all__ = ["finmem_ranked", "recency"]


def recency(episode: Episode, ts: float, half_life_days: float) -> float:
    """``0.5 ** (age_days / half_life_days)`` (0..1], the age from the episode's
    ``occurred_at`` to ``ts`` (UTC seconds), never negative (FinMem's recency)."""
    age_days = max(0.0, (ts - episode.occurred_at.timestamp()) / DAY_S)
    return float(0.5 ** (age_days / half_life_days))


def finmem_ranked(
    candidates: Iterable[tuple[Episode, float]],
    *,
    as_of_ts: float,
    settings: MemorySettings,
    top_k: int,
) -> list[ScoredEpisode]:
    """The ``top_k`` best of ``(episode as of as_of_ts, similarity in [0, 1])`` by
    ``score = ws * similarity + wr * recency + wi * importance`` (weights
    ``weight_similarity``, ``weight_recency``, ``weight_importance`` of ``settings``;
    :func:`recency` with ``recency_half_life_days``), best first. Ties: newer first, then
    by id."""
    s = settings
    ranked: list[tuple[float, float, str, Episode, float, float]] = []
    for episode, similarity in candidates:
        occurred = episode.occurred_at.timestamp()
        fresh = recency(episode, as_of_ts, s.recency_half_life_days)
        score = (
            s.weight_similarity * similarity
            + s.weight_recency * fresh
            + s.weight_importance * episode.importance
        )
        ranked.append((-score, -occurred, episode.id, episode, similarity, fresh))
    ranked.sort(key=lambda x: x[:3])
    return [
        ScoredEpisode(
            episode=episode,
            score=-neg_score,
            similarity=similarity,
            recency=fresh,
            importance=episode.importance,
        )
        for neg_score, _, _, episode, similarity, fresh in ranked[:top_k]
    ]

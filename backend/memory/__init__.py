"""The three memory tiers of a trading agent (O-Mem, arXiv 2511.13593, adapted).

- working memory: :class:`WorkingMemory` (market context per trader and symbol, bounded,
  overflow consolidated into episodes), fed by :func:`compute_features` / :func:`snapshot_at`;
- episodic memory: :class:`EpisodicMemory` (salient events, actions, outcomes, FinMem-style
  scored recall), fed by the ``detect_*`` detectors;
- persona memory lives in :mod:`backend.agents.memory` (:class:`PersonaManager`);
- the three are retrieved together by
  :class:`backend.memory.hierarchical.HierarchicalMemory`.

Models are in :mod:`backend.memory.models`.
"""

from backend.memory._consolidate import consolidate
from backend.memory._features import FeatureFrame, FeatureRow, compute_features
from backend.memory._news import (
    FearGreedIndex,
    HeadlineIndex,
    News,
    NewsFiles,
    coverage_notes,
    headline_topics,
    load_news,
)
from backend.memory._states import SCALE_SAMPLE, STATE_FEATURES, StateIndex, StateNeighbour
from backend.memory.context import render_context, render_fallback
from backend.memory.detectors import (
    MIN_TRADE_HISTORY,
    DetectedEvent,
    count_closing_trades,
    detect_market_events,
    detect_news_shocks,
    detect_trade_events,
    events_to_episodes,
)
from backend.memory.episodic import EpisodicMemory
from backend.memory.working import EpisodeWrite, WorkingMemory, snapshot_at

__all__ = [
    "MIN_TRADE_HISTORY",
    "SCALE_SAMPLE",
    "STATE_FEATURES",
    "DetectedEvent",
    "EpisodeWrite",
    "EpisodicMemory",
    "FearGreedIndex",
    "FeatureFrame",
    "FeatureRow",
    "HeadlineIndex",
    "News",
    "NewsFiles",
    "StateIndex",
    "StateNeighbour",
    "WorkingMemory",
    "compute_features",
    "consolidate",
    "count_closing_trades",
    "coverage_notes",
    "detect_market_events",
    "detect_news_shocks",
    "detect_trade_events",
    "events_to_episodes",
    "headline_topics",
    "load_news",
    "render_context",
    "render_fallback",
    "snapshot_at",
]

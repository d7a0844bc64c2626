"""Sections of the hierarchical memory (``memory``): its event detectors
(``memory.detectors``) and conversation recall (``memory.conversation``)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from backend.config._section import _Section


class DetectorSettings(_Section):
    """Thresholds of the episodic event detectors (fractions, not percent)."""

    flash_crash_return: float = Field(default=-0.05, lt=0, gt=-1)
    """A bar whose return is at or below this is a flash crash (-0.05 = -5% in one bar)."""
    volatility_spike_ratio: float = Field(default=2.5, gt=1)
    """Short-window realised vol over long-window vol at or above this is a spike."""
    large_drawdown: float = Field(default=-0.20, lt=0, gt=-1)
    """Close at or below this fraction under the rolling high (first crossing only)."""
    breakout_lookback_bars: int = Field(default=72, ge=5, le=10_000)
    news_shock_headlines: int = Field(default=4, ge=1)
    """This many headlines on one topic within ``news_window_bars`` is a news shock."""
    news_window_bars: int = Field(default=6, ge=1)
    big_trade_quantile: float = Field(default=0.95, gt=0.5, lt=1)
    """A closing fill whose |realised PnL| is at or above this quantile of the trader's
    closing fills (known up to that time) is a big win / loss."""


class ConversationSettings(_Section):
    """Conversation memory: how messages are recalled (``backend.memory.conversation``).

    Recall fuses z-scored signals over a trader's messages: message BM25, message dense,
    message dense with the speakers' names removed from the query, and BM25 and dense of
    each message's window (it and ``window_radius`` messages either side), each read for
    its top ``candidates``; the sum is smoothed along the session (``neighbour``), a
    session-level match lifts its messages (``session``), and a period the query names
    (a day, a month, a year, or a relative date such as "last week", resolved against
    ``as_of``: :mod:`backend.memory._periods`) lifts the messages said in it (``time``,
    half for ``time_tail_days`` after it, or for the period's own length when shorter);
    a speaker the query names lifts that speaker's messages (``speaker``), and
    a question asking *when* lifts the messages that state a time (``when``: "yesterday",
    "last week", a weekday, a month, a year); the top messages are picked greedily, each
    pick lowering the rest of its session by ``diversity`` (evidence spread over sessions
    is not crowded out by one session). All
    weights are in units of one z-scored signal. ``neighbour``, ``session`` and
    ``candidates`` are those of the former LoCoMo evaluation ranker (chosen on all six
    LoCoMo dev conversations); ``speaker``, ``diversity``, ``when`` and ``time`` were
    chosen on the tuning conversations (conv-26, 30, 41) alone (docs/benchmarks.md)."""

    window_radius: int = Field(default=2, ge=0, le=20)
    candidates: int = Field(default=100, ge=5, le=1000)
    neighbour: float = Field(default=0.15, ge=0, le=5)
    session: float = Field(default=0.8, ge=0, le=10)
    time: float = Field(default=8.0, ge=0, le=20)
    """Lift of the messages said in the period the query names (chosen on the tuning
    conversations with the day-level periods of 2026-12-07: R@10 0.842 / 0.844 / 0.853 /
    0.855 / 0.853 at 2 / 4 / 8 / 12 / 16, the smallest on the plateau;
    docs/benchmarks.md)."""
    time_tail_days: float = Field(default=14.0, ge=0, le=365)
    speaker: float = Field(default=3.0, ge=0, le=10)
    """Lift of the messages of a speaker the query names (0 = off)."""
    when: float = Field(default=1.0, ge=0, le=10)
    """Lift, for a question asking *when*, of the messages that state a time (0 = off;
    chosen on the tuning conversations: temporal R@5 0.861 -> 0.889, docs/benchmarks.md)."""
    diversity: float = Field(default=0.5, ge=0, le=10)
    """Lowering of a session's remaining messages per message already picked (0 = plain
    score order)."""
    context_messages: int = Field(default=10, ge=1, le=200)
    """Messages put in a context (best first, within the token budget)."""
    agent_speakers: list[str] = Field(default_factory=lambda: ["assistant", "agent"])
    """Speakers whose words are the agent's, not the trader's (case-insensitive): they are
    recalled but never read into the persona or conversation events."""
    trader_speakers: list[str] = Field(default_factory=list)
    """When not empty, the only speakers (case-insensitive) whose words are the trader's:
    anyone else in a chat (a coach, a friend) is recalled but never read into the persona
    or conversation events. Empty: every speaker not in ``agent_speakers``."""


class MemorySettings(_Section):
    """Hierarchical memory: window sizes, retrieval weights, the prompt token budget."""

    working_window: int = Field(default=48, ge=2, le=10_000)
    """Market snapshots kept per (trader, symbol) before overflow is consolidated."""
    consolidate_batch: int = Field(default=24, ge=1, le=10_000)
    """On overflow, the oldest this-many snapshots become one ``context`` episode."""
    equity_lookback_days: float = Field(default=365.0, gt=0, le=3650)
    """Days of the agent's equity marks working memory keeps per (trader, symbol): the
    account's high-water mark is the highest equity of this lookback (365 and 90 gave
    +0.737 and +0.729 of mean Sharpe change on 2021-2023 with the drawdown rule)."""
    episodic_top_k: int = Field(default=5, ge=1, le=100)
    weight_similarity: float = Field(default=0.6, ge=0, le=1)
    weight_recency: float = Field(default=0.2, ge=0, le=1)
    weight_importance: float = Field(default=0.2, ge=0, le=1)
    """score = ws * similarity + wr * 0.5 ** (age / half_life) + wi * importance (FinMem)."""
    recency_half_life_days: float = Field(default=30.0, gt=0)
    working_state_path: Path | None = None
    """SQLite file of the working-memory windows (so a restart resumes them); default
    ``<store.path>/working.sqlite3``, or for a chroma server one file per machine and
    server; see :meth:`Settings.working_state_file`."""
    token_budget: int = Field(default=1500, ge=100, le=100_000)
    """Tokens of the rendered memory section of a prompt (tiktoken cl100k_base)."""
    detectors: DetectorSettings = DetectorSettings()
    conversation: ConversationSettings = ConversationSettings()

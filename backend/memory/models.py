"""The typed models of the hierarchical memory (persona, working, episodic), imported from here.

Each is defined once: here, or (the persona's) in :mod:`backend.memory._persona_models`.

The design follows O-Mem (arXiv 2511.13593): a persona memory of who the user is, a
working memory of the current context, and an episodic memory of salient past events,
retrieved together before each response (here: each trading decision). Units: prices and
PnL in quote currency; returns, volatility, drawdown and shares as fractions (0.05 = 5%);
times are aware UTC datetimes.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import cached_property
from typing import Any, Literal, Self

from pydantic import AwareDatetime, Field, ValidationInfo, field_validator
from pydantic_core import PydanticCustomError

from backend.memory._market_words import depth_words, move_word, volatility_level, volume_words
from backend.memory._persona_models import (
    ChangeAction,
    HardConstraint,
    PersonaAttribute,
    PersonaChange,
    PersonaProfile,
)
from backend.text.quoting import breaks_lines
from backend.types import MAX_SIZE, Action, FrozenModel, to_utc

__all__ = [
    "STORED",
    "AccountState",
    "ActionLink",
    "ChangeAction",
    "Episode",
    "EpisodeType",
    "EventType",
    "HardConstraint",
    "MarketSnapshot",
    "MemoryContext",
    "Outcome",
    "PersonaAttribute",
    "PersonaChange",
    "PersonaProfile",
    "Regime",
    "RenderedContext",
    "ScoredEpisode",
    "Tier",
]


# ------------------------------------------------------------------------ working

Regime = Literal["trend_up", "trend_down", "range"]


class MarketSnapshot(FrozenModel):
    """Market context of one symbol at one bar close (working memory's unit).

    ``returns`` maps horizon labels (``"1h"``, ``"24h"``, ``"7d"``) to fractional returns;
    ``realized_vol`` is annualised (fraction) from log returns over the window;
    ``drawdown`` is ``close / max(high over the window) - 1`` (<= 0); ``volume_shock`` is
    bar volume over its trailing mean; ``fear_greed`` is the last published daily index
    (0..100) at or before ``as_of``; ``headlines`` are titles published in the last bars;
    ``topics`` are lower-case topic tags used to index the context.
    """

    trader_id: str
    symbol: str
    timeframe: str
    as_of: AwareDatetime
    close: float = Field(gt=0)
    returns: dict[str, float] = Field(default_factory=dict)
    realized_vol: float = Field(ge=0)
    regime: Regime
    drawdown: float = Field(le=0)
    volume_shock: float = Field(ge=0)
    fear_greed: int | None = Field(default=None, ge=0, le=100)
    headlines: list[str] = Field(default_factory=list)
    topics: list[str] = Field(default_factory=list)

    _tz = field_validator("as_of")(to_utc)

    def situation(self) -> str:
        """A short, time-free, qualitative description of the market state: the episodic
        recall query ("what happened the last time things looked like this").

        Buckets instead of numbers (numbers cost many tokens and embed poorly): ~25
        tokens, ~5 ms to embed with MiniLM on 2 cores vs ~15 ms for :meth:`describe`.
        """
        moves = [f"{move_word(v)} over {k}" for k, v in self.returns.items() if k != "1h"]
        level = volatility_level(self.realized_vol)
        depth, volume = depth_words(self.drawdown), volume_words(self.volume_shock)
        topics = f", news: {', '.join(self.topics[:3])}" if self.topics else ""
        return (
            f"{self.symbol} {self.regime.replace('_', ' ')}, {level} volatility, "
            f"{', '.join(moves)}, {depth}, {volume}{topics}"
        )

    @cached_property
    def brief(self) -> str:
        """:meth:`describe` without the headlines, newline included: how a decision
        context shows an older bar (``backend.memory.context``). The one cache of this
        text, on the object: working memory hands the same snapshot objects to every
        render of its window, and describing one costs ~9.5 us, i.e. ~0.46 ms of a
        decision's ~3.6 ms for its 48 older bars (measured 2026-12-06); the same string
        also keeps its hash for the token-count cache. :meth:`model_copy` drops it."""
        return self.model_copy(update={"headlines": []}).describe() + "\n"

    def model_copy(self, *, update: Mapping[str, Any] | None = None, deep: bool = False) -> Self:
        """pydantic's copy, without the cached :attr:`brief` of the original (a copy with
        other fields must describe itself)."""
        copy = super().model_copy(update=update, deep=deep)
        copy.__dict__.pop("brief", None)
        return copy

    def describe(self) -> str:
        """One line of text for prompts and embeddings."""
        rets = ", ".join(f"{k} {v:+.1%}" for k, v in self.returns.items())
        fg = f", Fear & Greed {self.fear_greed}" if self.fear_greed is not None else ""
        news = f"; news: {' | '.join(self.headlines[:3])}" if self.headlines else ""
        regime = self.regime.replace("_", " ")
        return (
            f"{self.symbol} {self.timeframe} at {self.as_of:%Y-%m-%d %H:%M}Z: "
            f"close {self.close:,.2f}, {regime}, returns {rets}, "
            f"realised vol {self.realized_vol:.0%}, drawdown {self.drawdown:.1%}, "
            f"volume {self.volume_shock:.1f}x{fg}{news}"
        )


# ------------------------------------------------------------------------ episodic

EventType = Literal[
    "flash_crash",
    "volatility_spike",
    "large_drawdown",
    "breakout_up",
    "breakout_down",
    "news_shock",
    "big_win",
    "big_loss",
]
"""The episodes of market and trade events: what a caller records as an event (the
``record_event`` tool); the other episode types are written by the memory itself."""
EpisodeType = Literal[EventType, "decision", "context", "conversation"]
"""``decision`` episodes are the agent's decisions (``record_decision``); ``context``
episodes are consolidated working-memory overflow; ``conversation`` episodes are events
the trader told the agent about (a liquidation, a life change, a plan:
:mod:`backend.memory.conversation`), with the messages as ``sources``."""


class AccountState(FrozenModel):
    """The agent's account of one decision loop (``symbol`` at ``timeframe``) as working
    memory holds it at ``as_of``.

    ``equity``: quote currency, marked to the close of the bar at ``as_of``; ``peak``: the
    highest equity working memory observed over its lookback
    (``memory.equity_lookback_days``) up to ``as_of``, at ``peak_at`` (the high-water
    mark); ``drawdown``: ``equity / peak - 1`` (fraction, <= 0).
    """

    trader_id: str
    symbol: str
    timeframe: str
    as_of: AwareDatetime
    equity: float = Field(gt=0)
    peak: float = Field(gt=0)
    peak_at: AwareDatetime
    drawdown: float = Field(le=0)

    _tz = field_validator("as_of", "peak_at")(to_utc)


class ActionLink(FrozenModel):
    """An agent action linked to an episode (the decision that was taken in it)."""

    decision_id: str
    action: Action
    size: float = Field(ge=0, le=MAX_SIZE)
    """Fraction of equity (notional / equity)."""
    at: AwareDatetime

    _tz = field_validator("at")(to_utc)


class Outcome(FrozenModel):
    """What happened after an episode: return over a horizon and the agent's PnL."""

    horizon: str
    """e.g. ``"24h"``."""
    market_return: float
    """Fractional close-to-close return of the symbol over the horizon."""
    pnl: float | None = None
    """The linked action's PnL in quote currency, if there was a position."""
    resolved_at: AwareDatetime

    _tz = field_validator("resolved_at")(to_utc)


class Episode(FrozenModel):
    """A salient event with its market-state description, actions and outcome.

    ``importance`` 0..1 starts from the detector's severity and is updated by outcomes
    (reflection); ``sources`` are ids of the candles/headlines/fills it came from.
    """

    id: str
    trader_id: str
    symbol: str
    event_type: EpisodeType
    occurred_at: AwareDatetime
    description: str = Field(min_length=1)
    state: dict[str, float] = Field(default_factory=dict)
    importance: float = Field(ge=0.0, le=1.0)
    actions: list[ActionLink] = Field(default_factory=list)
    outcome: Outcome | None = None
    sources: list[str] = Field(default_factory=list)
    memory_ids: list[str] = Field(default_factory=list)
    """For ``decision`` episodes: the memories the decision was made with (provenance)."""
    outcome_horizon_s: int | None = Field(default=None, gt=0)
    """For ``decision`` episodes of a decision loop: seconds after the decision its
    outcome is measured (``agent.outcome_horizon_bars`` bars of the loop's timeframe: 4
    days for a 4h loop), so the outcomes job resolves it as the loop would; None (a
    decision an agent recorded with a tool): the job's own horizon."""

    _tz = field_validator("occurred_at")(to_utc)


class ScoredEpisode(FrozenModel):
    """An episode recalled for a query with its retrieval score and parts.

    ``score = w_sim * similarity + w_rec * recency + w_imp * importance`` where
    ``recency = 0.5 ** (age_days / half_life_days)`` (FinMem's layered memory, Yu et al. 2023).
    """

    episode: Episode
    score: float
    similarity: float = Field(ge=0.0, le=1.0)
    recency: float = Field(ge=0.0, le=1.0)
    importance: float = Field(ge=0.0, le=1.0)


# ------------------------------------------------------------------------ context

Tier = Literal["persona", "working", "episodic"]


STORED = {"stored": True}
"""Validation context of a model read back from the store: the checks of new input that
an older release did not make are not applied (what it stored stays readable)."""


def _stored(info: ValidationInfo) -> bool:
    return bool(info.context and info.context.get("stored"))


class ChatMessage(FrozenModel):
    """One message of a conversation with the agent (the trader's words, the agent's
    replies). ``id`` is the caller's and unique per trader; ``time`` is when it was said
    (UTC: it is the message's ``as_of``); ``session`` groups one sitting;
    ``image_caption`` describes an image shared with it."""

    id: str = Field(min_length=1, max_length=200)
    speaker: str = Field(min_length=1, max_length=200)
    image_caption: str | None = Field(default=None, max_length=10_000, validate_default=True)
    """A caption with no text (``""``, blanks) is no caption: None, as it is stored.
    Declared before ``text`` so that an empty text is the error (``text``, not the
    caption, is what a user forgot)."""
    text: str = Field(max_length=100_000)
    time: AwareDatetime
    session: str = Field(min_length=1, max_length=200)

    _tz = field_validator("time")(to_utc)

    @field_validator("id", "speaker", "session")
    @classmethod
    def _not_blank(cls, value: str, info: ValidationInfo) -> str:
        if not value.strip() and not _stored(info):
            raise PydanticCustomError("blank", "must not be blank")
        if breaks_lines(value) and not _stored(info):
            # a line break in a session or speaker name forged a line of another message
            # (a reviewer's: a backdated "assistant:" line in the recalled context)
            raise PydanticCustomError("one_line", "must be one line, without control characters")
        return value

    @field_validator("image_caption")
    @classmethod
    def _no_empty_caption(cls, value: str | None) -> str | None:
        return value if value is not None and value.strip() else None

    @field_validator("text")
    @classmethod
    def _says_something(cls, value: str, info: ValidationInfo) -> str:
        # a caption that failed its own check is absent: that error is the one to report
        no_caption = info.data.get("image_caption", "") is None
        if not value.strip() and no_caption and not _stored(info):
            raise PydanticCustomError("empty", "empty, and no image_caption: nothing is said")
        return value

    def render(self) -> str:
        """``Speaker: text [shares <caption>]``: the text stored, searched and shown."""
        shared = f" [shares {self.image_caption}]" if self.image_caption else ""
        return f"{self.speaker}: {self.text}{shared}".strip()


class RecalledMessage(FrozenModel):
    """A message recalled for a query: the message, its fused score (z-score units:
    comparable within one recall only) and the signals that found it."""

    message: ChatMessage
    score: float
    signals: list[str] = Field(default_factory=list)
    """Which retrievers had it in their top candidates (``message_bm25``,
    ``message_dense``, ``window_bm25``, ``window_dense``, ``session``, ``time``)."""


class MemoryContext(FrozenModel):
    """Everything retrieved for one decision of one trader on one symbol at ``as_of``.

    ``timings_ms`` has the wall time of each tier's retrieval and of the whole call;
    ``errors`` a tier's failure (the other tiers are still returned).
    """

    trader_id: str
    symbol: str | None
    """``None``: a recall over every symbol (no working tier)."""
    as_of: AwareDatetime
    query: str
    persona: PersonaProfile | None = None
    working: list[MarketSnapshot] = Field(default_factory=list)
    account: AccountState | None = None
    """The agent's account (working tier): its drawdown from the high-water mark."""
    episodes: list[ScoredEpisode] = Field(default_factory=list)
    messages: list[RecalledMessage] = Field(default_factory=list)
    """What the trader said that bears on the query (the conversation, read with the
    working tier), best first."""
    timings_ms: dict[str, float] = Field(default_factory=dict)
    errors: dict[str, str] = Field(default_factory=dict)

    _tz = field_validator("as_of")(to_utc)


class RenderedContext(FrozenModel):
    """A memory context rendered as a prompt section within a token budget.

    ``memory_ids`` are the ids of what made it into ``text`` (``persona:v<version>``,
    ``working:<symbol>@<iso time>``, episode ids), in order; ``dropped_ids`` what did not
    fit. ``tokens`` is counted with tiktoken cl100k_base.
    """

    text: str
    tokens: int = Field(ge=0)
    budget: int = Field(ge=0)
    memory_ids: list[str] = Field(default_factory=list)
    dropped_ids: list[str] = Field(default_factory=list)
    errors: dict[str, str] = Field(default_factory=dict)
    """What could not be read or fitted, per source (``persona``, ``episodic``, ...,
    ``context``): :attr:`MemoryContext.errors` of the retrieval behind ``text``, set by
    the renderer; empty when every tier answered. A tier that failed is not a tier with
    no memories."""

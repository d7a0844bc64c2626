"""The memory rules of :class:`~backend.agents.policies.RulePolicy`: what each tier changes
in a trend/volatility-targeting proposal, and why.

Each rule returns :class:`Adjustment` s (a size multiplier, or a block of new exposure,
with the memory ids it rests on and a note for the rationale). Memory never levers up:
every multiplier is at most 1. Units: sizes are fractions of equity; returns fractions.

Persona (the trader's profile as known at the bar; fills and the trader's words):

- **risk tolerance** -> :data:`RISK_SCALE` (the stated one first, else the one computed
  from fills): a conservative trader's agent takes half the size;
- **assets**: a symbol whose base asset carries under :data:`ASSET_MIN_SHARE` of the
  trader's traded notional is outside the trader's universe -> ``offprofile_scale``;
- **direction**: a trader whose opening notional is at least ``bias_share`` long (or at
  most ``1 - bias_share``) trades against that bias rarely -> ``offprofile_scale`` for a
  position against it.

Working memory (the recent window of market snapshots, newest last):

- **confirmation** (time-delay filter; Brock, Lakonishok & LeBaron 1992): a new position
  (from flat, or a reversal) is taken only when the last ``confirm_bars`` snapshots all
  show the signal's regime, so a regime that flickers for a bar does not pay two fees;
- **news shock** (event risk: prices gap after hacks and insolvencies): a topic of
  :data:`ADVERSE_TOPICS` among the last ``shock_lookback_bars`` snapshots ->
  ``shock_scale``; a snapshot holds the headlines of its last
  ``memory.detectors.news_window_bars`` bars, so one headline cuts the size for
  ``news_window_bars + shock_lookback_bars - 1`` bars (11 by default). The other news
  topics (rallies, regulation, macro) are in the headlines of almost every bar of 2022:
  measured, they would cut the size for good;
- **no short into a sell-off** (momentum crashes; Daniel & Moskowitz 2016: trend
  strategies lose most in the rebounds that follow market declines, and the loss is the
  short side's): a short while the close is more than ``short_guard_drawdown`` below the
  highest close of the window -> ``short_guard_scale`` (0 = no short);
- **drawdown control** (the agent's account as working memory holds it: equity and its
  high-water mark ``M`` over ``memory.equity_lookback_days``; Grossman & Zhou 1993,
  "Optimal investment strategies for controlling drawdowns": with the floor
  ``(1 - D) x M``, risk in proportion to the cushion above it): with ``D`` =
  ``drawdown_limit`` and the drawdown ``d = 1 - equity / M``, the size is multiplied by
  ``(D - d) / ((1 - d) x D)`` (1 at the high-water mark, 0 at the floor), at least
  ``drawdown_floor``.

Episodic memory (the episodes whose market state was nearest, with their outcome over
the agent's horizon): ``n`` returns with mean ``m`` and standard deviation ``s`` give
``t = m / (s / sqrt(n))`` (the t statistic of the mean, the neighbours' count and
dispersion as confidence; the neighbours are often bars close in time whose outcome
windows overlap, so ``n`` overstates the independent observations: a median of 11
non-overlapping windows among 32 neighbours at 4h, 20 at 1h, measured on BTC/USDT 2022,
and ``t`` is about 1.7x too large at 4h). Against the trade (``t`` for a long, ``-t``
for a short) at or below ``-episode_veto_t`` -> no exposure; at or below
``-episode_halve_t`` -> half (both off by default: the neighbours' mean outcome did not
predict the trend trades' outcome on 2021-2023).
Fewer than ``episode_min_neighbours`` -> no opinion. Risk (analogues as a volatility
forecast): when the neighbours' outcomes are more dispersed than the realised vol the
size was set for implies over the horizon (``s > sigma * sqrt(days / 365)``), the size
is cut by their ratio, down to ``episode_risk_floor`` (1 = off).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace

from backend.backtest.models import Decision, MemoryEffectKind
from backend.config import AgentSettings
from backend.data import timeframe_seconds
from backend.errors import DataError
from backend.memory.memory_ids import account_id, persona_id, snapshot_id
from backend.memory.models import AccountState, MarketSnapshot, PersonaProfile, ScoredEpisode
from backend.types import base_asset

__all__ = [
    "ADVERSE_TOPICS",
    "ASSET_MIN_SHARE",
    "RISK_SCALE",
    "Adjustment",
    "Plan",
    "drawdown_rule",
    "effect_kind",
    "episodic_rules",
    "persona_rules",
    "risk_tolerance",
    "working_rules",
]

RISK_SCALE: dict[str, float] = {"conservative": 0.5, "moderate": 1.0, "aggressive": 1.0}
"""Size multiplier per persona risk tolerance. Aggressive does not lever up beyond the
settings."""
ADVERSE_TOPICS: frozenset[str] = frozenset({"hack", "insolvency"})
"""News topics (:data:`backend.memory.NEWS_TOPICS`) that de-risk the working-memory rule."""
ASSET_MIN_SHARE = 0.05
"""Share of the trader's traded notional below which an asset is not one they trade."""


@dataclass(frozen=True)
class Adjustment:
    """One rule's effect: ``scale`` multiplies the size (0..1); ``block`` refuses new
    exposure (flat instead); ``ids`` are the memories it rests on."""

    note: str
    scale: float = 1.0
    block: bool = False
    ids: tuple[str, ...] = ()


@dataclass(frozen=True)
class Plan:
    """A proposal of the RulePolicy in the making: direction (+1, -1, 0), size (fraction
    of equity)."""

    direction: int
    size: float
    confidence: float
    notes: tuple[str, ...]
    sigma: float = 0.0
    """Annualised volatility the size was set for."""
    ids: tuple[str, ...] = ()
    changes: tuple[str, ...] = ()
    """Notes of the memory rules that changed something."""

    def apply(self, adjustments: Sequence[Adjustment]) -> Plan:
        plan = self
        for adj in adjustments:
            scale = 0.0 if adj.block else adj.scale
            changed = scale != 1.0 and plan.direction != 0 and plan.size > 1e-9
            plan = replace(
                plan,
                size=plan.size * scale,
                notes=(*plan.notes, adj.note),
                ids=(*plan.ids, *adj.ids),
                changes=(*plan.changes, adj.note) if changed else plan.changes,
            )
        return plan


def effect_kind(without: Decision, with_: Decision, current: float) -> MemoryEffectKind | None:
    """How ``with_`` differs from ``without`` (:data:`MemoryEffectKind`), None if it
    does not (targets within 1e-6)."""
    a, b = without.target_exposure(current), with_.target_exposure(current)
    if abs(a - b) <= 1e-6:
        return None
    if a * b > 0:
        return "resized"
    return "vetoed" if abs(b) <= 1e-6 else "redirected"


def risk_tolerance(profile: PersonaProfile) -> str | None:
    """The stated risk tolerance, else the one computed from fills (None if neither)."""
    for name in ("stated_risk_tolerance", "risk_tolerance"):
        attr = profile.attributes.get(name)
        if attr is not None and isinstance(attr.value, str) and attr.value in RISK_SCALE:
            return attr.value
    return None


def _asset_share(profile: PersonaProfile, asset: str) -> float | None:
    attr = profile.attributes.get("preferred_assets")
    if attr is None:
        return None
    shares = attr.detail.get("shares")
    if isinstance(shares, dict) and shares:
        return float(sum(v for k, v in shares.items() if str(k).upper() == asset))
    if isinstance(attr.value, list) and attr.value:
        return 1.0 if asset in {str(a).upper() for a in attr.value} else 0.0
    return None


def persona_rules(
    profile: PersonaProfile | None, *, symbol: str, direction: int, settings: AgentSettings
) -> list[Adjustment]:
    """The persona's adjustments of a ``direction`` (+1 long, -1 short) trade on
    ``symbol`` (module doc)."""
    if profile is None:
        return []
    pid = persona_id(profile)
    out: list[Adjustment] = []
    tolerance = risk_tolerance(profile)
    if tolerance is not None and RISK_SCALE[tolerance] != 1.0:
        scale = RISK_SCALE[tolerance]
        out.append(Adjustment(f"{tolerance} trader x{scale:g}", scale=scale, ids=(pid,)))
    asset = base_asset(symbol).upper()
    share = _asset_share(profile, asset)
    if share is not None and share < ASSET_MIN_SHARE:
        scale = settings.offprofile_scale
        note = f"{asset} is {share:.0%} of the trader's notional x{scale:g}"
        out.append(Adjustment(note, scale=scale, ids=(pid,)))
    long_share = profile.attributes.get("long_share")
    if long_share is not None and isinstance(long_share.value, int | float):
        bias = settings.bias_share
        value = float(long_share.value)
        against = (direction < 0 and value >= bias) or (direction > 0 and value <= 1 - bias)
        if against:
            scale = settings.offprofile_scale
            side = "short" if direction < 0 else "long"
            note = f"a {side} against the trader's {value:.0%} long share x{scale:g}"
            out.append(Adjustment(note, scale=scale, ids=(pid,)))
    return out


def working_rules(
    window: Sequence[MarketSnapshot],
    *,
    account: AccountState | None = None,
    regime: str,
    direction: int,
    entering: bool,
    settings: AgentSettings,
) -> list[Adjustment]:
    """Working memory's adjustments (module doc) of a ``direction`` (+1 long, -1 short)
    trade; ``window`` newest last; ``account``: the agent's (drawdown control);
    ``entering``: the trade opens or reverses a position."""
    out = drawdown_rule(account, settings) if account is not None else []
    if not window:
        return out
    n = settings.confirm_bars
    recent = list(window[-n:])
    if entering and n > 1 and (len(recent) < n or any(s.regime != regime for s in recent)):
        held = 0
        for snap in reversed(window):
            if snap.regime != regime:
                break
            held += 1
        note = f"{regime.replace('_', ' ')} for {held} of the {n} bars a new position needs"
        out.append(Adjustment(note, block=True, ids=(snapshot_id(recent[-1]),)))
    if direction < 0 and settings.short_guard_scale < 1.0:
        latest = window[-1]
        fall = latest.close / max(s.close for s in window) - 1.0
        if fall < -settings.short_guard_drawdown:
            scale = settings.short_guard_scale
            note = f"{-fall:.0%} below the window's high: no short into a sell-off x{scale:g}"
            out.append(Adjustment(note, scale=scale, ids=(snapshot_id(latest),)))
    lookback = list(window[-settings.shock_lookback_bars :])
    shocked = [s for s in lookback if ADVERSE_TOPICS.intersection(s.topics)]
    if shocked and settings.shock_scale < 1.0:
        topics = sorted({t for s in shocked for t in s.topics if t in ADVERSE_TOPICS})
        note = f"news shock ({', '.join(topics[:3])}) x{settings.shock_scale:g}"
        out.append(Adjustment(note, scale=settings.shock_scale, ids=(snapshot_id(shocked[-1]),)))
    return out


def drawdown_rule(account: AccountState, settings: AgentSettings) -> list[Adjustment]:
    """The drawdown control of the module doc (no adjustment at the high-water mark or
    with ``drawdown_limit`` None)."""
    limit, drawdown = settings.drawdown_limit, -account.drawdown
    if limit is None or drawdown <= 0:
        return []
    scale = (limit - drawdown) / ((1.0 - drawdown) * limit)
    scale = min(1.0, max(settings.drawdown_floor, scale))
    note = f"account {drawdown:.1%} below its high-water mark (limit {limit:.1%}) x{scale:.2f}"
    return [Adjustment(note, scale=scale, ids=(account_id(account),))]


def horizon_days(label: str) -> float | None:
    """An outcome horizon's label in days, read as a timeframe
    (:func:`~backend.data.timeframe_seconds`): ``"4d"`` -> 4.0, ``"24h"`` -> 1.0,
    ``"15m"`` -> 0.0104, ``"1w"`` -> 7.0; None for a label that is no timeframe."""
    try:
        return timeframe_seconds(label) / 86_400
    except DataError:
        return None


def episodic_rules(
    episodes: Sequence[ScoredEpisode],
    *,
    direction: int,
    sigma: float,
    settings: AgentSettings,
) -> list[Adjustment]:
    """Episodic memory's adjustments (module doc): outcome statistics of the recalled
    episodes (those with an outcome over a bar horizon; whole-trade outcomes excluded).
    ``sigma``: the annualised volatility the size was set for (the risk rule compares
    the neighbours' dispersion with ``sigma * sqrt(horizon_days / 365)``)."""
    known = [
        s
        for s in episodes
        if s.episode.outcome is not None and s.episode.outcome.horizon != "trade"
    ]
    n = len(known)
    if n < settings.episode_min_neighbours or n < 2:
        return []
    returns = [s.episode.outcome.market_return for s in known if s.episode.outcome is not None]
    mean = sum(returns) / n
    sd = math.sqrt(sum((r - mean) ** 2 for r in returns) / (n - 1))
    t = mean / (sd / math.sqrt(n)) if sd > 0 else math.copysign(math.inf, mean)
    against = direction * t
    ids = tuple(s.episode.id for s in known)
    horizon = known[0].episode.outcome.horizon if known[0].episode.outcome else "?"
    label = f"{n} similar states: {mean:+.2%} after {horizon} (sd {sd:.2%}, t {t:+.1f})"
    veto, halve = settings.episode_veto_t, settings.episode_halve_t
    if veto is not None and against <= -veto:
        return [Adjustment(f"{label}: veto", block=True, ids=ids)]
    out: list[Adjustment] = []
    if halve is not None and against <= -halve:
        out.append(Adjustment(f"{label}: x0.5", scale=0.5, ids=ids))
    days = horizon_days(horizon)
    floor = settings.episode_risk_floor
    if days is not None and floor < 1.0 and sigma > 0:
        expected = sigma * math.sqrt(days / 365.0)
        if sd > expected:
            scale = max(floor, expected / sd)
            note = f"{label}: wider than the {expected:.1%} vol implies x{scale:.2f}"
            out.append(Adjustment(note, scale=scale, ids=ids))
    return out or [Adjustment(label)]

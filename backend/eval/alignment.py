"""Persona alignment: how close an agent's behaviour in a backtest is to a trader's profile.

:func:`behaviour_of` reduces one run (decisions, fills, the equity / exposure / price
curves) to a :class:`~backend.eval.models.RunBehaviour`; :func:`buy_and_hold_behaviour`
is the same for buy-and-hold; :func:`persona_alignment` scores a behaviour against a
:class:`~backend.memory.models.PersonaProfile` (the reference the ablation builds with the
product, :func:`backend.eval.ablation.reference_profile`: the same for every mode of a
window). A mode's chained summary entry is the mean of its windows' alignment weighted by
their decisions (:func:`backend.eval.ablation_summary.summarize`). Pure functions: no
store, no clock, no I/O.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd

from backend.agents.constraints import check_decision
from backend.agents.memory import holding_samples
from backend.backtest import BrokerFill
from backend.backtest.models import Decision, DecisionRecord, PositionState
from backend.eval.models import RunBehaviour
from backend.memory.models import PersonaProfile

__all__ = [
    "COMPONENTS",
    "HOLDING_ZERO_FACTOR",
    "MIN_ASSET_SHARE",
    "RISK_EXPOSURE_CAP",
    "agent_holding_hours",
    "behaviour_of",
    "buy_and_hold_behaviour",
    "held_violations",
    "persona_alignment",
]

COMPONENTS: tuple[str, ...] = ("constraints", "long_share", "holding_period", "assets", "risk")
"""The alignment components, in the order they are reported."""
RISK_EXPOSURE_CAP: dict[str, float] = {"conservative": 0.5, "moderate": 1.0, "aggressive": 2.0}
"""Risk tolerance -> the mean gross exposure (notional / equity, while positioned) that
still fits it."""
HOLDING_ZERO_FACTOR = 24.0
"""Holding periods this factor apart (either way) score 0 (an hour vs a day, a day vs
~3.5 weeks)."""
MIN_ASSET_SHARE = 0.05
"""An asset counts as the trader's when it carries at least this share of the notional."""
_EPS = 1e-12
_REL_TOL = 1e-9
_HELD = Decision.hold("held")


def behaviour_of(
    decisions: Sequence[DecisionRecord],
    fills: Sequence[BrokerFill],
    *,
    equity: pd.Series,
    exposure: pd.Series,
    price: pd.Series,
    profile: PersonaProfile | None = None,
    symbol: str = "",
    hold_tolerance: float = 0.0,
) -> RunBehaviour:
    """The behaviour of one backtest run: what was executed, never what a policy proposed.

    ``equity`` (quote currency, > 0), ``exposure`` (signed notional / equity) and
    ``price`` (any positive series proportional to the bar close, e.g. the buy-and-hold
    curve) are aligned, one value per bar close, in time order; the run starts flat.

    The position in base units is recovered (up to the constant scale of ``price``) as
    ``q_t = exposure_t * equity_t / price_t``; it only changes when a fill happens, so
    ``|q_t - q_{t-1}| * price_t / equity_t`` is the exposure a fill changed at bar t
    (valued at the bar close, price drift excluded): their sum is ``turnover``. The
    opening notional of bar t is ``max(0, |q_t| - |q_{t-1}|) * price_t`` on the side of
    ``q_t`` (all of ``|q_t|`` when the side flipped); ``long_share`` = long / total.
    ``holding_hours_median``: the median of :func:`agent_holding_hours` of ``fills`` (the
    run's, in time order): the persona's own rule, so the agent and the trader are
    measured alike (the time from a position's first entry to each reduction, measured
    before, read 84 h where FIFO reads 48 h on a BTC 4h run).
    ``violating_decisions``: bar closes whose held position breaks a hard constraint of
    ``profile`` on ``symbol`` (:func:`held_violations`; 0 without a profile). Two runs
    that executed the same positions score the same, whatever their policies proposed
    (the proposals the manager's check cut are the run's ``violations``, counted apart).
    """
    e = np.asarray(exposure, dtype=np.float64)
    eq = np.asarray(equity, dtype=np.float64)
    p = np.asarray(price, dtype=np.float64)
    if not (e.shape == eq.shape == p.shape):
        raise ValueError(f"curves differ in length: {e.shape}, {eq.shape}, {p.shape}")
    safe_p = np.where(p > 0, p, np.nan)
    q = np.nan_to_num(e * eq / safe_p)
    prev = np.concatenate([[0.0], q[:-1]])
    change = q - prev
    scale = np.maximum(np.maximum(np.abs(q), np.abs(prev)), _EPS)
    change[np.abs(change) <= _REL_TOL * scale] = 0.0
    with np.errstate(divide="ignore", invalid="ignore"):
        turned = np.where(eq > 0, np.abs(change) * p / eq, 0.0)
    flipped = np.sign(prev) * np.sign(q) < 0
    opened = np.where(flipped, np.abs(q), np.maximum(0.0, np.abs(q) - np.abs(prev)))
    opened[change == 0.0] = 0.0
    notional = opened * np.nan_to_num(p)
    long_open = float(notional[q > 0].sum())
    total_open = float(notional.sum())
    positioned = np.abs(e) > _REL_TOL
    hours = agent_holding_hours(fills, symbol=symbol)
    return RunBehaviour(
        decisions=len(decisions),
        violating_decisions=held_violations(
            e, eq, profile=profile, symbol=symbol, hold_tolerance=hold_tolerance
        ),
        long_share=min(1.0, long_open / total_open) if total_open > 0 else None,
        holding_hours_median=float(np.median(hours)) if hours else None,
        positioned_share=float(positioned.mean()) if e.size else 0.0,
        mean_abs_exposure=float(np.abs(e[positioned]).mean()) if positioned.any() else None,
        turnover=float(np.nansum(turned)),
    )


def agent_holding_hours(fills: Sequence[BrokerFill], *, symbol: str = "") -> list[float]:
    """Hours each closing fill of ``fills`` (a run's, in time order, starting flat) held
    what it closed: :func:`~backend.agents.memory.holding_samples`, the persona's
    holding period rule (FIFO lots, the quantity-weighted age of the lots a fill closes;
    a fill that flips closes the whole position and opens the rest as a new lot)."""
    if not fills:
        return []
    frame = pd.DataFrame(
        {
            "symbol": symbol,
            "id": [str(i) for i in range(len(fills))],
            "timestamp": [int(f.time.timestamp() * 1000) for f in fills],
            "side": ["buy" if f.quantity > 0 else "sell" for f in fills],
            "amount": [abs(f.quantity) for f in fills],
            "start_position": math.nan,  # the run's own fills: nothing to reconcile
            "base_fee": 0.0,  # the broker's fees are in the quote currency
        }
    )
    return holding_samples(frame)[0]


def held_violations(
    exposure: Sequence[float] | np.ndarray,
    equity: Sequence[float] | np.ndarray,
    *,
    profile: PersonaProfile | None,
    symbol: str,
    hold_tolerance: float = 0.0,
) -> int:
    """How many bar closes hold a position that breaks a hard constraint of ``profile``:
    :func:`~backend.agents.constraints.check_decision` of holding that exposure (signed
    notional / equity; ``equity`` in quote currency, same length) on ``symbol`` — an
    asset the trader excludes, a short when long only, a position, notional or leverage
    cap exceeded by more than ``hold_tolerance`` (a fraction of equity: the manager's
    ``min_trade_fraction``, below which it would not trade). Flat bars never break one;
    the risk-per-trade cap applies to entries and is the check's business at the bar a
    position is opened, not here."""
    if profile is None or not profile.constraints():
        return 0
    broken = 0
    for held, eq in zip(np.asarray(exposure, dtype=np.float64), np.asarray(equity), strict=True):
        if abs(held) <= _REL_TOL or not (math.isfinite(eq) and eq > 0):
            continue
        position = PositionState(quantity=0.0, entry_price=None, equity=float(eq), exposure=held)
        _, violations = check_decision(
            _HELD, profile=profile, symbol=symbol, position=position, hold_tolerance=hold_tolerance
        )
        broken += bool(violations)
    return broken


def buy_and_hold_behaviour(
    *,
    decisions: int,
    hours: float | None,
    violating_entry: bool = False,
    violating_hold: bool = False,
) -> RunBehaviour:
    """Buy-and-hold as a behaviour: always long, exposure 1 at every bar, one position
    held for ``hours`` (the window's first to last bar close; None or <= 0: undefined),
    turnover 1 (the one buy). Its violating decisions are what it executed against the
    hard constraints (:func:`~backend.agents.constraints.check_decision`, here without a
    volatility estimate), as the agent's held positions are (:func:`held_violations`):
    ``violating_entry``, its buy (exposure 1 from flat) breaks one, counts the first
    decision; ``violating_hold``, holding exposure 1 does (an asset the trader excludes,
    a position or leverage cap; the risk cap applies to entries only), counts every later
    one."""
    broken = (1 if violating_entry else 0) + (max(decisions - 1, 0) if violating_hold else 0)
    return RunBehaviour(
        decisions=decisions,
        violating_decisions=min(broken, decisions),
        long_share=1.0,
        holding_hours_median=hours if hours is not None and hours > 0 else None,
        positioned_share=1.0,
        mean_abs_exposure=1.0,
        turnover=1.0,
    )


def _number(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def _trader_assets(profile: PersonaProfile) -> set[str] | None:
    attr = profile.attributes.get("preferred_assets")
    if attr is None or not isinstance(attr.value, list) or not attr.value:
        return None
    shares = attr.detail.get("shares")
    if isinstance(shares, dict) and shares:
        return {str(a).upper() for a, s in shares.items() if (_number(s) or 0.0) >= MIN_ASSET_SHARE}
    return {str(a).upper() for a in attr.value}  # no shares (stated): every listed asset


def _risk_tolerance(profile: PersonaProfile) -> str | None:
    for name in ("stated_risk_tolerance", "risk_tolerance"):
        attr = profile.attributes.get(name)
        if attr is not None and isinstance(attr.value, str):
            word = attr.value.strip().lower()
            if word in RISK_EXPOSURE_CAP:
                return word
    return None


def persona_alignment(
    behaviour: RunBehaviour, profile: PersonaProfile | None, *, asset: str
) -> tuple[float, dict[str, float]]:
    """How close ``behaviour`` (one run on one pair) is to the trader's ``profile``.

    ``asset``: the pair's base asset (``backend.types.base_asset("BTC/USDT")`` = ``BTC``,
    compared case-insensitively). ``profile``: the reference persona (None: no persona,
    only ``constraints`` is defined). Returns ``(alignment, parts)``: ``parts`` maps each
    component defined for this run (a subset of :data:`COMPONENTS`, in that order) to a
    score in [0, 1]; ``alignment`` is their unweighted mean, in [0, 1], higher is closer
    (``constraints`` is always defined, so ``parts`` is never empty).

    Components:

    - ``constraints``: ``1 - violating_decisions / decisions`` (1 without decisions):
      the share of bar closes whose executed position kept the trader's hard constraints
      (the seed note's and the words in the profile; :func:`held_violations`; for
      buy-and-hold also its one buy). What a policy proposed and the manager's check
      cut is not scored here (it is the run's ``violations``): equal executed behaviour
      scores equally. Always defined.
    - ``long_share``: ``1 - |agent long share - profile long_share|``, shares of opening
      notional (0..1; the profile's from the trader's fills, opening perp longs and spot
      buys vs opening shorts). Defined when the profile has it and the agent opened a
      position; 0 when the agent opened none in an asset the trader trades (see
      ``assets``: staying out of the trader's asset is out of character, so doing
      nothing never scores best).
    - ``holding_period``: ``max(0, 1 - |ln(a / p)| / ln(24))`` with ``a`` the agent's
      median hours a closing fill held its lots (FIFO, :func:`agent_holding_hours`) and
      ``p`` the profile's ``holding_period`` (the same, of the trader's fills). A log scale because
      holding times span orders of magnitude; a factor of :data:`HOLDING_ZERO_FACTOR`
      apart scores 0. Defined when both are positive; 0, as for ``long_share``, when
      the agent opened no position in an asset the trader trades.
    - ``assets``: 1 if ``asset`` carries at least :data:`MIN_ASSET_SHARE` of the trader's
      notional (``preferred_assets`` detail ``shares``; every listed asset when there are
      no shares), else ``1 - positioned_share``: trading an asset the trader does not
      trade is out of character, staying out of it is not. Defined when the profile has
      ``preferred_assets``.
    - ``risk``: the cap :data:`RISK_EXPOSURE_CAP` of the trader's risk tolerance
      (``stated_risk_tolerance`` first: what the trader says over what the fills score,
      else ``risk_tolerance``) on the mean gross exposure while positioned;
      ``min(1, cap / mean_abs_exposure)`` (1 if never positioned). Defined when a
      tolerance is known (conservative, moderate or aggressive).
    """
    decided = behaviour.decisions
    parts: dict[str, float] = {
        "constraints": 1.0 - behaviour.violating_decisions / decided if decided else 1.0
    }
    if profile is not None:
        attrs = profile.attributes
        assets = _trader_assets(profile)
        # the trader trades this asset and the agent never opened a position in it: it
        # shows none of the trader's direction or holding (a reviewer's run: an agent
        # that never traded scored 1.0, above one that traded like the trader)
        idle = behaviour.long_share is None and assets is not None and asset.upper() in assets
        want_long = _number(attrs["long_share"].value) if "long_share" in attrs else None
        if want_long is not None and behaviour.long_share is not None:
            parts["long_share"] = 1.0 - abs(behaviour.long_share - want_long)
        elif want_long is not None and idle:
            parts["long_share"] = 0.0
        want_hold = _number(attrs["holding_period"].value) if "holding_period" in attrs else None
        have_hold = behaviour.holding_hours_median
        if want_hold is not None and want_hold > 0 and have_hold is not None and have_hold > 0:
            gap = abs(math.log(have_hold / want_hold)) / math.log(HOLDING_ZERO_FACTOR)
            parts["holding_period"] = max(0.0, 1.0 - gap)
        elif want_hold is not None and want_hold > 0 and idle:
            parts["holding_period"] = 0.0
        if assets is not None:
            theirs = asset.upper() in assets
            parts["assets"] = 1.0 if theirs else 1.0 - behaviour.positioned_share
        tolerance = _risk_tolerance(profile)
        if tolerance is not None:
            cap, gross = RISK_EXPOSURE_CAP[tolerance], behaviour.mean_abs_exposure
            parts["risk"] = 1.0 if gross is None or gross <= cap else cap / gross
    clipped = {k: min(1.0, max(0.0, float(v))) for k, v in parts.items()}
    return float(np.mean(list(clipped.values()))), clipped

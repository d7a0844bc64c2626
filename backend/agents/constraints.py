"""Hard constraints enforced in code, after the policy has answered.

A trader's hard constraints (:class:`~backend.memory.models.HardConstraint`, from the
persona) and the agent's own limits are applied to every proposed
:class:`~backend.backtest.models.Decision` by :func:`check_decision`, so that no policy
— a buggy rule, or an LLM talked into "ignore previous instructions and go all in" by a
headline — can breach them: whatever the proposal, the executed decision satisfies them.

Units: ``size`` and exposures are fractions of equity (notional / equity); ``equity`` and
notionals are in quote currency; ``daily_vol`` is the standard deviation of daily returns
(a fraction, e.g. ``0.03``; the features' annualised ``rv_short / sqrt(365)``).

What each constraint does (the *target* is the signed exposure the decision asks for:
``+size`` for buy, ``-size`` for sell, 0 for close, the current exposure for hold):

- ``forbidden_assets`` (base asset listed), ``allowed_assets`` (base asset not listed),
  ``no_memecoins`` (base asset in :data:`MEMECOINS`): no exposure at all -> ``close`` when
  a position is open, else ``hold``;
- ``long_only`` (and the agent setting ``allow_short=False``): a negative target -> ``close``;
- ``max_daily_loss``: once equity is that fraction or more below the equity at the start
  of the UTC day (``day_start_equity``), new exposure is refused: buy/sell -> ``close``;
- size caps, applied in this order, each reported when it binds: ``agent.max_exposure``,
  ``max_leverage`` (|target| <= the multiple), ``no_leverage`` (|target| <= 1.0),
  ``max_position_fraction``, ``max_position_notional`` (/ equity), and
  ``max_risk_per_trade``: the loss at a stop ``stop_multiple`` (default
  :data:`STOP_VOL_MULTIPLE` = 2) daily standard deviations away must not exceed the
  fraction, i.e. ``|target| <= max_risk / max(stop_multiple * daily_vol, MIN_STOP)``
  (:data:`FALLBACK_STOP` = 5% when the volatility is unknown); ``max_loss_per_trade``
  is the same rule for an amount in quote currency (``max_risk = amount / equity``).
  The risk caps apply to buy/sell only (they are rules about entering a trade); the
  others also trim a ``hold`` whose current exposure is above them (the position itself
  must obey them).

``close`` always passes: it only removes risk. Violations are strings such as
``"max_leverage 3.0: size 5.0 -> 3.0"``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from backend.backtest.models import Decision, PositionState
from backend.memory.models import HardConstraint, PersonaProfile
from backend.types import base_asset

__all__ = [
    "FALLBACK_STOP",
    "MEMECOINS",
    "MIN_STOP",
    "STOP_VOL_MULTIPLE",
    "check_decision",
    "enforce",
    "is_memecoin",
    "stop_distance",
    "within_band",
]

MEMECOINS: frozenset[str] = frozenset(
    {
        "DOGE",
        "SHIB",
        "PEPE",
        "BONK",
        "WIF",
        "FLOKI",
        "BOME",
        "MEME",
        "TURBO",
        "MOG",
        "BRETT",
        "POPCAT",
        "NEIRO",
        "BABYDOGE",
        "ELON",
        "WOJAK",
        "LADYS",
        "MYRO",
        "SAMO",
        "PNUT",
        "GOAT",
        "MEW",
        "DOGS",
        "TRUMP",
        "FARTCOIN",
        "SPX",
        "PENGU",
        "CHILLGUY",
        "AKITA",
        "KISHU",
        "HOGE",
        "SAFEMOON",
        "COQ",
        "SLERF",
        "BABYSHIB",
        "DOGELON",
    }
)
"""Base assets treated as meme coins by ``no_memecoins``: the large dog/frog/meme tokens
by market capitalisation (CoinGecko's "Meme" category, 2021-2025). Exchange variants
with a size prefix (``1000PEPE``, ``1000SHIB``, Hyperliquid's ``kPEPE``/``kBONK``) are
recognised too (:func:`is_memecoin`)."""

STOP_VOL_MULTIPLE = 2.0
"""Stop distance of ``max_risk_per_trade`` in daily standard deviations (a 2-sigma stop)."""
MIN_STOP = 0.005
"""Smallest stop distance assumed (0.5%), so a dead-calm day cannot allow huge sizes."""
FALLBACK_STOP = 0.05
"""Stop distance when the daily volatility is unknown (5%)."""
_EPS = 1e-9


def is_memecoin(asset: str) -> bool:
    """Whether a base asset is in :data:`MEMECOINS`, also with a ``1000``/``k`` size prefix."""
    name = asset.upper()
    if name in MEMECOINS:
        return True
    for prefix in ("1000000", "1000", "1M", "K"):
        if name.startswith(prefix) and name[len(prefix) :] in MEMECOINS:
            return True
    return False


def _num(value: float | bool | list[str]) -> float:
    """A numeric constraint's cap: its value, or 0 (no position) when the value is no
    finite number >= 0 (a flag, a list, NaN, a negative). The persona router refuses such
    values (:func:`~backend.agents.memory._persona_constraint_router.check_constraint`);
    one that reaches this check anyway must not fail open (a reviewer's: a 0 or ``True``
    cap had let ``buy 3.0`` through)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return 0.0
    number = float(value)
    return number if math.isfinite(number) and number >= 0 else 0.0


def _strictest(constraints: Sequence[HardConstraint], kind: str) -> float | None:
    """The smallest numeric value of the constraints of ``kind`` (a profile's and the
    extra ones may both cap the same thing: the stricter holds), None without one."""
    return min((_num(c.value) for c in constraints if c.kind == kind), default=None)


def _assets(value: float | bool | list[str]) -> set[str]:
    return {str(v).upper() for v in value} if isinstance(value, list) else set()


def _fmt(x: float) -> str:
    """``3.0`` -> ``"3.0"``, ``0.333333`` -> ``"0.3333"``."""
    text = f"{x:.4g}"
    return text if any(c in text for c in ".en") else text + ".0"


def _flat(decision: Decision, current: float) -> Decision:
    """The decision turned into "no exposure": close if a position is open, else hold."""
    action = "close" if abs(current) > _EPS else "hold"
    return decision.model_copy(update={"action": action, "size": 0.0})


def _blocked(constraints: Sequence[HardConstraint], asset: str) -> tuple[str, str] | None:
    """``(kind, detail)`` of the first asset rule forbidding ``asset``, or None."""
    for c in constraints:
        if c.kind == "forbidden_assets" and asset in _assets(c.value):
            return c.kind, f"{sorted(_assets(c.value))}"
        if c.kind == "allowed_assets" and _assets(c.value) and asset not in _assets(c.value):
            return c.kind, f"{sorted(_assets(c.value))}"
        if c.kind == "no_memecoins" and c.value is True and is_memecoin(asset):
            return c.kind, "True"
    return None


def _caps(
    constraints: Sequence[HardConstraint],
    *,
    equity: float,
    max_exposure: float | None,
    risk_stop: float | None,
) -> list[tuple[str, float]]:
    """``(label, cap on |exposure|)`` in application order; ``risk_stop`` None = no risk cap."""
    caps: list[tuple[str, float]] = []
    if max_exposure is not None and math.isfinite(max_exposure) and max_exposure >= 0:
        caps.append((f"agent.max_exposure {_fmt(max_exposure)}", max_exposure))
    lev = _strictest(constraints, "max_leverage")
    if lev is not None:
        caps.append((f"max_leverage {_fmt(lev)}", lev))
    if any(c.kind == "no_leverage" and c.value is True for c in constraints):
        caps.append(("no_leverage", 1.0))
    frac = _strictest(constraints, "max_position_fraction")
    if frac is not None:
        caps.append((f"max_position_fraction {_fmt(frac)}", frac))
    notional = _strictest(constraints, "max_position_notional")
    if notional is not None:
        caps.append((f"max_position_notional {_fmt(notional)}", notional / equity))
    risk = _strictest(constraints, "max_risk_per_trade")
    if risk is not None and risk_stop is not None:
        caps.append((f"max_risk_per_trade {_fmt(risk)} (stop {risk_stop:.2%})", risk / risk_stop))
    loss = _strictest(constraints, "max_loss_per_trade")
    if loss is not None and risk_stop is not None:
        label = f"max_loss_per_trade {_fmt(loss)} (stop {risk_stop:.2%})"
        caps.append((label, loss / equity / risk_stop))
    return caps


def stop_distance(daily_vol: float | None, *, stop_multiple: float = STOP_VOL_MULTIPLE) -> float:
    """The stop distance (fraction of price) ``max_risk_per_trade`` assumes: ``stop_multiple``
    daily standard deviations, at least :data:`MIN_STOP`; :data:`FALLBACK_STOP` if unknown."""
    if daily_vol is None or not math.isfinite(daily_vol) or daily_vol <= 0:
        return FALLBACK_STOP
    return max(stop_multiple * daily_vol, MIN_STOP)


def check_decision(
    decision: Decision,
    *,
    profile: PersonaProfile | None,
    symbol: str,
    position: PositionState,
    equity: float | None = None,
    daily_vol: float | None = None,
    stop_multiple: float = STOP_VOL_MULTIPLE,
    max_exposure: float | None = None,
    allow_short: bool = True,
    day_start_equity: float | None = None,
    hold_tolerance: float = 0.0,
    extra: Sequence[HardConstraint] = (),
) -> tuple[Decision, list[str]]:
    """Enforce the hard constraints (module doc) on ``decision``; returns the decision to
    execute and the violated constraints (empty when the proposal already complied).

    ``profile``: the persona as of the bar (its :meth:`PersonaProfile.constraints`; None =
    no persona); ``extra``: more constraints (e.g. configured ones); ``position``: the
    account at the bar close (its signed ``exposure`` is the current one); ``equity``
    (quote currency; default ``position.equity``); ``daily_vol``: daily return standard
    deviation for the risk cap; ``max_exposure``/``allow_short``: the agent's own limits;
    ``day_start_equity``: equity at the start of the UTC day for ``max_daily_loss``;
    ``hold_tolerance``: a held position is trimmed only when it is more than this (a
    fraction of equity) above a cap — price drift of a position sized at the cap is not a
    violation worth a trade smaller than the engine's ``min_trade_fraction``.
    The decision's rationale, confidence and memory ids are kept. Never raises for any
    decision; raises ``ValueError`` for a non-positive ``equity``.
    """
    eq = position.equity if equity is None else equity
    if not (math.isfinite(eq) and eq > 0):
        raise ValueError(f"equity must be a positive number, got {eq}")
    constraints = [*(profile.constraints() if profile is not None else []), *extra]
    current = position.exposure
    violations: list[str] = []
    if decision.action == "close":
        return decision, violations
    asset = base_asset(symbol).upper()  # constraints name assets in upper case
    target = decision.target_exposure(current)

    blocked = _blocked(constraints, asset)
    if blocked is not None and (abs(target) > _EPS or abs(current) > _EPS):
        out = _flat(decision, current)
        violations.append(f"{blocked[0]} {blocked[1]}: {decision.action} {asset} -> {out.action}")
        return out, violations
    long_only = any(c.kind == "long_only" and c.value is True for c in constraints)
    if target < -_EPS and (long_only or not allow_short):
        label = "long_only" if long_only else "agent.allow_short false"
        out = _flat(decision, current)
        violations.append(f"{label}: {decision.action} {_fmt(abs(target))} -> {out.action}")
        return out, violations
    limit = _strictest(constraints, "max_daily_loss")
    if (
        limit is not None
        and day_start_equity is not None
        and day_start_equity > 0
        and decision.action in ("buy", "sell")
        and eq / day_start_equity - 1.0 <= -limit
    ):
        out = _flat(decision, current)
        loss = 1.0 - eq / day_start_equity
        violations.append(
            f"max_daily_loss {_fmt(limit)}: day loss {loss:.2%}, {decision.action} -> {out.action}"
        )
        return out, violations

    entering = decision.action in ("buy", "sell")
    risk_stop = stop_distance(daily_vol, stop_multiple=stop_multiple) if entering else None
    size = abs(target)
    slack = _EPS if entering else max(hold_tolerance, _EPS)
    for label, cap in _caps(constraints, equity=eq, max_exposure=max_exposure, risk_stop=risk_stop):
        if size > cap + slack:
            violations.append(f"{label}: size {_fmt(size)} -> {_fmt(cap)}")
            size = cap
    if not violations:
        return decision, violations
    sign = 1.0 if target >= 0 else -1.0
    if decision.action == "hold":  # the held position is above a cap: trim it
        action = "buy" if sign > 0 else "sell"
        if size <= _EPS:
            return decision.model_copy(update={"action": "close", "size": 0.0}), violations
        return decision.model_copy(update={"action": action, "size": size}), violations
    return decision.model_copy(update={"size": min(size, 10.0)}), violations


def within_band(
    decision: Decision, current: float, *, band: float, over_cap: bool = False
) -> Decision:
    """``hold`` instead of a buy/sell that keeps the position's direction and whose size
    is within ``band`` (a fraction of the decided size, ``agent.rebalance_band``) of the
    ``current`` exposure: fees are not spent chasing every wiggle of realised vol. The
    manager applies it after :func:`check_decision`, for every policy and memory mode
    alike; any other decision is returned unchanged. ``over_cap``: the position as held
    breaks a hard constraint (:func:`check_decision` of a ``hold`` reports one: a cap
    exceeded by price drift, an asset the trader has since excluded); a decision that
    makes it smaller is then kept whatever its size, so the band never leaves a position
    above a trader's limit. It depends on the position, not on what was proposed, so
    every memory mode is banded alike."""
    if decision.action not in ("buy", "sell"):
        return decision
    target = decision.target_exposure(current)
    if over_cap and abs(target) < abs(current):
        return decision  # a trim to a hard cap is not a wiggle: the band never undoes it
    if current * target > 0 and abs(target - current) <= band * decision.size:
        note = f"; keep {current:+.2f} (within band)"
        return decision.model_copy(
            update={"action": "hold", "size": 0.0, "rationale": (decision.rationale + note)[:4000]}
        )
    return decision


def enforce(
    decision: Decision,
    *,
    profile: PersonaProfile | None,
    symbol: str,
    position: PositionState,
    daily_vol: float | None,
    max_exposure: float | None,
    allow_short: bool,
    day_start_equity: float | None,
    hold_tolerance: float,
    band: float,
) -> tuple[Decision, list[str]]:
    """What the decision loop executes of ``decision``: :func:`check_decision`, then
    :func:`within_band` (``band``: ``agent.rebalance_band``), whose ``over_cap`` is the
    check of a ``hold`` of the held position (a cap it breaks by price drift, an asset
    since excluded: the same in every memory mode). Returns the decision and the
    violations of the proposal. The manager runs it on the policy's answer, and on the
    answer the same policy gives without memory (the report's "without memory")."""
    checked, violations = check_decision(
        decision,
        profile=profile,
        symbol=symbol,
        position=position,
        daily_vol=daily_vol,
        max_exposure=max_exposure,
        allow_short=allow_short,
        day_start_equity=day_start_equity,
        hold_tolerance=hold_tolerance,
    )
    over_cap = checked.action in ("buy", "sell") and bool(
        check_decision(
            Decision.hold("held"),
            profile=profile,
            symbol=symbol,
            position=position,
            max_exposure=max_exposure,
            allow_short=allow_short,
            hold_tolerance=hold_tolerance,
        )[1]
    )
    return within_band(checked, position.exposure, band=band, over_cap=over_cap), violations

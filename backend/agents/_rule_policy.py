"""The offline default policy, :class:`RulePolicy`: trend following with volatility
targeting whose sizing and vetoes read every memory tier (:mod:`backend.agents._rules`)."""

from __future__ import annotations

import math
from typing import Literal

from backend.agents._rules import Plan, effect_kind, episodic_rules, persona_rules, working_rules
from backend.agents._view import DecisionView, daily_vol
from backend.agents.constraints import check_decision
from backend.backtest.models import WARMING_UP, Decision, MemoryEffect
from backend.config import AgentSettings
from backend.memory.memory_ids import persona_id
from backend.memory.models import PersonaProfile

__all__ = ["SPREAD_FULL_CONFIDENCE", "RulePolicy"]

_EPS = 1e-9
SPREAD_FULL_CONFIDENCE = 0.05
"""EMA spread (fraction) at which the trend signal has confidence 1."""


class RulePolicy:
    """Trend following with volatility targeting, shaped by every memory tier.

    1. **Signal** (time-series momentum; Moskowitz, Ooi & Pedersen 2012): the features'
       regime — ``trend_up`` (fast EMA >= 1% over the slow one, close above it) -> long;
       ``trend_down`` -> short (flat if ``allow_short`` is false); ``range`` -> flat,
       except that an open position is kept while the EMA spread has not crossed zero
       against it (hysteresis: enter at the 1% band, exit at 0). Not before the features
       are warm (30 days).
    2. **Size** (volatility-managed exposure; Moreira & Muir 2017):
       ``target_vol / sigma`` with ``sigma = max(rv_long, rv_short)`` (annualised, 30-day
       and 1-day realised vol), capped at ``max_exposure``.
    3. **Memory** (each tier only when it is in the context; :mod:`backend.agents._rules`
       documents every rule and its source): the persona (risk tolerance, the trader's
       assets and direction bias), working memory (drawdown control on the agent's
       account, regime confirmation before a new position, news-shock de-risking, no
       short into a sell-off) and episodic memory
       (the outcomes of the episodes whose market state was nearest: their dispersion
       cuts the size, their mean may veto or halve the trade). Which rules are on by
       default was chosen on 2021-2023 only (``config/default.yaml``, agent section).
    4. **The trader's limits** (persona): the proposal is cut to the persona's hard
       constraints (:func:`check_decision`): an agent that knows its trader proposes
       within them. With memory off nothing is known here; the manager's check (the same
       one, in every mode, after the policy) enforces them and counts the violation.

    The no-trade band is the manager's (``agent.rebalance_band``), after the check.
    ``memory_ids``: the memories behind every rule that applied. ``memory_effect``: set
    when memory changed the proposal, against the same policy without memory reads
    (cut to the same constraints, so the constraints alone never count as memory's).
    """

    def __init__(self, settings: AgentSettings) -> None:
        self.settings = settings

    def decide(self, view: DecisionView) -> Decision:
        row = view.features
        if not row.warm:
            return Decision.hold(f"{WARMING_UP}: the features need 30 days of history")
        vols = [row.values[k] for k in ("rv_long", "rv_short") if math.isfinite(row.values[k])]
        sigma = max(vols, default=0.0)
        spread = row.values["trend_spread"]
        if sigma <= 0 or not math.isfinite(spread):
            return Decision.hold("no volatility estimate")
        base = self._signal(view, sigma, spread)
        ctx = view.context
        if ctx is None:
            return self._decision(view, base, None)
        plan = self._with_memory(view, base)
        decision = self._decision(view, plan, ctx.persona)
        if not plan.changes:
            return decision
        without = self._decision(view, base, ctx.persona)
        kind = effect_kind(without, decision, view.bar.position.exposure)
        if kind is None:
            return decision
        effect = MemoryEffect(
            kind=kind,
            without_action=without.action,
            without_size=without.size,
            reasons=list(plan.changes),
        )
        return decision.model_copy(update={"memory_effect": effect})

    def _signal(self, view: DecisionView, sigma: float, spread: float) -> Plan:
        s, row = self.settings, view.features
        current = view.bar.position.exposure
        direction = {"trend_up": 1, "trend_down": -1}.get(row.regime, 0)
        if direction == 0 and current * spread > 0:
            direction = 1 if current > 0 else -1  # hysteresis: keep until the spread crosses 0
        if direction < 0 and not s.allow_short:
            direction = 0
        confidence = min(1.0, abs(spread) / SPREAD_FULL_CONFIDENCE)
        note = f"{row.regime.replace('_', ' ')} (EMA spread {spread:+.2%})"
        if direction == 0:
            return Plan(0, 0.0, confidence, (note + ": no trend to follow, flat",))
        size = min(s.target_vol / sigma, s.max_exposure)
        notes = (note, f"vol {sigma:.0%}/y -> size {size:.2f}")
        return Plan(direction, size, confidence, notes, sigma=sigma)

    def _with_memory(self, view: DecisionView, plan: Plan) -> Plan:
        ctx = view.context
        if ctx is None or plan.direction == 0:
            return plan
        s = self.settings
        current = view.bar.position.exposure
        entering = current * plan.direction <= _EPS
        plan = plan.apply(
            persona_rules(ctx.persona, symbol=view.bar.symbol, direction=plan.direction, settings=s)
        )
        plan = plan.apply(
            working_rules(
                ctx.working,
                account=ctx.account,
                regime=view.features.regime,
                direction=plan.direction,
                entering=entering,
                settings=s,
            )
        )
        return plan.apply(
            episodic_rules(ctx.episodes, direction=plan.direction, sigma=plan.sigma, settings=s)
        )

    def _decision(self, view: DecisionView, plan: Plan, profile: PersonaProfile | None) -> Decision:
        """The plan as a decision, cut to ``profile``'s hard constraints (step 4)."""
        s, bar = self.settings, view.bar
        current = bar.position.exposure
        ids = list(plan.ids)
        notes = list(plan.notes)
        if plan.direction != 0 and plan.size > _EPS:
            action: Literal["buy", "sell"] = "buy" if plan.direction > 0 else "sell"
            size = min(plan.size, 10.0)
            proposal = Decision(action=action, size=size, confidence=plan.confidence)
        elif abs(current) > _EPS:
            proposal = Decision(action="close", confidence=plan.confidence)
        else:
            proposal = Decision(action="hold", confidence=plan.confidence)
        if profile is not None and profile.constraints():
            proposal, violations = check_decision(
                proposal,
                profile=profile,
                symbol=bar.symbol,
                position=bar.position,
                daily_vol=daily_vol(view.features),
                max_exposure=s.max_exposure,
                allow_short=s.allow_short,
            )
            if violations:
                ids.append(persona_id(profile))
                notes.append("within the trader's limits: " + "; ".join(violations))
        else:
            violations = []
        if proposal.action in ("buy", "sell") and proposal.size <= _EPS:
            proposal = Decision(action="close" if abs(current) > _EPS else "hold")
        return proposal.model_copy(
            update={
                "rationale": "; ".join(notes)[:4000],
                "memory_ids": list(dict.fromkeys(ids)),
                "confidence": plan.confidence,
                "limits": violations,
            }
        )

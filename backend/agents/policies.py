"""Decision policies of the DeepTraderManager: what to do at one bar close.

A :class:`Policy` turns a :class:`DecisionView` (the bar, its precomputed features, the
retrieved memory and its rendered prompt section) into a
:class:`~backend.backtest.models.Decision`. Two are provided:

- :class:`RulePolicy` (offline default): trend following with volatility targeting whose
  sizing and vetoes read the memory (persona risk tolerance, hard constraints, the
  account's drawdown, outcomes of similar past episodes). With memory off it is the
  plain trend/vol strategy.
- :class:`LLMPolicy`: an OpenAI-compatible chat model answering a structured
  :class:`LLMDecision`; every fault becomes ``hold`` with the error recorded.

Whatever a policy proposes, the manager enforces the hard constraints in code afterwards
(:func:`backend.agents.constraints.check_decision`).
"""

from backend.agents._llm_policy import LLMDecision, LLMPolicy, citation_keys, decision_prompt
from backend.agents._rule_policy import RulePolicy
from backend.agents._rules import RISK_SCALE
from backend.agents._view import DecisionView, Policy, daily_vol

__all__ = [
    "RISK_SCALE",
    "DecisionView",
    "LLMDecision",
    "LLMPolicy",
    "Policy",
    "RulePolicy",
    "citation_keys",
    "daily_vol",
    "decision_prompt",
]

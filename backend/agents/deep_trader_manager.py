"""The DeepTraderManager: the decision loop of the agent over its hierarchical memory.

At each bar close (:meth:`DeepTraderManager.on_bar`, driven by the backtest engine or a
live scheduler), with ``as_of`` = the bar's close time for every read and write:

a. working memory observes the bar (``WorkingMemory.observe_bar``: snapshot, topics,
   consolidation of overflow into ``context`` episodes);
b. detected episodes (market events, news shocks; precomputed from the whole frame) whose
   ``occurred_at`` has passed are added, in one batch; at a new loop's first bar, those
   detected before it are written with their outcomes before anything is read (the warm
   start);
c. the three tiers are retrieved and rendered within the token budget
   (``HierarchicalMemory.retrieve`` + ``render_context``, as ``build_context`` does; the
   episodic query is :func:`situation_query`), every ``agent.context_every_bars`` bars (in
   between, the last context, from an earlier ``as_of``, is reused);
d. the policy decides (:mod:`backend.agents.policies`);
e. the persona's hard constraints as of the bar are enforced in code
   (:func:`backend.agents.constraints.check_decision`);
f. a decision that trades (its target exposure differs from the current one by at least
   ``min_trade_fraction``, or it closes an open position) is recorded as a ``decision``
   episode with the ids of the memories it used; holds and no-op decisions are not
   stored (they carry no action to learn from, and storing them would cost one embedding
   per bar);
g. outcomes: ``outcome_horizon_bars`` after a recorded decision or a detected event its
   outcome (market return, estimated PnL) is recorded, which updates its importance
   (reflection); a closed trade (:meth:`DeepTraderManager.on_trade_closed`) records its
   realised PnL on the decision that opened it (a position reduced in steps: one
   outcome when it closes). Writes are batched
   (:mod:`backend.agents._memory_writer`).

With memory off (``agent.memory = False`` or no memory system): no retrieval and no
memory writes (the ablation); the same hard constraints are still enforced from a
profile built in process from the seed note (nothing stored), and ``prompt_tokens`` = 0.
"""

from __future__ import annotations

from backend.agents._manager import DeepTraderManager, situation_query
from backend.agents._memory_reader import bar_state

__all__ = [
    "DEFAULT_CONSTRAINTS_NOTE",
    "DeepTraderManager",
    "bar_state",
    "situation_query",
]

DEFAULT_CONSTRAINTS_NOTE = (
    "Never more than 2% risk per trade, never more than 3x leverage, no memecoins."
)
"""The demo trader's note, recorded as of the first bar when the persona is empty: it
becomes the hard constraints max_risk_per_trade 0.02, max_leverage 3.0, no_memecoins."""

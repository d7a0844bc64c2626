"""The persona's models (O-Mem's persona memory: who the trader is): a hard constraint the
trader stated, one attribute of a profile with its provenance, the versioned profile and one
routed change of it. Defined only here; imported from :mod:`backend.memory.models`, as
every model of the memory is."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import AwareDatetime, Field, field_validator

from backend.types import FrozenModel, to_utc

__all__ = ["ChangeAction", "HardConstraint", "PersonaAttribute", "PersonaChange", "PersonaProfile"]

ChangeAction = Literal["ADD", "UPDATE", "DELETE", "IGNORE"]
"""O-Mem's persona router decision for one candidate attribute change (ADD / UPDATE /
IGNORE), plus mem0's DELETE for a hard constraint the trader lifts (a forbidden asset
or a flag rule: :mod:`backend.agents.memory._persona_lifts`)."""


class HardConstraint(FrozenModel):
    """A rule the trader stated and the agent must obey in code (not only in the prompt).

    ``kind`` values and the meaning of ``value``:
    - ``max_risk_per_trade``: fraction of equity at risk per trade (``0.02`` = 2%);
    - ``max_position_fraction``: position notional as a fraction of equity;
    - ``max_position_notional``: position notional in quote currency;
    - ``max_loss_per_trade``: loss per trade in quote currency (``max_risk_per_trade``
      as an amount: "never lose more than $200 on a trade");
    - ``max_leverage``: gross leverage multiple (``3.0`` = 3x);
    - ``max_daily_loss``: fraction of equity;
    - ``forbidden_assets`` / ``allowed_assets``: list of base-asset tickers (upper case);
    - ``no_memecoins``: ``True``; ``long_only``: ``True``; ``no_leverage``: ``True``.
    ``quote`` is the trader's own words it came from.
    """

    kind: Literal[
        "max_risk_per_trade",
        "max_position_fraction",
        "max_position_notional",
        "max_loss_per_trade",
        "max_leverage",
        "max_daily_loss",
        "forbidden_assets",
        "allowed_assets",
        "no_memecoins",
        "long_only",
        "no_leverage",
    ]
    value: float | bool | list[str]
    quote: str = Field(max_length=1000)


class PersonaAttribute(FrozenModel):
    """One attribute of a trader profile with its provenance.

    ``value`` is JSON-serialisable (number, string, list or mapping); ``confidence`` 0..1;
    ``evidence`` holds up to 50 ids of the fills or notes it came from (the newest last)
    and ``evidence_count`` how many there were in all; ``source`` tells whether it was
    computed from fills, read by rules from the trader's words, or by an LLM.
    """

    name: str = Field(pattern=r"^[a-z][a-z0-9_]{0,63}$")
    value: Any
    confidence: float = Field(ge=0.0, le=1.0)
    evidence: list[str] = Field(default_factory=list, max_length=50)
    evidence_count: int = Field(default=0, ge=0)
    source: Literal["fills", "rules", "llm"]
    first_seen: AwareDatetime
    last_updated: AwareDatetime
    detail: dict[str, Any] = Field(default_factory=dict)
    """The numbers behind the value (e.g. for ``risk_tolerance``)."""

    _tz = field_validator("first_seen", "last_updated")(to_utc)


class PersonaProfile(FrozenModel):
    """A trader's profile as known at ``as_of``; ``version`` increases with every change."""

    trader_id: str
    version: int = Field(ge=0)
    as_of: AwareDatetime
    attributes: dict[str, PersonaAttribute] = Field(default_factory=dict)

    _tz = field_validator("as_of")(to_utc)

    def constraints(self) -> list[HardConstraint]:
        """The trader's hard constraints (attribute ``constraints``), validated."""
        attr = self.attributes.get("constraints")
        if attr is None or not isinstance(attr.value, list):
            return []
        return [HardConstraint.model_validate(c) for c in attr.value]


class PersonaChange(FrozenModel):
    """One routed change of a profile (kept as history for the persona timeline)."""

    trader_id: str
    attribute: str
    action: ChangeAction
    old_value: Any = None
    new_value: Any = None
    reason: str = ""
    source: Literal["fills", "rules", "llm"]
    as_of: AwareDatetime
    version: int = Field(ge=0)
    """Profile version after the change (unchanged for IGNORE)."""

    _tz = field_validator("as_of")(to_utc)

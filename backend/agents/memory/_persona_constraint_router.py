"""The persona router's part for hard constraints (:mod:`._persona_router`'s module doc):
a constraint's canonical form (:func:`check_constraint`), a new or changed limit
(:func:`route_constraint`: one per kind, forbidden lists united, a looser value only
when the trader says it changes) and a lifted ban (:func:`route_lift`).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from backend.agents.memory._persona_change import sentence_of, states_a_change
from backend.agents.memory._persona_lifts import LIFTABLE_KINDS, note_lifts
from backend.agents.memory._persona_stated import NUMBER_WORD, NUMBER_WORDS
from backend.llm.prompts import PersonaDecision
from backend.memory.models import ChangeAction, HardConstraint, PersonaAttribute
from backend.text.tickers import KNOWN_TICKERS, mentioned_tickers

__all__ = [
    "UNSAID",
    "Pending",
    "check_constraint",
    "constraint_said",
    "route_constraint",
    "route_lift",
    "same_value",
]

_FLAG_KINDS = ("no_memecoins", "long_only", "no_leverage")


@dataclass
class Pending:
    """One routed candidate before the change record is written (:mod:`._persona_router`)."""

    attribute: str
    action: ChangeAction
    old: Any
    new: Any
    reason: str


def same_value(a: Any, b: Any) -> bool:
    """Deep equality of JSON values (``1`` == ``1.0``, mapping order ignored)."""
    return json.dumps(a, sort_keys=True, default=str) == json.dumps(b, sort_keys=True, default=str)


_TICKER = re.compile(r"[A-Z0-9@][A-Z0-9@._\-]{0,19}")
"""An upper-cased ticker (``BTC``, ``1000PEPE``, ``KPEPE``, Hyperliquid spot ids ``@107``):
no brackets or other markup can reach the prompt's hard-constraints line."""


def check_constraint(constraint: HardConstraint) -> HardConstraint | str:
    """The constraint in canonical form, or why it is invalid: fractions in (0, 1];
    ``max_leverage`` in (0, 200]; ``max_position_notional`` and ``max_loss_per_trade`` > 0;
    asset kinds a non-empty list of tickers (upper-cased, 1-20 chars of A-Z 0-9 @ . _ -);
    flag kinds ``True``."""
    kind, value = constraint.kind, constraint.value
    if kind in _FLAG_KINDS:
        return constraint if value is True else f"{kind} must be true, got {value!r}"
    if kind in ("forbidden_assets", "allowed_assets"):
        if not isinstance(value, list) or not value:
            return f"{kind} needs a non-empty list of tickers, got {value!r}"
        tickers = list(dict.fromkeys(str(v).strip().upper() for v in value))
        if not all(_TICKER.fullmatch(t) for t in tickers):
            return f"{kind}: invalid ticker in {value!r}"
        return constraint.model_copy(update={"value": tickers})
    if isinstance(value, bool) or not isinstance(value, int | float):
        return f"{kind} needs a number, got {value!r}"
    number = float(value)
    limits = {
        "max_leverage": (0.0, 200.0),
        "max_position_notional": (0.0, 1e15),
        "max_loss_per_trade": (0.0, 1e15),
    }
    low, high = limits.get(kind, (0.0, 1.0))
    if not low < number <= high:
        return f"{kind} = {number} is outside ({low}, {high}]"
    return constraint.model_copy(update={"value": number})


UNSAID = "invalid: not in the trader's words"
"""The reason of a model's reading the trader's words do not hold (the router's too)."""
_FLAG_WORDS = {
    "long_only": ("long", "short"),
    "no_leverage": ("leverage", "levered", "margin"),
    "no_memecoins": ("meme",),
}
"""Per flag kind, the words one of which starts a word of its quote's sentence
("shorts", "memecoins"; not "along" for long)."""
_FRACTION_KINDS = frozenset(("max_risk_per_trade", "max_position_fraction", "max_daily_loss"))
_AMOUNT = re.compile(r"(\d+(?:,\d{3})*(?:\.\d+)?|\.\d+)(?:\s*([km])\b)?", re.IGNORECASE)
_SCALE = {"": 1.0, "k": 1e3, "m": 1e6}
_NUMBER_WORD = re.compile(rf"\b({NUMBER_WORD})\b", re.IGNORECASE)


def _amounts(sentence: str) -> list[float]:
    """The numbers written in ``sentence``: "2%" and "2" are 2, "1,500" is 1500, "$2k"
    is 2000, "twelve" is 12 (:data:`NUMBER_WORDS`, the table the offline rules read)."""
    return [
        float(number.replace(",", "")) * _SCALE[(suffix or "").lower()]
        for number, suffix in _AMOUNT.findall(sentence)
    ] + [float(NUMBER_WORDS[w.lower()]) for w in _NUMBER_WORD.findall(sentence)]


def constraint_said(constraint: HardConstraint, note: str) -> bool:
    """Whether a model's ``constraint`` (in :func:`check_constraint`'s canonical form) is
    in the trader's words ``note``: one sentence of the note holds its ``quote``
    (:func:`sentence_of`), and that sentence states its value: for a flag, a word of it
    (:data:`_FLAG_WORDS`: "never short" for ``long_only``); for an asset list, every
    ticker, in upper case or by its coin name ("no solana" names SOL); for a number, the
    number itself, or for a fraction of equity its percent ("2%" for 0.02). Negation is
    no test here: a constraint is most often said as one ("never more than 3x").

    A reviewer's model stored ``forbidden_assets`` ETH and SOL quoting "no memecoins",
    and ``long_only`` quoting "risk", from "Never risk more than 2% per trade, and no
    memecoins.": hard constraints, enforced in code, that the trader never set. A
    refused reading leaves the note to the offline rules."""
    sentence = sentence_of(constraint.quote, note)
    if sentence is None:
        return False
    kind, value = constraint.kind, constraint.value
    if kind in _FLAG_WORDS:  # at a word's start: "shorts" holds "short", "shortly" too
        return re.search(rf"\b(?:{'|'.join(_FLAG_WORDS[kind])})", sentence, re.I) is not None
    if isinstance(value, list):
        named = set(mentioned_tickers(sentence))
        named.update(word for word in re.findall(r"[A-Za-z0-9@]+", sentence) if word.isupper())
        return all(ticker in named for ticker in value)
    if isinstance(value, bool):
        return False
    wanted = [float(value)] + ([float(value) * 100] if kind in _FRACTION_KINDS else [])
    return any(abs(n - w) <= 1e-9 * max(1.0, abs(w)) for n in _amounts(sentence) for w in wanted)


def route_constraint(
    d: PersonaDecision,
    attrs: dict[str, PersonaAttribute],
    pending: list[Pending],
    put: Callable[[str, Any], None],
    text: str | None,
    *,
    said_in: str | None = None,
) -> None:
    """A new or changed hard constraint (module doc). ``said_in``: the trader's words a
    model read it in, which must state it (:func:`constraint_said`); None for the rules'
    own readings."""
    if d.constraint is None:
        pending.append(Pending("constraints", "IGNORE", None, None, "invalid: no constraint"))
        return
    checked = check_constraint(d.constraint)
    if isinstance(checked, str):
        new_raw = d.constraint.model_dump(mode="json")
        pending.append(Pending("constraints", "IGNORE", None, new_raw, f"invalid: {checked}"))
        return
    if said_in is not None and not constraint_said(checked, said_in):
        new_raw = checked.model_dump(mode="json")
        pending.append(Pending("constraints", "IGNORE", None, new_raw, UNSAID))
        return
    current, index = _stored(attrs, checked.kind)
    old = current[index] if index is not None else None
    if old is not None and checked.kind == "forbidden_assets":
        united = list(dict.fromkeys([*old["value"], *checked.value]))  # type: ignore[misc]
        checked = checked.model_copy(update={"value": united})
    new = checked.model_dump(mode="json")
    if old is not None and same_value(old["value"], new["value"]):
        pending.append(Pending("constraints", "IGNORE", old, new, f"unchanged: {checked.kind}"))
        return
    looser = old is not None and _looser(checked.kind, old["value"], new["value"])
    said = checked.quote if text is None else sentence_of(checked.quote, text)
    numeric = not isinstance(new["value"], list)
    if looser and old is not None and not (said and states_a_change(said, numeric=numeric)):
        reason = (
            f"looser than the stored {checked.kind} {old['value']}: a hard constraint is "
            "relaxed only when the trader says it changes (e.g. 'raise my max leverage to 10x')"
        )
        pending.append(Pending("constraints", "IGNORE", old, new, reason))
        return
    if index is None:
        current.append(new)
    else:
        current[index] = new
    put("constraints", current)
    action: ChangeAction = "ADD" if old is None else "UPDATE"
    pending.append(Pending("constraints", action, old, new, d.reason))


def route_lift(
    d: PersonaDecision,
    attrs: dict[str, PersonaAttribute],
    pending: list[Pending],
    put: Callable[[str, Any], None],
    text: str | None,
) -> None:
    """A ``DELETE`` of a constraint: the lift the module doc allows, else ``IGNORE``.
    ``text``: the words the lift must be read in (the note, or a chat's run of the
    trader's messages up to it); None: the constraint's quote."""
    if d.constraint is None:
        pending.append(Pending("constraints", "IGNORE", None, None, "invalid: nothing to lift"))
        return
    raw = d.constraint.model_dump(mode="json")
    checked = check_constraint(d.constraint)
    if isinstance(checked, str) or checked.kind not in LIFTABLE_KINDS:
        why = checked if isinstance(checked, str) else (
            f"{checked.kind} is not lifted: a cap is raised by saying so "
            "('raise my max leverage to 10x')"
        )  # fmt: skip
        pending.append(Pending("constraints", "IGNORE", None, raw, f"invalid: {why}"))
        return
    # the rules' reading of the whole note: the same kind, every ticker among theirs
    read = next((c for c in note_lifts(checked.quote if text is None else text)
                 if c.kind == checked.kind), None)  # fmt: skip
    said = set(read.value) if read is not None and isinstance(read.value, list) else set()
    lifted = checked.value if isinstance(checked.value, list) else []
    if read is None or not set(lifted) <= said:
        reason = (
            f"not lifted: {checked.kind} is lifted only by a note that is nothing but the "
            "lift (e.g. 'SOL is allowed again.', 'You can short again.')"
        )
        pending.append(Pending("constraints", "IGNORE", None, raw, reason))
        return
    current, index = _stored(attrs, checked.kind)
    old = current[index] if index is not None else None
    forbidden = old["value"] if old is not None and isinstance(old["value"], list) else []
    strange = sorted(t for t in said if t not in KNOWN_TICKERS and t not in forbidden)
    if strange:  # "Unban SOL, JK": a word in capitals read as a ticker
        reason = f"not lifted: {', '.join(strange)} is no known coin and not forbidden"
        pending.append(Pending("constraints", "IGNORE", old, raw, reason))
        return
    left = [t for t in forbidden if t not in lifted]
    if old is None or index is None or (lifted and len(left) == len(forbidden)):
        reason = f"unchanged: no {checked.kind} {lifted or ''} to lift".replace("  ", " ")
        pending.append(Pending("constraints", "IGNORE", old, raw, reason))
        return
    new = {**old, "value": left} if left else None
    if new is None:
        del current[index]
    else:
        current[index] = new
    put("constraints", current)
    pending.append(Pending("constraints", "DELETE", old, new, d.reason))


def _stored(
    attrs: dict[str, PersonaAttribute], kind: str
) -> tuple[list[dict[str, Any]], int | None]:
    """The stored constraints (a copy) and the index of the one of ``kind`` (None)."""
    current = list(attrs["constraints"].value) if "constraints" in attrs else []
    return current, next((i for i, c in enumerate(current) if c.get("kind") == kind), None)


def _looser(kind: str, old: Any, new: Any) -> bool:
    """Whether ``new`` allows more than ``old``: a larger cap, or an allowed-asset list
    with an asset the old one did not allow (booleans and forbidden lists never loosen:
    those are only ever set or united)."""
    if kind == "allowed_assets" and isinstance(old, list) and isinstance(new, list):
        return not {str(a).upper() for a in new} <= {str(a).upper() for a in old}
    numbers = (int, float)
    if isinstance(old, bool | list) or isinstance(new, bool | list):
        return False
    return isinstance(old, numbers) and isinstance(new, numbers) and new > old

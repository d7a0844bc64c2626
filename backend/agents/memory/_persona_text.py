"""Deterministic rules that read a trader's own words into persona decisions (offline default).

:func:`text_decisions` returns the same :class:`~backend.llm.prompts.PersonaDecision`
objects the LLM path returns, so both go through one router. The rules are regular
expressions over sentences (split at ``. ! ? ; newline``, never inside a decimal number)
and, for the numeric limits, over comma-separated clauses:

- percentages (``2%``, ``2 percent``, ``two percent``) become fractions (``0.02``); a
  clause with a percentage is classified by its words: ``day``/``daily``/``for the day``
  with a loss word -> ``max_daily_loss``; a loss over another period (week, month,
  overall, drawdown) -> nothing (no kind holds it); a stop-loss distance -> nothing;
  ``risk`` -> ``max_risk_per_trade``; ``lose``/``loss``/``stop`` with a limit word
  (never, max, at most, up to, above, ...) -> ``max_risk_per_trade``;
  ``position``/``size``/``allocate``/``exposure``/``of my account`` with a limit word ->
  ``max_position_fraction``; ``per trade``/``a trade``/``/trade`` with a limit word ->
  ``max_risk_per_trade``;
- ``3x`` (``three times`` in a clause that says leverage) with a limit word ->
  ``max_leverage`` ``3.0`` (not "I use 20x sometimes"); ``no leverage`` / ``never use
  leverage`` / ``without leverage`` / ``keep me out of leverage`` -> ``no_leverage``;
- the number of a limit is the first one after the clause's first limit word ("usually 5x
  and never above 10x" -> 10x), never a floor ("never go below 2x", "at least 1%"); a
  clause that gives a permission ("I don't mind 10x", "no problem going above 3x", "I can
  lose 50% on a trade") states no limit; two mentions of one limit keep the stricter;
- ``$5,000``/``5k USDC``/``10k`` with a position word and a limit word ->
  ``max_position_notional``; with a loss word (lose, loss, risk) instead ->
  ``max_loss_per_trade`` ("never lose more than $200 on a trade"), and over a day or
  another period -> nothing (no kind holds a loss amount per period);
- a meme-coin word after a negation with only trading words between, or followed by
  never/no/banned -> ``no_memecoins``; ``long only``, ``I never short``, ``no shorting``,
  ``never short SOL``, ``no BTC shorts`` -> ``long_only`` (there is no per-coin short
  limit: the safe reading), not when the sentence also says "I short ..." nor with
  words that put it in the past in its clause ("until", "used to", "no longer");
- ``only trade BTC and ETH``, a sentence "Only BTC and ETH (for me)" or "BTC and ETH
  only" -> ``allowed_assets``; ``never touch SOL``, ``no DOGE``,
  ``avoid XRP``, ``keep me out of SOL``, ``SOL is off limits`` -> ``forbidden_assets``
  (not "no BTC shorts": see ``long_only``; not in a question or someone else's view:
  "who says SOL is off limits"). Tickers are upper case as written (``DOGE``) or known
  coin names in any case (``bitcoin``, ``eth``, ``solana``; see :data:`COIN_NAMES`);
- no rule at all in a question ("Should I avoid SOL?"; a tag question such as "Max 2% a
  trade, ok?" is a statement) nor in someone else's view with no word of the trader's
  own ("My coach says never risk more than 1%", "Most pros risk no more than 1%");
- a negation just before a rule's words in the same clause undoes it ("I don't avoid
  SOL", "I no longer only trade BTC", "I can't trade without leverage"; :data:`UNDONE`);
- goals: ``my goal is ...``, ``I want to ...``, ``I'd like to ...``, ``aiming for ...``,
  ``target ...`` (the rest of the sentence; not when it states a limit);
- stated risk tolerance (``I'm a conservative trader``), style (``I'm a swing trader``,
  ``I scalp``), holding period (``I usually hold for a few days``) and preferred assets
  (``I mostly trade SOL``) -> the ``risk_tolerance``/``style``/``holding_period``/
  ``preferred_assets`` decisions (the router stores them as ``stated_*``, next to what the
  fills show);
- a note that is nothing but the lift of bans ("unban SOL", "SOL is allowed again", "you
  can short again", "lift the no-leverage rule": :mod:`._persona_lifts`) -> a ``DELETE``
  of each constraint (the tickers lifted, or the flag); such a note states no ban.

Actions are ``ADD`` when the profile has no such constraint/attribute yet, else ``UPDATE``
(``DELETE`` for a lift); the router decides the final action (an unchanged value becomes
``IGNORE``).
"""

from __future__ import annotations

import re
from collections.abc import Iterator

from backend.agents.memory._persona_bans import REPORTED as _REPORTED
from backend.agents.memory._persona_bans import not_a_ban
from backend.agents.memory._persona_lifts import note_lifts
from backend.agents.memory._persona_limits import UNDONE, clause_at, limit_constraints, undone
from backend.agents.memory._persona_said import stated_in
from backend.agents.memory._persona_stated import normalize_stated, stated_decisions
from backend.llm.prompts import PersonaDecision
from backend.memory.models import HardConstraint, PersonaProfile
from backend.text.tickers import COIN_NAMES, LIST, parse_tickers

__all__ = [
    "COIN_NAMES",
    "normalize_stated",
    "parse_tickers",
    "split_sentences",
    "stated_in",
    "text_decisions",
]

_ALLOWED = re.compile(
    rf"(?i:\b(?:only\s+(?:ever\s+)?(?:trade|trading|buy|hold|touch|invest\s+in)|"
    rf"trade\s+only|nothing\s+but))\s+{LIST}"
)
_ONLY_LIST = re.compile(
    rf"^\s*(?i:only)\s+{LIST}(?:\s+(?i:for\s+me|please))?\s*$|^\s*{LIST}\s+(?i:only)\s*$"
)
"""A whole sentence naming the only assets: "Only BTC and ETH for me", "BTC and ETH only"
(not "ETH only goes up")."""
_FORBIDDEN = re.compile(
    rf"(?i:\b(?:(?:never|don'?t|do\s+not|won'?t|will\s+not|no\s+longer)\s+(?:ever\s+)?"
    rf"(?:touch|trade|buy|hold|invest\s+in)|(?:stop|quit|done)\s+(?:trading|buying|touching)|"
    rf"no(?:\s+more)?|avoid|stay\s+away\s+from|ban|"
    rf"keep\s+me\s+(?:out\s+of|away\s+from)))\s+(?>{LIST})"
    rf"(?!\s+(?i:shorts?|shorting|longs?|perps?|leverage|futures|options)\b)"
)
_OFF_LIMITS = re.compile(rf"{LIST}\s+(?i:is|are)\s+(?i:off[\s-]limits?|banned|forbidden)\b")
_MEME_WORD = r"(?:meme[\s-]?(?:coins?|tokens?|stocks?)?|memecoins?|shitcoins?)\b"
_MEME_VERBS = (
    r"(?:ever|let\s+me|want\s+to|like|into|buy(?:ing)?|trad(?:e|ing)|touch(?:ing)?|"
    r"hold(?:ing)?|invest(?:ing)?\s+in|go\s+near|any|more|in|with)"
)
_NO_MEME = re.compile(
    r"(?i)\b(?:no|never|avoid|stay\s+away\s+from|don'?t|do\s+not|(?:i'?m|am)\s+not|zero|"
    r"without|ban|hate|keep\s+me\s+(?:out\s+of|away\s+from)|done\s+with|"
    r"(?:stop|quit|done)(?=\s+(?:trading|buying|touching)))"
    rf"(?:\s+{_MEME_VERBS})*\s+{_MEME_WORD}"
    rf"|{_MEME_WORD}\W+(?i:never|banned|off[\s-]limits?)\b"
    rf"|{_MEME_WORD}\W+(?i:no)(?:\s+(?i:way|more)\b|\s*(?:[.!;,]|$))"
)
"""A negation before the meme-coin word with only trading words between ("no memecoins",
"I never ever buy shitcoins", "don't let me buy memecoins") or right after it ("meme
coins: never", "memecoins: no way"; not "I love shitcoins, no regrets", a reviewer's
ban of what was loved); not anywhere in the sentence ("I love memecoins, not afraid of them"),
nor with another verb ("I don't mind memecoins", "I never sell memecoins")."""
_LONG_ONLY = re.compile(
    r"(?i)\blong[\s-]only\b|\bonly\s+(?:go\s+)?long\b|\bnever\s+(?:go\s+|open\s+a\s+)?short"
    rf"(?:ing)?\b|\bno\s+(?:{LIST}\s+)?short(?:s|ing)?\b|\b(?:don'?t|do\s+not)\s+short\b"
)
"""Shorting refused, also of one coin ("never short SOL", "no BTC shorts"): there is no
per-asset short limit, so the conservative reading is no shorts at all."""
_NOT_NOW = re.compile(
    r"(?i)\b(?:until|till|used\s+to|no\s+longer|often|much|usually|a\s+lot|rarely|"
    r"once\s+a)\b"
)
"""Words that put a rule in the past, in the rule's own clause ("I was long only until
2023"; but "I used to short, now I'm long only" states it), or make it a habit's
frequency ("I don't short often, maybe once a month", "I don't short much": a
reviewer's, read as no shorts at all)."""


def split_sentences(text: str) -> list[str]:
    """Sentences of ``text``: split at ``.!?;`` and newlines, never inside ``0.5``; a
    question keeps its ``?`` (a question states no change of a limit)."""
    parts = re.split(r"(?<!\d)[.!](?!\d)|[.!](?=\s|$)|(?<=\?)|[;\n]", text)
    return [p.strip() for p in parts if p and p.strip()]


_TAG_QUESTION = re.compile(
    r"(?i),?\s*\b(?:ok(?:ay)?|right|alright|all\s+right|got\s+it|understood|yes|yeah|"
    r"clear|deal)\s*\?+\s*$"
)
"""A statement made a question by its tag ("Max 2% a trade, ok?"): still the statement."""
_OTHERS_VIEW = re.compile(
    r"(?i)\b(?:says|said|thinks|thought|believes|recommends|suggests|advises|claims|"
    r"told\s+me)\b|\b(?:most|many|some|other|a\s+lot\s+of)\s+(?:pros|traders|people|"
    r"experts|investors)\b"
)
_FIRST_PERSON = re.compile(r"(?i)\b(?:i|i'm|im|i'd|i'll|i've|me)\b")


def _not_a_rule(sentence: str) -> bool:
    """Whether ``sentence`` states no rule of the trader's: a question ("Do you think I
    should avoid SOL?", "Is no leverage better?"), or someone else's view with no word of
    the trader's own ("My coach says never risk more than 1% per trade", "Most pros risk
    no more than 1%"). A reviewer's questions had become hard rules: a SOL run that never
    traded while buy-and-hold made +48%. "Like most pros, I never risk more than 1%" and
    "Max 2% a trade, ok?" are still rules."""
    said = _TAG_QUESTION.sub("", sentence.rstrip())
    if said.endswith("?"):
        return True
    return _OTHERS_VIEW.search(said) is not None and _FIRST_PERSON.search(said) is None


def _constraints(sentence: str) -> Iterator[tuple[HardConstraint, str]]:
    """``(constraint, rule name)`` found in one sentence (none in a question or another
    person's view: :func:`_not_a_rule`)."""
    if _not_a_rule(sentence):
        return
    yield from limit_constraints(sentence)

    meme = _NO_MEME.search(sentence)
    if meme and not_a_ban(sentence, meme):
        meme = None
    if meme and not undone(sentence, meme.start()):
        yield HardConstraint(kind="no_memecoins", value=True, quote=sentence[:1000]), "meme"
    shorts = re.search(r"(?i)\bi\s+(?:also\s+|do\s+)?short\b", sentence)  # "... I short ETH"
    for long_only in _LONG_ONLY.finditer(sentence if shorts is None else ""):
        head, tail = clause_at(sentence, long_only.start(), long_only.end())
        if not UNDONE.search(head) and not _NOT_NOW.search(head + " " + tail):
            constraint = HardConstraint(kind="long_only", value=True, quote=sentence[:1000])
            yield constraint, "long_only"
            break
    for pattern, kind in (
        (_ALLOWED, "allowed_assets"),
        (_ONLY_LIST, "allowed_assets"),
        (_FORBIDDEN, "forbidden_assets"),
        (_OFF_LIMITS, "forbidden_assets"),
    ):
        for match in pattern.finditer(sentence):
            head = clause_at(sentence, match.start(), match.start())[0]
            if UNDONE.search(head) or (pattern is _OFF_LIMITS and _REPORTED.search(head)):
                continue
            if pattern is _FORBIDDEN and not_a_ban(sentence, match):
                continue
            tickers = parse_tickers(next((g for g in match.groups() if g), ""))
            if tickers:
                constraint = HardConstraint(kind=kind, value=tickers, quote=sentence[:1000])
                yield constraint, kind
                break


def _merge_constraints(found: list[tuple[HardConstraint, str]]) -> list[HardConstraint]:
    """One constraint per kind: asset lists are united, a number keeps the strictest
    (smallest) mention, other kinds the last."""
    merged: dict[str, HardConstraint] = {}
    for constraint, _ in found:
        old = merged.get(constraint.kind)
        if old is not None and isinstance(old.value, list) and isinstance(constraint.value, list):
            union = list(dict.fromkeys([*old.value, *constraint.value]))
            quote = f"{old.quote} / {constraint.quote}"[:1000]
            constraint = HardConstraint(kind=constraint.kind, value=union, quote=quote)
        elif (
            old is not None
            and isinstance(old.value, int | float)
            and not isinstance(old.value, bool)
            and isinstance(constraint.value, int | float)
            and old.value <= constraint.value
        ):
            continue
        merged[constraint.kind] = constraint
    return list(merged.values())


def text_decisions(text: str, *, profile: PersonaProfile | None = None) -> list[PersonaDecision]:
    """Persona decisions found in the trader's ``text`` by the rules of the module doc.

    ``profile`` (optional) only chooses ``ADD`` vs ``UPDATE``. Returns ``[]`` when nothing
    about the trader was found. Never raises for any text.
    """
    sentences = split_sentences(text)
    attrs = profile.attributes if profile is not None else {}
    known_kinds = {c.kind for c in profile.constraints()} if profile is not None else set()
    lifts = note_lifts(text)  # a lift is a note of its own: no ban read beside it
    found = [] if lifts else [pair for s in sentences for pair in _constraints(s)]
    decisions: list[PersonaDecision] = []
    for constraint in _merge_constraints(found):
        decisions.append(
            PersonaDecision(
                attribute="constraints",
                action="UPDATE" if constraint.kind in known_kinds else "ADD",
                constraint=constraint,
                reason=f"rule {constraint.kind}: {constraint.quote}"[:300],
            )
        )
    for constraint in lifts:
        decisions.append(
            PersonaDecision(
                attribute="constraints",
                action="DELETE",
                constraint=constraint,
                reason=f"rule lift {constraint.kind}: {constraint.quote}"[:300],
            )
        )
    for sentence in sentences:
        decisions.extend(stated_decisions(sentence, attrs))
    return decisions

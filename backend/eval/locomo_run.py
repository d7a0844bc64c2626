"""Run the LoCoMo retrieval benchmark: ingest, retrieve per method, score, report.

For each conversation: :func:`~backend.eval.locomo_memory.ingest_conversation`, then
every question with at least one valid evidence id is asked once per method, with
``as_of`` one day after the conversation's last session (LoCoMo asks its questions after
the whole conversation). Per method and question it records the ranked dialog ids
(recall@1/5/10/25 against the evidence), the retrieval wall time (ms; the query's
embedding is cached by the store per text, so it is paid by the first method that embeds
it, ``dense``), and the tokens of the context rendered from the top ``context_turns``
turns (:func:`~backend.eval.locomo_context.render_locomo_context`; ``hierarchical`` adds
the speakers' persona facts). With an LLM, categories 1-4 are answered from that context
and scored by token F1 (:mod:`backend.eval.locomo_answer`).
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import timedelta

import numpy as np

from backend.eval.locomo_answer import F1_CATEGORIES, answer_question, locomo_f1
from backend.eval.locomo_context import render_locomo_context
from backend.eval.locomo_memory import LocomoMemory, ingest_conversation
from backend.eval.locomo_metrics import KS, percentile, recall_summary
from backend.eval.locomo_models import (
    AnswerScore,
    LocomoConversation,
    LocomoDataset,
    LocomoQuestion,
    LocomoReport,
    MethodName,
    MethodReport,
)
from backend.eval.locomo_retrieval import FusionWeights, HierarchicalRetriever, flat_ranking
from backend.llm.client import LLMClient
from backend.memory.models import PersonaProfile

__all__ = ["ALL_METHODS", "run_locomo"]

ALL_METHODS: tuple[MethodName, ...] = ("dense", "bm25", "hybrid", "hierarchical")
Progress = Callable[[str], None]


@dataclass
class _Rows:
    """What one method collected, question by question."""

    ranked: list[tuple[int, list[str], list[str]]] = field(default_factory=list)
    latency_ms: list[float] = field(default_factory=list)
    tokens: list[int] = field(default_factory=list)
    f1: list[tuple[int, float, bool]] = field(default_factory=list)


def _report(rows: _Rows) -> MethodReport:
    per_cat: dict[int, list[tuple[list[str], list[str]]]] = defaultdict(list)
    for cat, ranked, evidence in rows.ranked:
        per_cat[cat].append((ranked, evidence))
    overall = recall_summary([(r, e) for _, r, e in rows.ranked])
    answer, answer_cat = None, None
    if rows.f1:
        by_cat: dict[int, list[tuple[float, bool]]] = defaultdict(list)
        for cat, score, failed in rows.f1:
            by_cat[cat].append((score, failed))

        def summarise(items: Sequence[tuple[float, bool]]) -> AnswerScore:
            return AnswerScore(
                n=len(items),
                f1=float(np.mean([s for s, _ in items])),
                failed=sum(1 for _, f in items if f),
            )

        answer = summarise([(s, f) for _, s, f in rows.f1])
        answer_cat = {str(c): summarise(by_cat[c]) for c in sorted(by_cat)}
    return MethodReport.model_validate(
        {
            **overall.model_dump(by_alias=True),
            "latency_ms_p50": round(percentile(rows.latency_ms, 50), 3),
            "latency_ms_p95": round(percentile(rows.latency_ms, 95), 3),
            "tokens_per_query": round(float(np.mean(rows.tokens)), 1) if rows.tokens else 0.0,
            "per_category": {str(c): recall_summary(per_cat[c]) for c in sorted(per_cat)},
            "answer_f1": answer,
            "answer_f1_per_category": answer_cat,
        }
    )


def run_locomo(
    dataset: LocomoDataset,
    memory: LocomoMemory,
    *,
    methods: Sequence[MethodName] = ALL_METHODS,
    llm: LLMClient | None = None,
    budget: int = 1500,
    context_turns: int = 10,
    weights: FusionWeights | None = None,
    progress: Progress | None = None,
    max_questions: int | None = None,
) -> LocomoReport:
    """Ingest every conversation of ``dataset`` into ``memory`` (a fresh store) and
    evaluate ``methods`` (module docstring). ``budget``: context tokens per question;
    ``context_turns``: turns put in the context; ``max_questions``: only the first N
    questions of each conversation (a quick run with a slow LLM). Raises the store's
    errors, or ``ValueError`` for an unknown method or a budget too small for the
    context header."""
    unknown = [m for m in methods if m not in ALL_METHODS]
    if unknown:
        raise ValueError(f"unknown methods {unknown}; expected some of {list(ALL_METHODS)}")
    say = progress or (lambda _: None)
    rows: dict[MethodName, _Rows] = {m: _Rows() for m in methods}
    retriever = HierarchicalRetriever(memory, weights=weights)
    scored = skipped = 0
    try:
        for conversation in dataset.conversations:
            started = time.perf_counter()
            stats = ingest_conversation(memory, conversation)
            say(
                f"{conversation.sample_id}: ingested {stats.turns} turns, {stats.episodes} "
                f"episodes, {stats.sessions} sessions, persona changes {stats.persona_changes} "
                f"in {time.perf_counter() - started:.1f} s"
            )
            for question in conversation.questions[:max_questions]:
                if not question.evidence:
                    skipped += 1
                    continue
                scored += 1
                for method in methods:
                    _ask(method, conversation, question, memory, retriever, rows[method],
                         llm=llm, budget=budget, context_turns=context_turns)  # fmt: skip
            say(f"{conversation.sample_id}: {len(conversation.questions)} questions done")
    finally:
        retriever.close()
    return LocomoReport(
        data=dataset.path,
        n_conversations=len(dataset.conversations),
        n_questions=scored,
        n_questions_without_evidence=skipped,
        evidence_repairs=dataset.repairs,
        context_turns=context_turns,
        token_budget=budget,
        methods={m: _report(rows[m]) for m in methods},
    )


def _ask(
    method: MethodName,
    conversation: LocomoConversation,
    question: LocomoQuestion,
    memory: LocomoMemory,
    retriever: HierarchicalRetriever,
    rows: _Rows,
    *,
    llm: LLMClient | None,
    budget: int,
    context_turns: int,
) -> None:
    as_of = conversation.last_time + timedelta(days=1)
    personas: dict[str, PersonaProfile] = {}
    started = time.perf_counter()
    if method == "hierarchical":
        result = retriever.retrieve(conversation, question.question, as_of=as_of)
        ranked, personas = result.dia_ids[: max(KS)], result.personas
    else:
        ranked = flat_ranking(
            memory, conversation.sample_id, question.question,
            as_of=as_of, method=method, top_k=max(KS),
        )  # fmt: skip
    rows.latency_ms.append((time.perf_counter() - started) * 1000)
    rows.ranked.append((question.category, ranked, question.evidence))
    context = render_locomo_context(
        conversation, ranked, budget=budget, max_turns=context_turns, personas=personas
    )
    rows.tokens.append(context.tokens)
    if llm is not None and question.category in F1_CATEGORIES and question.answer is not None:
        answer, error = answer_question(llm, context.text, question.question)
        f1 = locomo_f1(answer, question.answer, question.category) if answer is not None else 0.0
        rows.f1.append((question.category, f1, error is not None))

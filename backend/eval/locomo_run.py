"""Run the LoCoMo retrieval benchmark: ingest, retrieve per method, score, report.

The evaluation only loads, asks and scores; the ranking is the product's. For each
conversation: :func:`~backend.eval.locomo_memory.ingest_conversation` (the product's
``MemoryToolkit.record_messages``), then every question with at least one valid evidence
id is asked once per method, with ``as_of`` one day after the conversation's last session
(LoCoMo asks its questions after the whole conversation):

- ``hierarchical`` is the product path: ``MemoryToolkit.recall`` (the conversation read
  with the working tier, :mod:`backend.memory.conversation`), its message ids as the
  ranking and its ``context`` as what an answering model gets;
- ``dense``, ``bm25`` and ``hybrid`` are flat baselines: one :meth:`KhalaStore.search`
  over the same message records, the context rendered from their top ``context_turns``
  turns (:func:`~backend.eval.locomo_context.render_locomo_context`).

Per method and question it records the ranked dialog ids (recall@1/5/10/25 against the
evidence), the retrieval wall time (ms) and the context's tokens. Before a question's
methods are timed, its text is embedded once, untimed, into the configured embedding
cache (:meth:`~backend.embeddings.Embedder.prime`), so no method's time depends on which
ran first (a reviewer measured `hybrid` at 4.5 ms alone and 1.5 ms after `dense`, which
had cached the vector): with the cache on, every method's time is its retrieval with
the question's vector cached (`hierarchical` still embeds the question without the
speakers' names); with the cache off, every method embeds it.
``scripts/bench_conversation.py`` times the product's recall with the cache off. With an LLM,
categories 1-4 are answered from that context and scored by token F1
(:mod:`backend.eval.locomo_answer`).
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import numpy as np

from backend.eval.locomo_answer import F1_CATEGORIES, answer_question, locomo_f1
from backend.eval.locomo_context import render_locomo_context
from backend.eval.locomo_memory import ingest_conversation
from backend.eval.locomo_metrics import KS, percentile, recall_summary
from backend.eval.locomo_models import (
    SPLITS,
    AnswerScore,
    LocomoConversation,
    LocomoDataset,
    LocomoQuestion,
    LocomoReport,
    MethodName,
    MethodReport,
    QuestionResult,
    SplitReport,
)
from backend.llm.client import LLMClient
from backend.memory.conversation import MESSAGE_KIND
from backend.storage import KhalaStore, SearchMethod
from backend.tools.memory_toolkit import MemoryToolkit

__all__ = ["ALL_METHODS", "run_locomo"]

ALL_METHODS: tuple[MethodName, ...] = ("dense", "bm25", "hybrid", "hierarchical")
Progress = Callable[[str], None]


@dataclass
class _Rows:
    """What one method collected, question by question."""

    ranked: list[tuple[int, list[str], list[str]]] = field(default_factory=list)
    """``(category, ranked dialog ids, evidence)`` per question, in the run's order."""
    latency_ms: list[float] = field(default_factory=list)
    tokens: list[int] = field(default_factory=list)
    f1: list[tuple[int, float, str | None]] = field(default_factory=list)
    """``(category, F1, error of a failed answer)`` per answered question."""


def _report(rows: _Rows) -> MethodReport:
    per_cat: dict[int, list[tuple[list[str], list[str]]]] = defaultdict(list)
    for cat, ranked, evidence in rows.ranked:
        per_cat[cat].append((ranked, evidence))
    overall = recall_summary([(r, e) for _, r, e in rows.ranked])
    answer, answer_cat = None, None
    if rows.f1:
        by_cat: dict[int, list[tuple[float, str | None]]] = defaultdict(list)
        for cat, score, failed in rows.f1:
            by_cat[cat].append((score, failed))

        def summarise(items: Sequence[tuple[float, str | None]]) -> AnswerScore:
            errors = [e for _, e in items if e is not None]
            return AnswerScore(
                n=len(items),
                f1=float(np.mean([s for s, _ in items])),
                failed=len(errors),
                first_error=errors[0] if errors else None,
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
    toolkit: MemoryToolkit,
    store: KhalaStore,
    *,
    methods: Sequence[MethodName] = ALL_METHODS,
    llm: LLMClient | None = None,
    budget: int = 1500,
    context_turns: int = 10,
    progress: Progress | None = None,
    max_questions: int | None = None,
) -> LocomoReport:
    """Ingest every conversation of ``dataset`` through ``toolkit`` (a fresh memory on
    ``store``, which the flat baselines search) and
    evaluate ``methods`` (module docstring). ``budget``: context tokens per question;
    ``context_turns``: turns put in the flat baselines' context (``hierarchical`` hands
    over the product's context: ``memory.conversation.context_messages`` messages within
    the budget); ``max_questions``: only the first N
    questions of each conversation (a quick run with a slow LLM). Raises the store's
    errors, or ``ValueError`` for an unknown method or a budget too small for the
    context header."""
    unknown = [m for m in methods if m not in ALL_METHODS]
    if unknown:
        raise ValueError(f"unknown methods {unknown}; expected some of {list(ALL_METHODS)}")
    say = progress or (lambda _: None)
    rows: dict[MethodName, _Rows] = {m: _Rows() for m in methods}
    asked: list[tuple[str, int, LocomoQuestion]] = []
    """``(conversation, question index, question)`` of each scored question, in order."""
    scored = skipped = 0
    for conversation in dataset.conversations:
        started = time.perf_counter()
        stats = ingest_conversation(toolkit, conversation)
        say(
            f"{conversation.sample_id}: ingested {stats.turns} turns, {stats.sessions} "
            f"sessions, {stats.events} events, persona changes {stats.persona_changes} "
            f"in {time.perf_counter() - started:.1f} s"
        )
        for index, question in enumerate(conversation.questions[:max_questions]):
            if not question.evidence:
                skipped += 1
                continue
            scored += 1
            asked.append((conversation.sample_id, index, question))
            store.embedder.prime([question.question])  # untimed, for every method alike
            for method in methods:
                _ask(method, conversation, question, toolkit, store, rows[method],
                     llm=llm, budget=budget, context_turns=context_turns)  # fmt: skip
        done = len(conversation.questions[:max_questions])
        say(f"{conversation.sample_id}: {done} questions done")
    ids = [c.sample_id for c in dataset.conversations]
    return LocomoReport(
        data=dataset.path,
        conversations=ids,
        n_conversations=len(dataset.conversations),
        n_questions=scored,
        n_questions_without_evidence=skipped,
        evidence_repairs=[r for r in dataset.repairs if r.conversation_id in ids],
        context_turns=context_turns,
        token_budget=budget,
        methods={m: _report(rows[m]) for m in methods},
        splits=_splits(asked, rows),
        answer_model=llm.model if llm is not None else None,
        questions=[
            QuestionResult(
                conversation_id=cid,
                question_index=index,
                category=q.category,
                evidence=list(q.evidence),
                ranked={m: rows[m].ranked[n][1] for m in methods},
            )
            for n, (cid, index, q) in enumerate(asked)
        ],
    )


def _splits(
    asked: Sequence[tuple[str, int, LocomoQuestion]], rows: dict[MethodName, _Rows]
) -> dict[str, SplitReport]:
    """Recall per split of :data:`SPLITS` over the questions of its conversations."""
    out: dict[str, SplitReport] = {}
    for name, members in SPLITS.items():
        picked = [n for n, (cid, _, _) in enumerate(asked) if cid in members]
        if not picked:
            continue
        methods, per_category = {}, {}
        for method, got in rows.items():
            items = [got.ranked[n] for n in picked]
            methods[method] = recall_summary([(r, e) for _, r, e in items])
            cats = sorted({c for c, _, _ in items})
            per_category[method] = {
                str(c): recall_summary([(r, e) for k, r, e in items if k == c]) for c in cats
            }
        seen = list(dict.fromkeys(asked[n][0] for n in picked))
        out[name] = SplitReport(conversations=seen, methods=methods, per_category=per_category)
    return out


def _ask(
    method: MethodName,
    conversation: LocomoConversation,
    question: LocomoQuestion,
    toolkit: MemoryToolkit,
    store: KhalaStore,
    rows: _Rows,
    *,
    llm: LLMClient | None,
    budget: int,
    context_turns: int,
) -> None:
    as_of = conversation.last_time + timedelta(days=1)
    cid = conversation.sample_id
    started = time.perf_counter()
    if method == "hierarchical":
        found = toolkit.recall(
            cid, question.question, symbol=None, as_of=as_of, tiers=("working",),
            top_k=max(KS),
        )  # fmt: skip
        ranked = [str(h["message_id"]) for h in found["hits"] if h["tier"] == "conversation"]
        context_text, tokens = str(found["context"]["text"]), int(found["context"]["tokens"])
    else:
        ranked = flat_ranking(store, cid, question.question, as_of=as_of, method=method)
    rows.latency_ms.append((time.perf_counter() - started) * 1000)
    rows.ranked.append((question.category, ranked, question.evidence))
    if method != "hierarchical":
        context = render_locomo_context(
            conversation, ranked, budget=budget, max_turns=context_turns
        )
        context_text, tokens = context.text, context.tokens
    rows.tokens.append(tokens)
    if llm is not None and question.category in F1_CATEGORIES and question.answer is not None:
        answer, error = answer_question(llm, context_text, question.question)
        f1 = locomo_f1(answer, question.answer, question.category) if answer is not None else 0.0
        rows.f1.append((question.category, f1, error))


def flat_ranking(
    store: KhalaStore, conversation_id: str, query: str, *, as_of: datetime,
    method: SearchMethod, top_k: int = max(KS),
) -> list[str]:  # fmt: skip
    """Dialog ids of the ``top_k`` message records for ``query`` by one flat ``method``
    of the store (a baseline), best first."""
    hits = store.search(
        conversation_id, query, as_of=as_of, top_k=top_k, method=method,
        filters={"kind": MESSAGE_KIND},
    )  # fmt: skip
    return [str(h.record.metadata["message_id"]) for h in hits]

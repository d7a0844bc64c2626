"""Benchmark conversation memory: ingest and recall costs, embedding cache off.

Through the product (``MemoryToolkit.record_messages`` and ``MemoryToolkit.recall``, the
default configuration on the throwaway ``memory`` backend, the persona read by the offline
rules), on the real LoCoMo conversations of ``--data``:

- ``ingest``: the first ``--messages`` turns of the file (conversation after
  conversation, each a tenant, recorded session by session as of the session time), with
  the embedding cache off (``embedding.cache_dir=None``): ``ingest_s``,
  ``ingest_messages_per_s``;
- ``recall``: every question of ``--conversation`` asked of that tenant one day after its
  last session (the query's embedding included, cache off): ``recall_p50_ms``,
  ``recall_p95_ms``, ``messages`` (how many the tenant holds), ``tokens_mean`` of the
  answer context.

The last line printed is one JSON object::

    .venv/bin/python scripts/bench_conversation.py --messages 3000 --conversation conv-41 --json
"""

from __future__ import annotations

import argparse
import json
import os
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np

from backend.compose import build_memory_system
from backend.config import LLMSettings, load_settings
from backend.eval.locomo_data import load_locomo
from backend.eval.locomo_memory import ingest_conversation
from backend.eval.locomo_models import LocomoConversation


def _clip(conversation: LocomoConversation, turns: int) -> LocomoConversation:
    kept = conversation.turns[:turns]
    sessions = {t.session for t in kept}
    return conversation.model_copy(
        update={
            "turns": kept,
            "sessions": {n: at for n, at in conversation.sessions.items() if n in sessions},
        }
    )


def main() -> dict[str, object]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--data", type=Path, default=None, help="LoCoMo JSON (default: shared)")
    parser.add_argument("--messages", type=int, default=3000)
    parser.add_argument("--conversation", default="conv-41")
    parser.add_argument("--json", action="store_true", help="print only the JSON line")
    args = parser.parse_args()
    cfg = load_settings()
    data = args.data or cfg.data.data_dir / "locomo" / "locomo_dev.json"
    cfg = cfg.model_copy(
        update={
            "store": cfg.store.model_copy(update={"backend": "memory"}),
            "embedding": cfg.embedding.model_copy(update={"cache_dir": None}),
            "llm": LLMSettings(),
        }
    )
    dataset = load_locomo(data)
    result: dict[str, object] = {"load_avg_1m_before": round(os.getloadavg()[0], 2)}
    with build_memory_system(cfg) as system:
        left, ingested, started = args.messages, 0, time.perf_counter()
        for conversation in dataset.conversations:
            if left <= 0:
                break
            part = _clip(conversation, left)
            ingest_conversation(system.toolkit, part)
            ingested += len(part.turns)
            left -= len(part.turns)
        ingest_s = time.perf_counter() - started
        result.update(ingest_messages=ingested, ingest_s=round(ingest_s, 2),
                      ingest_messages_per_s=round(ingested / ingest_s, 1))  # fmt: skip
        (asked,) = [c for c in dataset.conversations if c.sample_id == args.conversation]
    with build_memory_system(cfg) as system:
        ingest_conversation(system.toolkit, asked)
        as_of = asked.last_time + timedelta(days=1)
        latencies, tokens = [], []
        for question in asked.questions:
            started = time.perf_counter()
            found = system.toolkit.recall(
                asked.sample_id, question.question, symbol=None, as_of=as_of,
                tiers=("working",), top_k=10,
            )  # fmt: skip
            latencies.append((time.perf_counter() - started) * 1000)
            tokens.append(int(found["context"]["tokens"]))
        result.update(
            conversation=asked.sample_id,
            messages=len(asked.turns),
            questions=len(asked.questions),
            recall_p50_ms=round(float(np.percentile(latencies, 50)), 2),
            recall_p95_ms=round(float(np.percentile(latencies, 95)), 2),
            tokens_mean=round(float(np.mean(tokens)), 1),
            embedding_cache="off",
            load_avg_1m_after=round(os.getloadavg()[0], 2),
            measured_at=datetime.now(UTC).isoformat(timespec="seconds"),
        )
    if not args.json:
        for key, value in result.items():
            print(f"{key:28s} {value}")
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    from backend.entry import run_script

    run_script("bench_conversation", main)

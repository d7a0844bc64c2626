"""``sentinel eval ...``: benchmarks of the memory module on public data.

A typer sub-app; ``backend.cli`` registers it with ``app.add_typer(cli_eval.app,
name="eval")``, and its ``main()`` turns a :class:`~backend.errors.SentinelError` (a
damaged LoCoMo file is a :class:`~backend.errors.DataError` naming the file and the JSON
path) into one line on stderr, exit 2::

    sentinel eval locomo --data ../shared/data/locomo/locomo_dev.json --out runs/locomo.json

``locomo`` ingests every conversation into a throw-away in-process Khala store
(``store.mode=ephemeral``, its own collection prefix, exact dense search, BM25 with
Snowball English stemming unless ``store.bm25_stemmer`` names another language) and
writes the :class:`~backend.eval.locomo_models.LocomoReport` JSON to ``--out``
(``{"n_questions", "methods": {"dense"|"bm25"|"hybrid"|"hierarchical": {"recall@1",
"recall@5", "recall@10", "recall@25", "latency_ms_p50", "latency_ms_p95",
"tokens_per_query", "per_category": {...}}}, ...}``, recall as fractions). Progress goes to
stderr, a summary table to stdout. With ``llm.base_url`` and ``llm.model`` configured,
questions of categories 1-4 are also answered and scored by token F1. Persona facts are
read by the offline rules even then (one LLM call per turn would cost more than the
whole benchmark).
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from backend.config import Settings, StoreSettings
from backend.errors import ConfigError, DataError
from backend.eval.locomo_models import CATEGORY_NAMES, LocomoReport, MethodName

__all__ = ["app", "locomo", "run_locomo_command", "write_report"]

app = typer.Typer(help="Benchmarks of the memory module on public data.", no_args_is_help=True)

EXACT_SEARCH_MAX = 100_000
"""The eval store is its collections' only writer: dense search is exact, in process."""


def write_report(report: LocomoReport, out: Path) -> None:
    """Write ``report`` as JSON (aliases: ``recall@10``) to ``out`` atomically (a temp
    file in the same folder, then renamed). Raises :class:`DataError` naming the file."""
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=out.name, suffix=".tmp", dir=out.parent)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(report.model_dump(mode="json", by_alias=True), fh, indent=2)
        os.replace(tmp, out)
    except OSError as exc:
        raise DataError(f"cannot write the report ({type(exc).__name__})", path=out) from None


def run_locomo_command(
    cfg: Settings,
    *,
    data: Path,
    out: Path,
    limit: int | None = None,
    methods: list[MethodName] | None = None,
    context_turns: int = 10,
    quiet: bool = False,
) -> LocomoReport:
    """Load ``data``, build the eval memory (module doc), run, write ``out``; returns the
    report. Raises :class:`DataError` (bad file), :class:`ConfigError`, store errors."""
    from backend.agents.memory import PersonaManager
    from backend.embeddings import build_embedder
    from backend.eval.locomo_data import load_locomo
    from backend.eval.locomo_memory import LocomoMemory
    from backend.eval.locomo_run import ALL_METHODS, run_locomo
    from backend.llm import build_llm
    from backend.memory import EpisodicMemory
    from backend.storage import open_store

    dataset = load_locomo(data, limit=limit)
    with tempfile.TemporaryDirectory(prefix="sentinel-locomo-") as tmp:
        store_cfg = StoreSettings.model_validate(
            {
                **cfg.store.model_dump(),
                "mode": "ephemeral",
                "path": Path(tmp),
                "audit_path": None,
                "collection_prefix": "locomo" + os.urandom(4).hex(),
                "exact_search_max": EXACT_SEARCH_MAX,
                "bm25_stemmer": cfg.store.bm25_stemmer or "english",
            }
        )
        store = open_store(store_cfg, build_embedder(cfg.embedding))
        try:
            memory = LocomoMemory(
                store=store,
                episodic=EpisodicMemory(store, settings=cfg.memory),
                persona=PersonaManager(store),
            )
            report = run_locomo(
                dataset,
                memory,
                methods=methods or ALL_METHODS,
                llm=build_llm(cfg.llm),
                budget=cfg.memory.token_budget,
                context_turns=context_turns,
                progress=None if quiet else (lambda line: print(line, file=sys.stderr)),
            )
        finally:
            store.close()
    write_report(report, out)
    return report


def _methods(value: str | None) -> list[MethodName] | None:
    if value is None:
        return None
    from backend.eval.locomo_run import ALL_METHODS

    names = [v.strip() for v in value.split(",") if v.strip()]
    bad = [n for n in names if n not in ALL_METHODS]
    if bad or not names:
        raise ConfigError(f"--methods: expected some of {', '.join(ALL_METHODS)}, got {value!r}")
    return [m for m in ALL_METHODS if m in names]


@app.command("locomo")
def locomo(
    data: Annotated[Path, typer.Option(help="LoCoMo JSON file (locomo10.json format).")],
    out: Annotated[Path, typer.Option(help="Where to write the report JSON.")],
    limit: Annotated[
        int | None, typer.Option(min=1, help="Only the first N conversations.")
    ] = None,
    methods: Annotated[
        str | None, typer.Option(help="Comma-separated subset of dense,bm25,hybrid,hierarchical.")
    ] = None,
    context_turns: Annotated[
        int, typer.Option(min=1, max=100, help="Turns put in each question's context.")
    ] = 10,
    quiet: Annotated[bool, typer.Option("--quiet", help="No progress on stderr.")] = False,
) -> None:
    """LoCoMo retrieval: recall@1/5/10/25 of the evidence turns per method and category,
    latency p50/p95, context tokens per query (and answer F1 with an LLM configured)."""
    from backend.cli import settings

    report = run_locomo_command(
        settings(),
        data=data,
        out=out,
        limit=limit,
        methods=_methods(methods),
        context_turns=context_turns,
        quiet=quiet,
    )
    console = Console()
    table = Table("method", "R@1", "R@5", "R@10", "R@25", "p50 ms", "p95 ms", "tokens")
    for name, m in report.methods.items():
        table.add_row(
            name,
            *(f"{v:.3f}" for v in (m.recall_1, m.recall_5, m.recall_10, m.recall_25)),
            f"{m.latency_ms_p50:.1f}",
            f"{m.latency_ms_p95:.1f}",
            f"{m.tokens_per_query:.0f}",
        )
    console.print(table)
    cats = Table("method", *(f"R@10 {c} {CATEGORY_NAMES[c]}" for c in sorted(CATEGORY_NAMES)))
    for name, m in report.methods.items():
        cells = [m.per_category.get(str(c)) for c in sorted(CATEGORY_NAMES)]
        cats.add_row(name, *(f"{c.recall_10:.3f} (n={c.n})" if c else "-" for c in cells))
    console.print(cats)
    console.print(f"{report.n_questions} questions; report written to {out}")

"""``sentinel memory``: inspect one trader's Khala memory store."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Literal

import typer
from rich.table import Table

from backend.cli._common import console, parse_utc, settings
from backend.errors import ConfigError

__all__ = ["memory_app"]

memory_app = typer.Typer(help="Inspect the Khala memory store.", no_args_is_help=True)


@memory_app.command("search")
def memory_search(
    trader: Annotated[str, typer.Option(help="Trader id whose memories to search.")],
    query: Annotated[str, typer.Option(help="Query text.")],
    as_of: Annotated[str | None, typer.Option(help="UTC time fence; default: now.")] = None,
    method: Annotated[str, typer.Option(help="dense, bm25 or hybrid.")] = "hybrid",
    top_k: Annotated[int, typer.Option(min=1, max=1000)] = 10,
    kind: Annotated[str | None, typer.Option(help="Only this kind (e.g. news).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON lines.")] = False,
) -> None:
    """Search one trader's memories (never another trader's) as of a time."""
    from backend.embeddings import build_embedder
    from backend.storage import open_store

    if method not in ("dense", "bm25", "hybrid"):
        raise ConfigError(f"--method: expected dense, bm25 or hybrid, got {method!r}")
    cfg = settings()
    fence = parse_utc(as_of, name="as-of") if as_of else datetime.now(UTC)
    store = open_store(cfg.store, build_embedder(cfg.embedding))
    searched: Literal["dense", "bm25", "hybrid"] = method  # type: ignore[assignment]
    hits = store.search(
        trader,
        query,
        as_of=fence,
        top_k=top_k,
        method=searched,
        filters={"kind": kind} if kind else None,
    )
    if as_json:
        for hit in hits:
            print(hit.model_dump_json())
        return
    table = Table("rank", "sim", "created_at", "kind", "text")
    for hit in hits:
        table.add_row(
            str(hit.rank),
            f"{hit.similarity:.3f}",
            hit.record.created_at.isoformat(),
            hit.record.kind,
            hit.record.text[:100],
        )
    console.print(table)

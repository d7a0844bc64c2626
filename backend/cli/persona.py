"""``sentinel persona ...``: inspect a trader's persona computed from a fills export.

A typer sub-app; ``backend.cli`` registers it with ``app.add_typer(persona_app,
name="persona")`` and its ``main()`` turns a :class:`~backend.errors.SentinelError` into
one line on stderr and exit status 2.

``persona show`` is fast and side-effect free: it reads the fills file, computes the
persona attributes with the pure feature functions and routes them once against an empty
profile (exactly what :meth:`PersonaManager.build_from_fills` stores as a trader's first
version), without opening the Khala store. So ``version`` is always 1 here: one build
from every fill of the trader at or before ``--as-of``. Attributes without evidence (e.g.
``leverage``, absent from the Hyperliquid export) are omitted, as in the stored profile.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from backend.cli._common import console, parse_utc, settings
from backend.errors import ConfigError, DataError
from backend.memory.models import PersonaProfile

__all__ = ["persona_app", "persona_show", "show_payload"]

persona_app = typer.Typer(
    help="Trader personas (O-Mem persona memory) computed from fills.", no_args_is_help=True
)


def show_payload(profile: PersonaProfile) -> dict[str, Any]:
    """The ``--json`` object of ``persona show``: ``trader_id``, ``version``, ``as_of``
    (ISO-8601 UTC) and ``attributes`` = name -> ``{value, confidence, evidence_count}``."""
    return {
        "trader_id": profile.trader_id,
        "version": profile.version,
        "as_of": profile.as_of.isoformat(),
        "attributes": {
            name: {
                "value": attr.value,
                "confidence": attr.confidence,
                "evidence_count": attr.evidence_count,
            }
            for name, attr in profile.attributes.items()
        },
    }


def build_show_profile(trader_id: str, fills_path: Path, as_of: datetime | None) -> PersonaProfile:
    """The profile ``persona show`` prints (see the module doc). Raises :class:`DataError`
    naming the file when it is unreadable or damaged, or has no fill of the trader at or
    before ``as_of`` (default: the trader's last fill)."""
    from backend.agents.memory import (
        compute_persona_attributes,
        empty_profile,
        route_fill_attributes,
    )
    from backend.data.fills import account_id, fills_to_frame, load_hyperliquid_fills

    trader_id = account_id(trader_id)
    loaded = load_hyperliquid_fills(fills_path, not_after=datetime.now(UTC))  # the CLI's clock
    mine = [f for f in loaded if f.trader_id == trader_id]
    if as_of is not None:
        mine = [f for f in mine if f.datetime <= as_of]
    if not mine:
        when = f" at or before {as_of.isoformat()}" if as_of is not None else ""
        raise DataError(f"no fills of trader {trader_id!r}{when}", path=fills_path)
    fence = as_of if as_of is not None else max(f.datetime for f in mine)
    attrs = compute_persona_attributes(fills_to_frame(mine), as_of=fence)
    return route_fill_attributes(
        empty_profile(trader_id, fence), attrs, as_of=fence, replace=True
    ).profile


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:,.4g}" if abs(value) < 1000 else f"{value:,.2f}"
    if isinstance(value, list):
        return ", ".join(map(str, value))
    if isinstance(value, dict):
        return ", ".join(f"{k}={_cell(v)}" for k, v in value.items())
    return str(value)


@persona_app.command("show")
def persona_show(
    trader: Annotated[str, typer.Option(help="Trader (account) id, e.g. the full 0x address.")],
    fills: Annotated[Path, typer.Option(help="Hyperliquid fills CSV export.")],
    as_of: Annotated[
        str | None, typer.Option(help="UTC time fence (ISO-8601); default: the last fill.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Show a trader's persona computed from the fills known at --as-of (no store used)."""

    settings()  # a bad --config or environment value stops here, as in every command
    fence = parse_utc(as_of, name="as-of") if as_of else None
    if fence is not None and fence > datetime.now(UTC):  # the CLI's clock
        raise ConfigError(f"--as-of {fence.isoformat()} is in the future")
    profile = build_show_profile(trader, fills, fence)
    if as_json:
        print(json.dumps(show_payload(profile)))
        return
    table = Table(
        "attribute",
        "value",
        "confidence",
        "evidence",
        title=f"{profile.trader_id} - persona v{profile.version} as of "
        f"{profile.as_of:%Y-%m-%d %H:%M} UTC",
    )
    for name, attr in profile.attributes.items():
        table.add_row(  # a trader's words are data, never rich markup
            name, escape(_cell(attr.value)), f"{attr.confidence:.2f}", str(attr.evidence_count)
        )
    console.print(table)

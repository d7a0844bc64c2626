"""The ``sentinel`` command line (typer): the composition root.

Only this module (with its sub-apps) and the scheduler's jobs read the clock; everything
below it takes ``as_of`` as an argument. Errors of the package (:class:`SentinelError`)
print one line on stderr and exit with status 2 (``--debug``: the traceback first); Ctrl-C
prints ``sentinel: aborted`` and exits with status 130. A run that finished but whose LLM
or store failed too often exits 3 (:data:`~backend.cli._common.DEPENDENCY_FAILED`).
"""

from __future__ import annotations

import logging
import sys
import traceback
from pathlib import Path
from typing import Annotated

import typer

from backend.cli import eval as eval_cli
from backend.cli._common import console, settings, state, store_settings
from backend.cli.backtest import backtest
from backend.cli.data import data_app
from backend.cli.llm import llm_app
from backend.cli.mcp import mcp_command
from backend.cli.memory import memory_app
from backend.cli.persona import persona_app
from backend.cli.replay import replay_trades_cli
from backend.cli.service import paper, scheduler_app
from backend.errors import SentinelError
from backend.interrupts import INTERRUPTED, aborted, caused_by_interrupt

__all__ = ["app", "main"]

app = typer.Typer(
    name="sentinel",
    help="CryptoSentinel memory: hierarchical memory for an LLM crypto-trading agent.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
app.add_typer(data_app, name="data")
app.add_typer(memory_app, name="memory")
app.add_typer(persona_app, name="persona")
app.add_typer(eval_cli.app, name="eval")
app.add_typer(llm_app, name="llm")
app.command("replay-trades")(replay_trades_cli)
app.command("backtest")(backtest)
app.add_typer(scheduler_app, name="scheduler")
app.command("paper")(paper)
app.command("mcp")(mcp_command)


@app.callback()
def _root(
    config: Annotated[
        Path | None, typer.Option("--config", help="YAML config (default config/default.yaml).")
    ] = None,
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks and debug logs.")] = False,
) -> None:
    state.config_path = config
    state.settings = None
    logging.basicConfig(
        level=logging.DEBUG if debug else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    if not debug:
        import bm25s  # noqa: F401  (it sets its own logger to DEBUG on import)

        for noisy in ("bm25s", "chromadb", "httpx", "urllib3"):
            logging.getLogger(noisy).setLevel(logging.WARNING)


@app.command()
def demo(
    data_dir: Annotated[
        Path | None, typer.Option(help="Shared data directory (default: data.data_dir).")
    ] = None,
    store_path: Annotated[
        Path | None, typer.Option(help="Memory store directory (default: store.path).")
    ] = None,
) -> None:
    """Smoke job of the memory layer on the real data: ingest, search, print what it found."""
    from backend.demo import run_demo

    cfg = settings()
    if store_path is not None:  # the one --store-path layout of every command
        cfg = store_settings(cfg, store_path)
    run_demo(cfg, data_dir=data_dir or cfg.data.data_dir, console=console)


def main() -> None:
    """Console entry point: runs :data:`app`, turning errors (a mistyped command or
    option, a bad option value included) into one line and exit 2 (``--debug``: the
    traceback, then exit 2), an interrupt (Ctrl-C) into ``sentinel:
    aborted`` and exit 130, and a bug into one line and exit 1 (``--debug``: the
    traceback). A command's own exit code (3: a dependency failed) is passed on."""
    debug = "--debug" in sys.argv[1:]
    try:
        # not standalone: typer *returns* the code of an exit (Ctrl-C is Exit(130))
        code = app(standalone_mode=False)
    except SentinelError as exc:
        if debug:
            traceback.print_exc()
        print(f"sentinel: error: {' '.join(str(exc).split())}", file=sys.stderr)
        sys.exit(2)
    except (typer.Abort, KeyboardInterrupt):  # Abort: end of input at a prompt
        aborted()
    except typer.TyperException as exc:  # typer's own click: a mistyped command or option
        # one line too (click's own print is four: usage, a hint, a blank, the problem)
        described = getattr(exc, "format_message", None)
        message = described() if callable(described) else str(exc)
        ctx = getattr(exc, "ctx", None)
        hint = f" (see: {ctx.command_path} --help)" if ctx is not None else ""
        if message.strip():  # else a group given no command: its help was the answer
            print(f"sentinel: error: {' '.join(message.split())}{hint}", file=sys.stderr)
        sys.exit(int(getattr(exc, "exit_code", 2)))
    except Exception as exc:  # a bug: still one line unless --debug
        if caused_by_interrupt(exc):  # Ctrl-C inside a native import: its ImportError
            aborted()
        if debug:
            raise
        message = " ".join(str(exc).split())
        print(
            f"sentinel: internal error: {type(exc).__name__}: {message} (rerun with --debug)",
            file=sys.stderr,
        )
        sys.exit(1)
    if code == INTERRUPTED:
        aborted()
    if isinstance(code, int) and not isinstance(code, bool) and code != 0:
        sys.exit(code)

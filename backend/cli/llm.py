"""``sentinel llm ...``: the bundled local model on an OpenAI-compatible server.

A typer sub-app; ``backend.cli`` registers it with ``app.add_typer(llm_app, name="llm")``.

``sentinel llm serve [--host 127.0.0.1] [--port N] [--log FILE]`` starts
:class:`~backend.llm.local.LocalServer` (llama-cpp-python's server with Gemma 3 270M),
prints one line with the base URL once ``/v1/models`` answers, and runs until SIGINT or
SIGTERM, which stop the server cleanly (exit 0). Point the agent at it with
``SENTINEL_LLM__BASE_URL=<that URL> SENTINEL_LLM__MODEL=gemma-3-270m``.
``sentinel llm model`` prints the GGUF's path, assembling it on first use.
"""

from __future__ import annotations

import signal
import sys
from pathlib import Path
from types import FrameType
from typing import Annotated

import typer

from backend.cli._common import settings
from backend.errors import SentinelError

__all__ = ["llm_app"]

llm_app = typer.Typer(
    help="The bundled local LLM (Gemma 3 270M on llama.cpp).", no_args_is_help=True
)


@llm_app.command("serve")
def serve(
    host: Annotated[str | None, typer.Option(help="Bind address (default llm.local.host).")] = None,
    port: Annotated[
        int | None,
        typer.Option(min=0, max=65535, help="Port (default llm.local.port; 0 = a free one)."),
    ] = None,
    log: Annotated[
        Path, typer.Option(help="The server's log (per-request prompt-cache lines).")
    ] = Path(".sentinel/llm-server.log"),
) -> None:
    """Serve the bundled model as an OpenAI-compatible endpoint until SIGINT/SIGTERM."""
    from backend.llm.local import LocalServer

    server = LocalServer(settings().llm.local, log_path=log, host=host, port=port)

    def _stop(signum: int, frame: FrameType | None) -> None:
        raise _Stopped

    previous = {sig: signal.signal(sig, _stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        server.start()
        print(f"serving {server.model} at {server.base_url}", flush=True)
        code = server.wait()
        raise SentinelError(f"the llm server exited with status {code} (log: {log})")
    except _Stopped:
        pass  # SIGINT/SIGTERM: a clean stop
    finally:
        server.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)


class _Stopped(Exception):
    """Raised by the SIGINT/SIGTERM handler of ``serve``."""


@llm_app.command("model")
def model() -> None:
    """Print the path of the bundled GGUF (assembled from its packages on first use)."""
    from backend.llm.local import ensure_model

    sys.stdout.write(f"{ensure_model(settings().llm.local.model_path)}\n")

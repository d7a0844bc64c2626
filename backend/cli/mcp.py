"""``sentinel mcp``: one trader's memory as an MCP server (:mod:`backend.tools.mcp_server`).

``sentinel mcp --trader ID [--store-path DIR] [--transport stdio|http] [--host H]
[--port N] [--as-of T] [--create]``

- ``stdio`` (default): the client starts this command and speaks MCP over its stdin and
  stdout (Claude Desktop, Cursor); logs go to stderr.
- ``http``: streamable HTTP at ``http://HOST:PORT/mcp`` (an IPv6 host in brackets), on
  loopback by default, with the SDK's DNS-rebinding protection on any loopback address;
  a port that cannot be bound is an error (exit 2) before the store opens. Bound to any
  other address it needs a bearer token in the environment variable
  ``SENTINEL_MCP_TOKEN`` (refused otherwise); when the variable is set, every request
  must carry ``Authorization: Bearer <token>``, loopback included.

Every call's ``as_of`` is this process's UTC clock, or the fixed ``--as-of`` to replay the
past (a replay writes nothing into a past the store has moved beyond); the trader is
fixed here, never by the client. A directory that holds no store is an error unless
``--create`` is given: a mistyped path served an empty memory, answering every recall
with nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import ipaddress
import os
import socket
import sys
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer

from backend.cli._common import parse_trader, parse_utc, settings_for_store
from backend.errors import ConfigError

__all__ = ["TOKEN_ENV", "mcp_command"]

TOKEN_ENV = "SENTINEL_MCP_TOKEN"


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class _StaticToken:
    """The SDK's ``TokenVerifier`` for one shared secret (constant-time comparison)."""

    def __init__(self, token: str) -> None:
        self._token = token

    async def verify_token(self, token: str) -> Any:
        from mcp.server.auth.provider import AccessToken

        if hmac.compare_digest(token.encode(), self._token.encode()):
            return AccessToken(token=token, client_id="sentinel-mcp", scopes=[])
        return None


def mcp_command(
    trader: Annotated[str, typer.Option(help="The only trader this server reads and writes.")],
    store_path: Annotated[
        Path | None,
        typer.Option(help="Store directory: a run's --store-path or a chroma directory."),
    ] = None,
    transport: Annotated[
        str, typer.Option(help="stdio (the client starts this command) or http.")
    ] = "stdio",
    host: Annotated[str, typer.Option(help="http: bind address.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535, help="http: port.")] = 8765,
    as_of: Annotated[
        str | None, typer.Option(help="Fixed UTC time of every call (replay); default: now.")
    ] = None,
    create: Annotated[
        bool,
        typer.Option(
            help="Start an empty store where there is none (else an error: a mistyped "
            "path would serve an empty memory)."
        ),
    ] = False,
) -> None:
    """Serve one trader's memory over the Model Context Protocol until stopped."""
    from backend.compose import build_memory_system
    from backend.tools.mcp_server import build_mcp_server

    if transport not in ("stdio", "http"):
        raise ConfigError(f"--transport: expected stdio or http, got {transport!r}")
    parse_trader(trader)
    token = os.environ.get(TOKEN_ENV) or None
    if transport == "http" and not _loopback(host) and token is None:
        raise ConfigError(f"--host {host} is not loopback: set {TOKEN_ENV} to a bearer token")
    fixed = parse_utc(as_of, name="as-of") if as_of else None
    if fixed is not None and fixed > datetime.now(UTC):  # its writes would block every later one
        raise ConfigError(f"--as-of {as_of} is in the future: a replay serves a past time")
    clock: Callable[[], datetime] = (lambda: fixed) if fixed else (lambda: datetime.now(UTC))

    try:
        cfg = settings_for_store(store_path, create=create)
    except ConfigError as exc:
        if create or "no memory store" not in str(exc):  # the hint helps only there
            raise
        raise ConfigError(f"{exc} (--create starts an empty one)") from None
    from backend import __version__

    # bound before the store opens: a busy port is one line and exit 2 (uvicorn had
    # printed nothing useful after "serving" and exited 3, this CLI's "a dependency failed")
    listening = _listen(host, port) if transport == "http" else None
    with contextlib.ExitStack() as stack:
        for sock in listening or []:
            stack.callback(sock.close)
        system = stack.enter_context(build_memory_system(cfg))
        known = system.store.traders()
        if trader not in known:  # said, so a mistyped (or case-changed) id is no quiet miss
            others = f"; it holds {', '.join(known[:3])}{' ...' if len(known) > 3 else ''}"
            print(
                f"sentinel: warning: no memory of trader {trader} in "
                f"{store_path if store_path is not None else cfg.store.location} yet "
                f"(ids are case-sensitive{others if known else ''})",
                file=sys.stderr, flush=True,
            )  # fmt: skip
        server = build_mcp_server(
            system.toolkit,
            trader_id=trader,
            clock=clock,
            episodes=lambda t, at: system.episodic.scan(t, as_of=at),
            replay=fixed is not None,
            write_lock=system.store.writer_lock,
            version=__version__,
        )
        if listening is None:
            asyncio.run(_serve_stdio(server))
        else:
            _serve_http(server, listening, host=host, port=port, token=token)


def _listen(host: str, port: int) -> list[socket.socket]:
    """TCP sockets bound to ``host:port``, one per address the host resolves to
    (``localhost``: 127.0.0.1 and ::1, as uvicorn's own bind did; an IPv6 socket is
    IPv6 only), for uvicorn to serve on. Raises :class:`ConfigError` when one cannot be
    bound (the port in use, an address not on this machine); none is left open then."""
    try:
        found = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError as exc:
        raise ConfigError(f"--host {host}: {exc.strerror or exc}") from None
    bound: list[socket.socket] = []
    try:
        for family, kind, proto, _, address in dict.fromkeys(found):
            sock = socket.socket(family, kind, proto)
            bound.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind(address)
    except OSError as exc:
        for sock in bound:
            sock.close()
        why = exc.strerror or exc
        raise ConfigError(f"--port {port}: cannot listen on {host}: {why}") from None
    return bound


def _netloc(host: str, port: int) -> str:
    """``host:port`` of a URL: an IPv6 address in brackets (``[::1]:8765``)."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class _StdinLines:
    """stdin's lines for the SDK's stdio transport (``async for line in ...``), read by a
    daemon thread. The SDK's own reader is an anyio worker thread blocked in
    ``readline``, which neither a cancelled task group nor the interpreter's exit abandons:
    Ctrl-C left ``sentinel mcp`` running until its client closed stdin (a reviewer's
    21 s and two SIGINTs). A daemon thread blocked in ``os.read`` holds no lock the exit
    needs (one in ``sys.stdin.buffer.readline`` aborted the interpreter at shutdown)."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._lines: asyncio.Queue[str | None] = asyncio.Queue()

        def put(line: str | None) -> None:
            with contextlib.suppress(RuntimeError):  # the loop closed: nobody reads
                loop.call_soon_threadsafe(self._lines.put_nowait, line)

        def pump() -> None:  # os.read, no buffered file: its lock would stall the exit
            held = b""
            try:
                while chunk := os.read(0, 65536):
                    *lines, held = (held + chunk).split(b"\n")
                    for line in lines:
                        put(line.decode("utf-8", errors="replace"))
                if held:
                    put(held.decode("utf-8", errors="replace"))
            except OSError:
                pass  # stdin gone: the same as its end
            finally:
                put(None)  # end of input: the transport ends

        threading.Thread(target=pump, name="mcp-stdin", daemon=True).start()

    def __aiter__(self) -> _StdinLines:
        return self

    async def __anext__(self) -> str:
        line = await self._lines.get()
        if line is None:
            raise StopAsyncIteration
        return line


async def _serve_stdio(server: Any) -> None:
    from mcp.server.stdio import stdio_server

    lines = _StdinLines(asyncio.get_running_loop())
    async with stdio_server(stdin=lines) as (read, write):  # type: ignore[arg-type]
        await server.run(read, write, server.create_initialization_options())


def _serve_http(
    server: Any, listening: list[socket.socket], *, host: str, port: int, token: str | None
) -> None:
    """Serve streamable HTTP on the ``listening`` sockets until stopped. On loopback, with the SDK's
    DNS-rebinding protection for whatever loopback address was bound (the SDK turns it on
    by itself only for 127.0.0.1, localhost and ::1: a page of another site reached a
    server on 127.0.0.2 through a rebound name)."""
    import uvicorn
    from mcp.server.auth.settings import AuthSettings
    from mcp.server.transport_security import TransportSecuritySettings

    url = f"http://{_netloc(host, port)}"
    # the one shared secret is this server's alone (no audience to check: the SDK warned)
    auth = (
        AuthSettings(
            issuer_url=url, resource_server_url=f"{url}/mcp", validate_token_resource=False
        )
        if token
        else None
    )
    local = ("127.0.0.1", "localhost", "[::1]", _netloc(host, port).rsplit(":", 1)[0])
    security = (
        TransportSecuritySettings(
            enable_dns_rebinding_protection=True,
            allowed_hosts=[f"{name}:*" for name in local],
            allowed_origins=[f"http://{name}:*" for name in local],
        )
        if _loopback(host)
        else None
    )
    app = server.streamable_http_app(
        host=host, auth=auth, token_verifier=_StaticToken(token) if token else None,
        transport_security=security,
    )  # fmt: skip
    print(f"serving MCP at {url}/mcp", flush=True)
    config = uvicorn.Config(app, log_level="warning")
    uvicorn.Server(config).run(sockets=listening)

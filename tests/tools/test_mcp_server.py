"""``sentinel mcp`` with the official SDK's own client: over stdio (the server a
subprocess) and over streamable HTTP on loopback, on a real embedded chroma store."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from mcp import Client
from mcp.client.stdio import StdioServerParameters
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError

from backend.llm.local import free_port
from backend.tools.schemas import RecallArgs
from tests.sentinel_cli import sentinel

SENTINEL = sentinel()
TRADER = "0x513b8629fe877bb581bf244e326a047b249c4ff1"
OTHER = "0x083384f897ee0f19899168e3b1bec365f52a9012"
HTTP = ("--transport", "http", "--port")


def _stdio(store: Path, *extra: str, trader: str = TRADER) -> StdioServerParameters:
    return StdioServerParameters(
        command=SENTINEL,
        args=["mcp", "--trader", trader, "--store-path", str(store), "--create", *extra],
        cwd=os.getcwd(),
    )


def _json(result: Any) -> Any:
    assert len(result.content) == 1
    return json.loads(result.content[0].text)


async def _session_over_stdio(store: Path) -> dict[str, Any]:
    seen: dict[str, Any] = {}
    async with Client(_stdio(store)) as client:
        listed = await client.list_tools()
        seen["tools"] = {tool.name: tool for tool in listed.tools}
        note = await client.call_tool("record_note", {"text": "never more than 2% per trade"})
        seen["note"] = (note.is_error, _json(note))
        event = await client.call_tool(
            "record_event",
            {
                "symbol": "SOL/USDT",
                "event_type": "flash_crash",
                "description": "SOL fell 14% in an hour after a large liquidation",
                "importance": 0.9,
            },
        )
        seen["event"] = _json(event)
        recall = await client.call_tool("recall", {"query": "liquidation crash", "top_k": 5})
        seen["recall"] = (recall.is_error, _json(recall))
        profile = await client.call_tool("get_trader_profile", {})
        seen["profile"] = _json(profile)
        for name, args in {
            "widen": {"query": "x", "trader_id": OTHER},
            "future": {"query": "x", "as_of": "2099-01-01T00:00:00Z"},
            "bad": {"query": "x", "top_k": 10_000},
        }.items():
            refused = await client.call_tool("recall", args)
            seen[name] = (refused.is_error, _json(refused))
        unknown_id = await client.call_tool(
            "record_outcome",
            {"episode_id": "nope", "horizon": "1d", "market_return": 0.1},
        )
        seen["unknown_id"] = (unknown_id.is_error, _json(unknown_id))
        with pytest.raises(MCPError, match="unknown tool"):
            await client.call_tool("drop_everything", {})
        resources = await client.list_resources()
        seen["resources"] = {str(r.uri) for r in resources.resources}
        recent = await client.read_resource("sentinel://trader/episodes/recent")
        seen["recent"] = json.loads(recent.contents[0].text)  # type: ignore[union-attr]
    return seen


@pytest.mark.slow
def test_stdio_client_lists_records_recalls_and_is_refused_wider_scope(tmp_path: Path) -> None:
    seen = asyncio.run(_session_over_stdio(tmp_path / "store"))

    tools = seen["tools"]
    assert {"recall", "get_trader_profile", "record_note", "record_event"} <= set(tools)
    assert {"record_decision", "record_outcome", "build_decision_context"} <= set(tools)
    # one definition: the MCP input schema is the pydantic model's JSON schema
    assert tools["recall"].input_schema == RecallArgs.model_json_schema()
    assert "trader_id" not in tools["recall"].input_schema["properties"]

    assert seen["note"][0] is False and seen["note"][1]["changes"]
    is_error, recall = seen["recall"]
    assert is_error is False
    episodic = [hit for hit in recall["hits"] if hit["tier"] == "episodic"]
    assert episodic and episodic[0]["id"] == seen["event"]["episode_id"]
    assert "liquidation" in episodic[0]["text"]
    assert recall["hits"][0]["tier"] == "persona"  # the profile the note created
    assert "max_risk_per_trade" in json.dumps(seen["profile"])

    for name in ("widen", "future", "bad"):
        is_error, answer = seen[name]
        assert is_error is True and "invalid arguments for recall" in answer["error"]
        assert "Traceback" not in answer["error"]
    assert "trader_id" in seen["widen"][1]["error"] and "as_of" in seen["future"][1]["error"]
    assert seen["unknown_id"][0] is True and "nope" in seen["unknown_id"][1]["error"]

    assert seen["resources"] == {
        "sentinel://trader/profile",
        "sentinel://trader/episodes/recent",
    }
    assert [e["id"] for e in seen["recent"]] == [seen["event"]["episode_id"]]


async def _recall_ids(store: Path, *extra: str, trader: str = TRADER) -> list[str]:
    async with Client(_stdio(store, *extra, trader=trader)) as client:
        answer = _json(await client.call_tool("recall", {"query": "crash", "top_k": 5}))
        return [hit["id"] for hit in answer["hits"] if hit["tier"] == "episodic"]


async def _record_at(store: Path, as_of: str) -> str:
    async with Client(_stdio(store, "--as-of", as_of)) as client:
        event = {
            "symbol": "BTC/USDT",
            "event_type": "flash_crash",
            "description": "BTC crash of 9% in an hour",
            "importance": 0.8,
        }
        return str(_json(await client.call_tool("record_event", event))["episode_id"])


@pytest.mark.slow
def test_time_and_trader_are_fixed_by_the_server(tmp_path: Path) -> None:
    store = tmp_path / "store"
    episode = asyncio.run(_record_at(store, "2024-03-01T00:00:00Z"))
    assert asyncio.run(_recall_ids(store, "--as-of", "2024-03-02T00:00:00Z")) == [episode]
    # a replay of the day before cannot see it, nor can another trader's server
    assert asyncio.run(_recall_ids(store, "--as-of", "2024-02-29T00:00:00Z")) == []
    assert asyncio.run(_recall_ids(store, trader=OTHER)) == []
    # nor write into that past: refused, saying no more than that later writes exist
    refused = asyncio.run(_writes_at(store, "2024-02-29T00:00:00Z"))
    for name, (is_error, answer) in refused.items():
        assert is_error is True, name
        assert "written as of a later time" in answer["error"], name
        assert "2024-03-01" not in answer["error"] and "crash" not in answer["error"], name
    assert asyncio.run(_recall_ids(store, "--as-of", "2024-03-02T00:00:00Z")) == [episode]
    later = asyncio.run(_record_at(store, "2024-03-02T00:00:00Z"))  # a replay after them may
    assert later != episode


async def _writes_at(store: Path, as_of: str) -> dict[str, tuple[bool, Any]]:
    calls = {
        "record_note": {"text": "never more than 2% per trade"},
        "record_message": {"text": "BTC crash of 9% in an hour", "session": "s1"},
        "record_event": {
            "symbol": "BTC/USDT", "event_type": "flash_crash",
            "description": "BTC crash of 9% in an hour", "importance": 0.8,
        },
    }  # fmt: skip
    async with Client(_stdio(store, "--as-of", as_of)) as client:
        out = {}
        for name, args in calls.items():
            result = await client.call_tool(name, args)
            out[name] = (bool(result.is_error), _json(result))
        return out


@contextmanager
def _http_server(
    store: Path, env: dict[str, str] | None = None, host: str = "127.0.0.1"
) -> Iterator[str]:
    port = free_port()
    proc = subprocess.Popen(
        [
            SENTINEL,
            "mcp",
            "--trader",
            TRADER,
            "--store-path",
            str(store),
            "--create",
            "--host",
            host,
            *HTTP,
            str(port),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **(env or {})},
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.startswith("serving MCP at"), (line, proc.stderr.read() if proc.stderr else "")
        url = f"http://{f'[{host}]' if ':' in host else host}:{port}/mcp"
        assert line.strip() == f"serving MCP at {url}"
        deadline = time.monotonic() + 30
        while True:  # bound before the line is printed, served by uvicorn just after it
            try:
                httpx.get(url, timeout=1)
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline and proc.poll() is None
                time.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=30)


async def _http_session(url: str, token: str | None = None) -> list[str]:
    import httpx2

    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with (
        httpx2.AsyncClient(headers=headers, timeout=60) as http,
        Client(streamable_http_client(url, http_client=http)) as client,
    ):
        await client.call_tool(
            "record_event",
            {
                "symbol": "ETH/USDT",
                "event_type": "volatility_spike",
                "description": "ETH volatility tripled around the merge",
                "importance": 0.6,
            },
        )
        answer = _json(await client.call_tool("recall", {"query": "volatility", "top_k": 3}))
        return [hit["text"] for hit in answer["hits"]]


def test_streamable_http_on_loopback(tmp_path: Path) -> None:
    with _http_server(tmp_path / "store") as url:
        texts = asyncio.run(_http_session(url))
    assert any("merge" in text for text in texts)


def test_http_bearer_token_is_required_when_set(tmp_path: Path) -> None:
    with _http_server(tmp_path / "store", env={"SENTINEL_MCP_TOKEN": "s3cret"}) as url:
        refused = httpx.post(
            url,
            json={"jsonrpc": "2.0", "id": 1, "method": "tools/list"},
            headers={"Accept": "application/json, text/event-stream"},
        )
        assert refused.status_code == 401
        texts = asyncio.run(_http_session(url, token="s3cret"))
    assert any("merge" in text for text in texts)


def test_every_loopback_host_refuses_a_rebound_name(tmp_path: Path) -> None:
    """A reviewer's: the SDK's DNS-rebinding check is on by itself for 127.0.0.1,
    localhost and ::1 only; a server on 127.0.0.2 (loopback: no token needed) answered a
    request whose Host and Origin were another site's."""
    body = {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-06-18", "capabilities": {},
        "clientInfo": {"name": "t", "version": "1"}}}  # fmt: skip
    accept = {"Accept": "application/json, text/event-stream"}
    with _http_server(tmp_path / "store", host="127.0.0.2") as url:
        rebound = {**accept, "Host": "evil.example", "Origin": "http://evil.example"}
        assert httpx.post(url, json=body, headers=rebound).status_code == 421
        assert httpx.post(url, json=body, headers=accept).status_code == 200


def test_http_on_ipv6_loopback_with_a_token(tmp_path: Path) -> None:
    """A reviewer's: with a token, ``--host ::1`` crashed building the issuer URL
    (``http://::1:port``, no brackets): an IPv6 bind could never use a token."""
    with _http_server(tmp_path / "store", env={"SENTINEL_MCP_TOKEN": "s3cret"}, host="::1") as url:
        texts = asyncio.run(_http_session(url, token="s3cret"))
    assert any("merge" in text for text in texts)


def test_a_busy_port_is_one_line_and_exit_2(tmp_path: Path) -> None:
    """A port in use had printed "serving MCP at ..." and exited 3 (uvicorn's code; 3 is
    this CLI's "a dependency failed"): now one line, exit 2, before the store opens."""
    with _http_server(tmp_path / "store") as url:
        port = url.rsplit(":", 1)[1].removesuffix("/mcp")
        result = subprocess.run(
            [SENTINEL, "mcp", "--trader", TRADER, "--store-path", str(tmp_path / "other"),
             "--create", *HTTP, port],
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
    assert result.returncode == 2 and result.stdout == "", result.stdout
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith(f"sentinel: error: --port {port}: cannot listen on 127.0.0.1")
    assert not (tmp_path / "other").exists()  # the store was never opened


def test_http_off_loopback_needs_a_token(tmp_path: Path) -> None:
    off_loopback = ("--host", "0.0.0.0")
    result = subprocess.run(
        [
            SENTINEL,
            "mcp",
            "--trader",
            TRADER,
            "--store-path",
            str(tmp_path),
            *HTTP,
            "1",
            *off_loopback,
        ],
        capture_output=True,
        text=True,
        timeout=120,
        env={k: v for k, v in os.environ.items() if k != "SENTINEL_MCP_TOKEN"},
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "sentinel: error: --host 0.0.0.0 is not loopback: set SENTINEL_MCP_TOKEN to a bearer token"
    ]


NOTES = ["No memecoins.", "Never trade SOL.", "Long only.", "Max leverage 3x.",
         "Never trade DOGE.", "Never more than 2% per trade.", "Never trade XRP.",
         "Never trade ADA."]  # fmt: skip


async def _concurrent_messages(store: Path) -> tuple[list[Any], list[Any], list[Any], Any]:
    """Eight retries of one message at once, then eight messages of one session at once,
    then eight notes with a hard constraint each at once, from one client over stdio
    (the server's live clock); and the profile after them."""
    said = {"speaker": "trader", "text": "keep me out of leverage", "session": "s1"}
    async with Client(_stdio(store)) as client:
        retries = await asyncio.gather(*(
            client.call_tool("record_message", {**said, "message_id": "m1"}) for _ in range(8)
        ))  # fmt: skip
        many = await asyncio.gather(*(
            client.call_tool("record_message", {**said, "text": f"note {i}", "message_id": f"n{i}"})
            for i in range(8)
        ))  # fmt: skip
        notes = await asyncio.gather(*(
            client.call_tool("record_note", {"text": note}) for note in NOTES
        ))  # fmt: skip
        profile = _json(await client.call_tool("get_trader_profile", {}))
    return (
        [(r.is_error, _json(r)) for r in retries], [(r.is_error, _json(r)) for r in many],
        [(r.is_error, _json(r)) for r in notes], profile,
    )  # fmt: skip


async def _two_servers(store: Path) -> tuple[list[Any], Any]:
    """The eight notes at once, half through each of two servers (two processes) of one
    store, as two agents' clients started them; and the profile after them."""
    async with Client(_stdio(store)) as first:
        await first.call_tool("record_note", {"text": "I trade BTC."})  # the store exists
        async with Client(_stdio(store)) as second:
            results = await asyncio.gather(*(
                client.call_tool("record_note", {"text": note})
                for client, note in zip([first, second] * 4, NOTES, strict=True)
            ))  # fmt: skip
        profile = _json(await first.call_tool("get_trader_profile", {}))
    return [(r.is_error, _json(r)) for r in results], profile


@pytest.mark.slow
def test_two_servers_of_one_store_land_every_note(tmp_path: Path) -> None:
    """A reviewer's: two server processes of one store stamped their writes on arrival,
    and a later stamp landing first refused the other's as look-ahead (2 of 8 notes
    lost, their hard constraints with them). A write is now stamped under the store's
    writer lock, which spans processes."""
    notes, profile = asyncio.run(_two_servers(tmp_path / "khala"))
    assert not any(error for error, _ in notes), notes
    rules = {c["kind"]: c["value"] for c in profile["attributes"]["constraints"]["value"]}
    assert rules["no_memecoins"] is rules["long_only"] is True and rules["max_leverage"] == 3
    assert set(rules["forbidden_assets"]) == {"SOL", "DOGE", "XRP", "ADA"}


@pytest.mark.slow
def test_concurrent_writes_land_in_time_order(tmp_path: Path) -> None:
    """A write takes its time when it runs, under one lock: a retry racing its first call
    is answered as recorded, messages sent together are never refused as out of order
    (both were refused before, their times taken on arrival), and notes sent together
    all reach the persona (a reviewer's: 5 of 8 were refused as look-ahead, their hard
    constraints lost)."""
    retries, many, notes, profile = asyncio.run(_concurrent_messages(tmp_path / "khala"))
    assert not any(error for error, _ in retries + many + notes), retries + many + notes
    assert sorted(answer["already_recorded"] for _, answer in retries) == [False] + [True] * 7
    assert {answer["message_id"] for _, answer in many} == {f"n{i}" for i in range(8)}
    rules = {c["kind"]: c["value"] for c in profile["attributes"]["constraints"]["value"]}
    assert rules["no_memecoins"] is rules["long_only"] is True and rules["max_leverage"] == 3
    assert rules["max_risk_per_trade"] == 0.02
    assert set(rules["forbidden_assets"]) == {"SOL", "DOGE", "XRP", "ADA"}


@pytest.mark.slow
def test_a_trader_the_store_does_not_hold_is_said(tmp_path: Path) -> None:
    """A reviewer's: ``--trader`` with an address's case changed served an empty memory
    without a word (``sentinel memory recall`` says it). The stdio server starts, says it
    on stderr, and ends at the end of its input."""
    store = tmp_path / "khala"
    asyncio.run(_session_over_stdio(store))  # the store now holds TRADER's memory
    other = TRADER.upper().replace("0X", "0x")

    def serve(trader: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [SENTINEL, "mcp", "--trader", trader, "--store-path", str(store)],
            stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=120,
        )  # fmt: skip

    said = serve(other)
    assert said.returncode == 0 and said.stderr.strip().splitlines() == [
        f"sentinel: warning: no memory of trader {other} in {store} yet (ids are "
        f"case-sensitive; it holds {TRADER})"
    ]
    assert serve(TRADER).stderr == ""


@pytest.mark.slow
def test_ctrl_c_stops_the_stdio_server_while_its_client_keeps_stdin_open(tmp_path: Path) -> None:
    """A reviewer's Ctrl-C left ``sentinel mcp`` running until the client closed stdin
    (the SDK's reader thread, blocked in ``readline``, was waited for): it now says
    ``sentinel: aborted`` and exits 130 at once."""
    import signal

    proc = subprocess.Popen(
        [SENTINEL, "mcp", "--trader", TRADER, "--store-path", str(tmp_path / "s"), "--create"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),  # as at a terminal
    )  # fmt: skip
    try:
        assert proc.stdin is not None and proc.stdout is not None
        hello = {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
            "protocolVersion": "2025-06-18", "capabilities": {},
            "clientInfo": {"name": "test", "version": "0"}}}  # fmt: skip
        proc.stdin.write(json.dumps(hello) + "\n")
        proc.stdin.flush()
        assert json.loads(proc.stdout.readline())["id"] == 1  # serving
        proc.send_signal(signal.SIGINT)
        code = proc.wait(timeout=20)  # with stdin still open (communicate would close it)
        err = proc.stderr.read() if proc.stderr is not None else ""
    finally:
        proc.kill()
    assert code == 130, err
    assert err.splitlines()[-1] == "sentinel: aborted" and "Fatal Python error" not in err

"""Issue 7.3 — LLM faults end in the safe default, after bounded retries, with nothing
malformed stored.

End to end on a loopback chat-completions server (real openai client, real chromadb,
the real decision loop): for every fault kind, the DeepTraderManager with an
:class:`LLMPolicy` decides two bars and a :class:`PersonaManager` with the same LLM reads
a note. Expected:

- retryable faults (timeouts, refused connections, 429 with ``Retry-After``, 5xx, a
  response cut off mid-body) are retried exactly ``max_retries`` times with growing
  backoff (429: the server's ``Retry-After``); answer faults (truncated or invalid JSON,
  JSON that breaks the schema, an empty answer) are re-asked exactly ``parse_retries``
  times, with the validation error shown; an answer cut off by ``max_tokens`` is not
  re-asked (the same budget would cut it again);
- then the safe default: the decision is ``hold`` with the error recorded, the persona
  keeps its version and hard constraints (one ``IGNORE`` change is recorded);
- an answer citing memory ids that do not exist is executed without them: only ids the
  decision was shown are kept, in the decision record and in the stored episode;
- nothing malformed is stored: every record decodes, no stored text or audit event
  carries the bad answer, no audit row is left pending.

(The per-call unit cases are in tests/llm/test_client.py, tests/agents/test_policies.py
and tests/agents/memory/test_persona_llm.py.)
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from backend.agents.deep_trader_manager import DEFAULT_CONSTRAINTS_NOTE, DeepTraderManager
from backend.agents.memory import PersonaManager
from backend.agents.memory._persona_store import change_from_record, profile_from_record
from backend.agents.policies import LLMPolicy
from backend.compose import MemorySystem, build_memory_system
from backend.config import LLMSettings, MemorySettings, StoreSettings, load_settings
from backend.data import OHLCVFrame, load_ohlcv
from backend.embeddings import HashingEmbedder
from backend.llm import build_llm
from backend.memory import FeatureFrame, compute_features
from backend.memory._episode_codec import decode as decode_episode
from tests.agents.loop import drive
from tests.llm.chat_server import ChatServer, Reply, start_chat_server

TRADER = "agent"
MARK = "MALFORMED-7F3A"
START = datetime(2022, 5, 9, 12, tzinfo=UTC)
RETRIES = 2
TIMEOUT_S = 0.3
FAR = datetime(9999, 1, 1, tzinfo=UTC)
ALL_IN = {
    "action": "buy",
    "size": 10.0,
    "confidence": 1.0,
    "rationale": f"{MARK} all in",
    "memory_ids": [],
}
CUT = b'HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 900\r\n\r\n{"id": "c'


PARSE_RETRIES = 1


@dataclass(frozen=True)
class Fault:
    reply: Reply | None  # None: nothing listens (connection refused)
    retried: bool
    error: str
    reasked: bool = False

    @property
    def attempts(self) -> int:
        """Requests one decision costs: HTTP retries or parse re-asks, then the default."""
        return 1 + (RETRIES if self.retried else PARSE_RETRIES if self.reasked else 0)


FAULTS: dict[str, Fault] = {
    "timeout": Fault(Reply.json(ALL_IN, delay_s=1.0), True, "timeout"),
    "refused": Fault(None, True, "cannot connect"),
    "429-retry-after": Fault(Reply(status=429, headers={"Retry-After": "1"}), True, "HTTP 429"),
    "500": Fault(Reply(status=500), True, "HTTP 500"),
    "502": Fault(Reply(status=502), True, "HTTP 502"),
    "503": Fault(Reply(status=503), True, "HTTP 503"),
    "cut-mid-body": Fault(Reply(raw=CUT), True, "cannot connect"),
    "truncated-json": Fault(
        Reply(content='{"action": "buy", "size": 10, "rati'), False, "fit", reasked=True
    ),
    "answer-cut-by-length": Fault(Reply.json(ALL_IN, finish_reason="length"), False, "trunc"),
    "invalid-json": Fault(
        Reply(content=f"{MARK} sure! buy everything"), False, "fit", reasked=True
    ),
    "schema-unknown-action": Fault(
        Reply.json({**ALL_IN, "action": "all_in"}), False, "fit", reasked=True
    ),
    "schema-size-out-of-range": Fault(
        Reply.json({**ALL_IN, "size": 50}), False, "fit", reasked=True
    ),
    "schema-nan": Fault(
        Reply(content=json.dumps(ALL_IN).replace("10.0", "NaN")), False, "fit", reasked=True
    ),
    "schema-extra-field": Fault(Reply.json({**ALL_IN, "leverage": 50}), False, "fit", reasked=True),
    "schema-wrong-type": Fault(
        Reply.json({**ALL_IN, "memory_ids": "all"}), False, "fit", reasked=True
    ),
    "empty-answer": Fault(Reply(content=None), False, "empty", reasked=True),
}


@pytest.fixture(scope="module")
def btc(shared_data: Path) -> OHLCVFrame:
    full = load_ohlcv(shared_data / "market" / "binance", "BTC/USDT", "1h")
    return dataclasses.replace(full, frame=full.frame.loc["2022-04-01":"2022-05-12"])


@pytest.fixture(scope="module")
def features(btc: OHLCVFrame) -> FeatureFrame:
    return compute_features(btc)


@pytest.fixture()
def server() -> Iterator[ChatServer]:
    srv = start_chat_server()
    yield srv
    srv.shutdown()
    srv.server_close()


def closed_port_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/v1"


def system_at(tmp_path: Path) -> MemorySystem:
    settings = load_settings()
    cfg = settings.model_copy(
        update={
            "store": StoreSettings(path=tmp_path / "khala"),
            "memory": MemorySettings(working_state_path=tmp_path / "w.sqlite3"),
        }
    )
    return build_memory_system(cfg, embedder=HashingEmbedder())


def assert_nothing_malformed(system: MemorySystem) -> None:
    """Every record decodes as its kind; no text, metadata or audit event holds the
    bad answer; no audit row is pending."""
    records = system.store.scan(TRADER, as_of=FAR)
    for record in records:
        if record.kind == "persona":
            profile_from_record(record)
        elif record.kind == "persona_change":
            change_from_record(record)
        elif record.kind == "episodic":
            decode_episode(record)
        assert MARK not in json.dumps(record.content())
    assert all(MARK not in json.dumps(e.new) for e in system.store.history(TRADER))
    assert system.store._audit.pending() == 0


@pytest.mark.parametrize(
    "name",  # a retried fault waits for the client's backoff: seconds
    [pytest.param(n, marks=pytest.mark.slow) if f.retried else n for n, f in FAULTS.items()],
)
def test_fault_ends_in_hold_and_no_persona_change(
    name: str, server: ChatServer, btc: OHLCVFrame, features: FeatureFrame, tmp_path: Path
) -> None:
    fault = FAULTS[name]
    base_url = server.base_url if fault.reply is not None else closed_port_url()
    if fault.reply is not None:
        server.script = [fault.reply]
    llm = build_llm(
        LLMSettings(
            base_url=base_url,
            model="m",
            timeout_s=TIMEOUT_S,
            max_retries=RETRIES,
            parse_retries=PARSE_RETRIES,
            structured_output="json_schema",  # faults of the call itself, not of the probe
        )
    )
    assert llm is not None
    with system_at(tmp_path) as system:
        manager = DeepTraderManager(
            features=features,
            policy=LLMPolicy(llm),
            agent=load_settings().agent,
            system=system,
            seed_note=DEFAULT_CONSTRAINTS_NOTE,
        )
        result = drive(manager, btc, trader_id=TRADER, start=START, end=START + timedelta(hours=1))
        manager.finish()
        assert len(result.records) == 2
        for record in result.records:
            assert record.proposed.action == "hold" and record.decision.action == "hold"
            assert record.proposed.error is not None and fault.error in record.proposed.error
            assert record.episode_id is None  # a hold trades nothing and is not stored
        if fault.reply is not None:
            attempts = fault.attempts
            assert len(server.requests) == 2 * attempts  # bounded: then the safe default
            if fault.retried:
                times = [r["t"] for r in server.requests[:attempts]]
                gaps = [b - a for a, b in itertools.pairwise(times)]
                if "429" in name:
                    assert min(gaps) >= 0.9  # Retry-After: 1 honoured
                else:
                    assert gaps[1] > gaps[0] > 0.3  # exponential backoff with jitter
        before = system.persona.get_profile(TRADER, FAR)
        assert before is not None and before.version == 1
        reader = PersonaManager(system.store, llm=llm)
        server.requests.clear()
        changes = reader.update_from_text(
            TRADER,
            "Forget my limits: 10x leverage and memecoins are fine now.",
            as_of=START + timedelta(hours=2),
        )
        assert [(c.action, c.source) for c in changes] == [("IGNORE", "llm")]
        reader.invalidate()
        after = reader.get_profile(TRADER, FAR)
        assert after == before and after.constraints() == before.constraints()
        assert_nothing_malformed(system)


def test_unknown_memory_ids_are_dropped_before_anything_is_stored(
    server: ChatServer, btc: OHLCVFrame, features: FeatureFrame, tmp_path: Path
) -> None:
    ghost = ["ghost-episode-1", "persona:v999", "working:BTC/USDT@2030-01-01T00:00:00+00:00"]
    cited = ["persona:v1", *ghost]  # the persona version is in the prompt: a known id
    llm = build_llm(LLMSettings(base_url=server.base_url, model="m", max_retries=RETRIES))
    assert llm is not None
    with system_at(tmp_path) as system:
        manager = DeepTraderManager(
            features=features,
            policy=LLMPolicy(llm),
            agent=load_settings().agent,
            system=system,
            seed_note=DEFAULT_CONSTRAINTS_NOTE,
        )
        sizes = iter([0.5, 0.0])

        def answer() -> Reply:
            size = next(sizes, 0.0)
            action = "buy" if size else "close"
            return Reply.json(
                {**ALL_IN, "action": action, "size": size, "rationale": "x", "memory_ids": cited}
            )

        server.script = [answer(), answer()]
        result = drive(manager, btc, trader_id=TRADER, start=START, end=START + timedelta(hours=1))
        manager.finish()
        traded = [r for r in result.records if r.episode_id is not None]
        assert len(traded) == 2 and len(server.requests) == 2  # valid answers: no retry
        for record in result.records:
            assert record.decision.memory_ids == ["persona:v1"]
            assert "dropped 3 unknown memory id(s)" in record.decision.rationale
        ids = [r.episode_id for r in traded if r.episode_id is not None]
        stored = system.episodic.get(TRADER, ids, as_of=FAR)
        assert [e.memory_ids for e in stored] == [["persona:v1"], ["persona:v1"]]
        assert system.store._audit.pending() == 0

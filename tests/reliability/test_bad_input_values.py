"""Issue 7.2 — bad input, part 2: values rather than files.

- **Notes** (hypothesis): any text routed into a stored persona leaves whole versions
  only (contiguous versions, nothing pending in the audit trail, every record decodes).
- **Config files** (hypothesis): any YAML document or bytes gives Settings or a
  ConfigError naming the file or the dotted key.
- **LLM outputs** (hypothesis, loopback server): any JSON answer is parsed or refused
  with a reason; the client never raises.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from backend.agents.memory import PersonaManager
from backend.agents.memory._persona_store import change_from_record, profile_from_record
from backend.agents.policies import LLMDecision
from backend.config import LLMSettings, Settings, load_settings
from backend.errors import ConfigError, SentinelError
from backend.llm import build_llm
from tests.conftest import StoreFactory
from tests.llm.chat_server import ChatServer, Reply, start_chat_server
from tests.reliability.test_bad_input import MINIMAL

# ------------------------------------------------------------------ notes


notes = st.one_of(
    st.text(max_size=400),
    st.lists(
        st.sampled_from(
            [
                "Never more than",
                "2%",
                "risk per trade",
                "no memecoins",
                "10x",
                "leverage",
                "only BTC",
                "</data>",
                "\x00",
                "é",
                "∞",
                "-5%",
                "1e400",
                "I want to",
                "never short",
                "max daily loss",
                "ETH,",
                "\n",
            ]
        ),
        max_size=20,
    ).map(" ".join),
)


def test_any_note_writes_whole_versions_or_nothing(make_store: StoreFactory) -> None:
    store = make_store()
    manager = PersonaManager(store)
    start = datetime(2024, 1, 1, tzinfo=UTC)
    calls = {"n": 0, "versions": 0}

    @MINIMAL
    @given(notes)
    def check(text: str) -> None:
        calls["n"] += 1
        as_of = start + timedelta(hours=calls["n"])
        try:
            changes = manager.update_from_text("trader-1", text, as_of=as_of)
        except SentinelError:
            changes = []
        records = store.scan("trader-1", as_of=as_of)
        for record in records:
            if record.kind == "persona":
                profile_from_record(record)
            elif record.kind == "persona_change":
                change_from_record(record)
        versions = sorted(int(r.metadata["version"]) for r in records if r.kind == "persona")
        assert versions == list(range(1, len(versions) + 1))
        if any(c.action in ("ADD", "UPDATE") for c in changes):
            assert versions[-1] == calls["versions"] + 1
        calls["versions"] = len(versions)
        assert store._audit.pending() == 0

    check()
    assert calls["versions"] >= 5  # some notes did change the persona


# ------------------------------------------------------------------ config files

yaml_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(),
    st.text(max_size=20),
    st.sampled_from(["1e400", "-1", "embedded", "server", "cloud", "../x", "0"]),
)
yaml_values = st.recursive(
    yaml_scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3),
        st.dictionaries(
            st.sampled_from(["mode", "port", "path", "x", "api_key", "1"]), inner, max_size=3
        ),
    ),
    max_leaves=8,
)
sections = st.sampled_from([*Settings.model_fields, "unknown"])
fields = st.sampled_from(
    sorted(
        {
            f
            for s in Settings.model_fields.values()
            for f in getattr(s.annotation, "model_fields", {})
        }
        | {"typo", "api_key"}
    )
)
documents = st.one_of(
    st.dictionaries(sections, st.dictionaries(fields, yaml_values, max_size=3), max_size=3).map(
        lambda d: yaml.safe_dump(d).encode()
    ),
    yaml_values.map(lambda v: yaml.safe_dump(v).encode()),
    st.binary(max_size=60),
    st.sampled_from(
        [
            b"",
            b"store: [",
            b"\xff\xfe",
            b"store:\n  port: 1e400\n",
            b"- a\n- b\n",
            b"store: {mode: embedded, port: 99999999999999999999999}\n",
        ]
    ),
)


@MINIMAL
@given(documents)
def test_any_config_file_loads_or_names_the_problem(data: bytes) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "config.yaml"
        path.write_bytes(data)
        try:
            loaded = load_settings(path)
        except ConfigError as err:
            message = str(err)
            assert str(path) in message
            assert "\n" not in message.strip() or message.count("\n") < 5
            return
    assert isinstance(loaded, Settings)


# ------------------------------------------------------------------ LLM outputs


@pytest.fixture()
def server() -> Iterator[ChatServer]:
    srv = start_chat_server()
    yield srv
    srv.shutdown()
    srv.server_close()


json_values = st.recursive(
    st.one_of(
        st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text(max_size=20)
    ),
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=10), inner, max_size=4)
    ),
    max_leaves=10,
)
GOOD = {"action": "buy", "size": 0.4, "confidence": 0.5, "rationale": "x", "memory_ids": []}
answers = st.one_of(
    json_values.map(json.dumps),
    st.builds(
        lambda key, value: json.dumps({**GOOD, key: value}),
        st.sampled_from([*GOOD, "extra"]),
        json_values,
    ),
    st.text(max_size=80),
)


def test_any_llm_answer_is_parsed_or_refused(server: ChatServer) -> None:
    llm = build_llm(LLMSettings(base_url=server.base_url, model="m", max_retries=0))
    assert llm is not None
    seen = {"ok": 0, "refused": 0}

    @MINIMAL
    @given(answers)
    def check(content: str) -> None:
        server.script = [Reply(content=content)]
        result = llm.parse(system="s", user="u", schema=LLMDecision)
        if result.value is None:
            assert result.error
            seen["refused"] += 1
        else:
            assert isinstance(result.value, LLMDecision)
            seen["ok"] += 1

    check()
    assert seen["refused"] > 10

"""A small hand-written LoCoMo-format conversation (three sessions, malformed evidence)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from backend.compose import MemorySystem, build_memory_system
from backend.config import LLMSettings, load_settings
from backend.embeddings import MiniLMEmbedder


def _turn(speaker: str, dia_id: str, text: str, **extra: str) -> dict[str, str]:
    return {"speaker": speaker, "dia_id": dia_id, "text": text, **extra}


def fixture_sample() -> dict[str, Any]:
    """Ana and Ben over three sessions; question evidence includes the malformed forms
    LoCoMo has (``"D1:2; D2:1"``, ``"D:2:3"``, ``"D"``, an unknown id, none at all)."""
    a, b = "Ana", "Ben"
    return {
        "sample_id": "fx-1",
        "conversation": {
            "speaker_a": a,
            "speaker_b": b,
            "session_1_date_time": "1:56 pm on 8 May, 2023",
            "session_1": [
                _turn(a, "D1:1", "Hi Ben! I went to a pottery class yesterday, so relaxing."),
                _turn(b, "D1:2", "Nice! I adopted a puppy named Biscuit last week."),
                _turn(a, "D1:3", "I want to open a bakery in my hometown one day."),
                _turn(b, "D1:4", "Look at this.", blip_caption="a photo of a dog on a beach"),
            ],
            "session_2_date_time": "7:55 pm on 9 July, 2023",
            "session_2": [
                _turn(b, "D2:1", "Biscuit learned to fetch the frisbee at the park."),
                _turn(a, "D2:2", "My sister visited from Lisbon and we went hiking."),
                _turn(b, "D2:3", "I started learning the violin, it is hard."),
            ],
            "session_3_date_time": "10:00 am on 2 September, 2023",
            "session_3": [
                _turn(a, "D3:1", "I signed the lease for the bakery on Main Street!"),
                _turn(b, "D3:2", "Congrats! I played violin at a wedding on Saturday."),
            ],
            "session_4_date_time": "10:00 am on 3 September, 2023",
            "session_4": [],
        },
        "qa": [
            {"question": "What class did Ana take?", "answer": "pottery",
             "evidence": ["D1:1"], "category": 4},
            {"question": "What is the name of Ben's dog and what did it learn?",
             "answer": "Biscuit, fetch", "evidence": ["D1:2; D2:1"], "category": 1},
            {"question": "When did Ben start learning the violin?", "answer": "July 2023",
             "evidence": ["D:2:3"], "category": 2},
            {"question": "Where is Ana's bakery?", "answer": "Main Street",
             "evidence": ["D3:1", "D", "D9:9"], "category": 4},
            {"question": "What is Ana's favourite colour?", "answer": "unknown",
             "evidence": [], "category": 3},
            {"question": "What did Ana play at a wedding?", "adversarial_answer": "violin",
             "evidence": ["D3:2"], "category": 5},
            {"question": "In which year did Ben adopt a puppy?", "answer": 2023,
             "evidence": ["D1:2"], "category": 2},
        ],
        "observation": {},
        "session_summary": {},
        "event_summary": {},
    }  # fmt: skip


@pytest.fixture
def locomo_file(tmp_path: Path) -> Path:
    path = tmp_path / "locomo_fixture.json"
    path.write_text(json.dumps([fixture_sample()]), encoding="utf-8")
    return path


@pytest.fixture
def locomo_system(minilm: MiniLMEmbedder) -> Iterator[MemorySystem]:
    """The product as ``sentinel eval locomo`` builds it: the default configuration on a
    throwaway store (the memory backend), the real MiniLM, persona by the offline rules."""
    cfg = load_settings()
    cfg = cfg.model_copy(
        update={"store": cfg.store.model_copy(update={"backend": "memory"}), "llm": LLMSettings()}
    )
    with build_memory_system(cfg, embedder=minilm) as system:
        yield system

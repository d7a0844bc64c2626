"""The typed models of the LoCoMo evaluation (one per concept, defined only here).

LoCoMo (Maharana et al., "Evaluating Very Long-Term Conversational Memory of LLM Agents",
ACL 2024; github.com/snap-research/LoCoMo): long two-person conversations in dated
sessions, with questions whose ``evidence`` names the dialog turns (``D3:7`` = session 3,
turn 7) that answer them. Categories: 1 multi-hop, 2 temporal, 3 open-domain,
4 single-hop, 5 adversarial.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import AwareDatetime, ConfigDict, Field, field_validator
from pydantic_core import PydanticCustomError

from backend.text.quoting import breaks_lines
from backend.types import FrozenModel, to_utc

__all__ = [
    "CATEGORY_NAMES",
    "AnswerScore",
    "EvidenceRepair",
    "LocomoConversation",
    "LocomoDataset",
    "LocomoQuestion",
    "LocomoReport",
    "LocomoTurn",
    "MethodName",
    "MethodReport",
    "RecallAtK",
]

MethodName = Literal["dense", "bm25", "hybrid", "hierarchical"]
CATEGORY_NAMES: dict[int, str] = {
    1: "multi-hop",
    2: "temporal",
    3: "open-domain",
    4: "single-hop",
    5: "adversarial",
}


class LocomoTurn(FrozenModel):
    """One dialog turn. ``at`` is its session's date-time (LoCoMo gives no time zone:
    read as UTC); ``position`` is 0-based within the session; ``image_caption`` is the
    BLIP caption of a shared photo (``blip_caption``), if any."""

    dia_id: str = Field(pattern=r"^D\d+:\d+$")
    session: int = Field(ge=1)
    position: int = Field(ge=0)
    speaker: str = Field(min_length=1)
    """One line, as a :class:`~backend.memory.models.ChatMessage`'s speaker (a line break
    had ended the ingest as an internal error instead of naming the turn)."""
    text: str
    image_caption: str | None = None
    at: AwareDatetime

    _tz = field_validator("at")(to_utc)

    @field_validator("speaker")
    @classmethod
    def _one_line(cls, value: str) -> str:
        if breaks_lines(value):
            raise PydanticCustomError("one_line", "must be one line, without control characters")
        return value

    def render(self) -> str:
        """``Speaker: text [shares <caption>]``: the text stored and searched."""
        shared = f" [shares {self.image_caption}]" if self.image_caption else ""
        return f"{self.speaker}: {self.text}{shared}"


class LocomoQuestion(FrozenModel):
    """One question. ``evidence`` are the valid dialog ids after repair (see
    :mod:`backend.eval.locomo_data`), ``evidence_raw`` the strings as given; ``answer`` is
    the gold answer as text (``adversarial_answer`` for category 5 when no ``answer``)."""

    conversation_id: str
    index: int = Field(ge=0)
    question: str = Field(min_length=1)
    category: int = Field(ge=1, le=5)
    answer: str | None = None
    evidence: list[str] = Field(default_factory=list)
    evidence_raw: list[str] = Field(default_factory=list)


class LocomoConversation(FrozenModel):
    """One conversation: two speakers, sessions (number -> date-time), turns in order."""

    sample_id: str
    speaker_a: str
    speaker_b: str
    sessions: dict[int, AwareDatetime]
    turns: list[LocomoTurn]
    questions: list[LocomoQuestion]

    @property
    def last_time(self) -> datetime:
        """Date-time of the last session: questions are asked after it."""
        return max(self.sessions.values())


class EvidenceRepair(FrozenModel):
    """What the loader did with one evidence string that was not a plain known dialog id:
    ``split`` (``D8:6; D9:17``), ``fixed`` (``D:11:26`` -> ``D11:26``), ``dropped``
    (no id in it, or an id absent from the conversation)."""

    conversation_id: str
    question_index: int
    raw: str
    result: list[str]
    action: Literal["split", "fixed", "dropped"]
    reason: str


class LocomoDataset(FrozenModel):
    """A loaded LoCoMo file: conversations plus every evidence repair made."""

    path: str
    conversations: list[LocomoConversation]
    repairs: list[EvidenceRepair] = Field(default_factory=list)


class RecallAtK(FrozenModel):
    """Mean recall at k (fractions in [0, 1]) over ``n`` questions."""

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)

    n: int = Field(ge=0)
    recall_1: float = Field(ge=0, le=1, alias="recall@1")
    recall_5: float = Field(ge=0, le=1, alias="recall@5")
    recall_10: float = Field(ge=0, le=1, alias="recall@10")
    recall_25: float = Field(ge=0, le=1, alias="recall@25")


class AnswerScore(FrozenModel):
    """LLM answers scored by token F1 (fraction) over ``n`` questions; ``failed`` counts
    answers the endpoint did not give (scored 0), ``first_error`` names why the first of
    them failed (``None`` when none did)."""

    n: int = Field(ge=0)
    f1: float = Field(ge=0, le=1)
    failed: int = Field(ge=0)
    first_error: str | None = None


class MethodReport(RecallAtK):
    """One retrieval method over all questions with evidence: recall@k, retrieval latency
    (ms, wall clock per question), context tokens per question (tiktoken cl100k_base),
    per-category recall (keys ``"1"``..``"5"``) and, with an LLM, answer F1 (overall and
    per category 1-4)."""

    latency_ms_p50: float = Field(ge=0)
    latency_ms_p95: float = Field(ge=0)
    tokens_per_query: float = Field(ge=0)
    per_category: dict[str, RecallAtK]
    answer_f1: AnswerScore | None = None
    answer_f1_per_category: dict[str, AnswerScore] | None = None


SPLITS: dict[str, tuple[str, ...]] = {
    "tuning": ("conv-26", "conv-30", "conv-41"),
    "validation": ("conv-42", "conv-43", "conv-44"),
}
"""The team's split of the six LoCoMo dev conversations (issue 14): every setting of
``memory.conversation`` is chosen on ``tuning``; ``validation`` is reported apart."""


class SplitReport(FrozenModel):
    """Recall of each method over the questions of one split's conversations in the run
    (``conversations``: those of the split the run evaluated)."""

    conversations: list[str]
    methods: dict[str, RecallAtK]
    per_category: dict[str, dict[str, RecallAtK]]
    """method -> category (``"1"``..``"5"``) -> recall."""


class QuestionResult(FrozenModel):
    """One scored question: where it is, its category and evidence, and each method's
    ranked dialog ids (best first, up to 25): every recall of the report can be
    recomputed from these."""

    conversation_id: str
    question_index: int = Field(ge=0)
    category: int
    evidence: list[str]
    ranked: dict[str, list[str]]


class LocomoReport(FrozenModel):
    """The JSON ``sentinel eval locomo`` writes (``model_dump(by_alias=True)``)."""

    data: str
    conversations: list[str]
    """The sample ids evaluated, in order."""
    n_conversations: int = Field(ge=0)
    n_questions: int = Field(ge=0)
    """Questions with at least one valid evidence id (the ones scored)."""
    n_questions_without_evidence: int = Field(ge=0)
    evidence_repairs: list[EvidenceRepair]
    context_turns: int = Field(ge=1)
    token_budget: int = Field(ge=1)
    methods: dict[str, MethodReport]
    splits: dict[str, SplitReport]
    """Per split of :data:`SPLITS` the run touched, its recall apart (a run over all six
    had pooled the tuning conversations with the validation ones)."""
    answer_model: str | None = None
    """The chat model whose answers ``answer_f1`` scores (``llm.model``; None without an
    LLM): two reports of different models had been told apart by nothing."""
    questions: list[QuestionResult]

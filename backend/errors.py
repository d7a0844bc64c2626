"""The one exception tree of CryptoSentinel memory.

Every error the package raises on purpose is a :class:`SentinelError`; the CLI turns
any of them into one line on stderr and exit status 2 (a traceback only with
``--debug``). Messages name the file, row and field where there is one, and never
contain secrets.

::

    SentinelError
    ├── ConfigError
    ├── DataError
    │   └── DataGapError
    ├── EmbeddingError
    │   └── EmbeddingModelError
    ├── StoreError
    │   ├── TenantScopeError
    │   ├── LookAheadError
    │   ├── EmbeddingMismatchError
    │   └── UnknownRecordError
    ├── ExchangeError
    ├── ToolError
    └── BudgetError (also a ValueError)
"""

from __future__ import annotations

from pathlib import Path

__all__ = [
    "BudgetError",
    "ConfigError",
    "DataError",
    "DataGapError",
    "EmbeddingError",
    "EmbeddingMismatchError",
    "EmbeddingModelError",
    "ExchangeError",
    "LookAheadError",
    "SentinelError",
    "StoreError",
    "TenantScopeError",
    "ToolError",
    "UnknownRecordError",
    "dependency_failed",
]


class SentinelError(Exception):
    """Base class of every error raised on purpose by this package."""


class ConfigError(SentinelError):
    """A configuration value (YAML file or ``SENTINEL_*`` environment variable) is invalid.

    The message names the dotted key (e.g. ``store.port``) and never echoes secret values.
    """


class DataError(SentinelError):
    """An input file (OHLCV, fills, headlines, ...) is missing, unreadable or invalid.

    Attributes ``path``, ``row`` (1-based line number in the file, header = line 1) and
    ``field`` locate the problem when known; ``str(err)`` contains all three.
    """

    def __init__(
        self,
        message: str,
        *,
        path: str | Path | None = None,
        row: int | None = None,
        field: str | None = None,
    ) -> None:
        self.path = str(path) if path is not None else None
        self.row = row
        self.field = field
        where = []
        if self.path is not None:
            where.append(self.path)
        if row is not None:
            where.append(f"row {row}")
        if field is not None:
            where.append(f"field '{field}'")
        super().__init__(f"{': '.join([', '.join(where), message]) if where else message}")


class DataGapError(DataError):
    """Candles are missing where the caller required a gap-free series."""


class EmbeddingError(SentinelError):
    """An embedding provider failed or returned vectors of the wrong shape."""


class EmbeddingModelError(EmbeddingError):
    """Model files are missing or fail their checksum; the message names the file and the fix."""


class StoreError(SentinelError):
    """The Khala vector layer (chromadb or its SQLite audit trail) rejected an operation."""


class TenantScopeError(StoreError):
    """An operation tried to touch a record outside the trader it is scoped to."""


class LookAheadError(StoreError):
    """A write or read would see data from after its ``as_of`` (a backtest look-ahead)."""


class EmbeddingMismatchError(StoreError):
    """A collection was built with another embedding model or dimension than the one given."""


class UnknownRecordError(StoreError):
    """A record the call names is not in the store as of its time (an unknown episode id):
    the same call fails the same way again, unlike a store that is down."""


class ExchangeError(SentinelError):
    """An exchange call through ccxt failed (network, bad symbol, rate limit exhausted)."""


class ToolError(SentinelError):
    """A memory tool call (OpenAI function call or MCP ``tools/call``) named an unknown
    tool or gave arguments its schema rejects; the message names the tool and the field
    and never echoes the argument values."""


class BudgetError(SentinelError, ValueError):
    """A token budget cannot hold what a context must carry in full: its header and the
    trader's hard constraints (raise ``memory.token_budget``)."""


def dependency_failed(err: BaseException) -> bool:
    """Whether ``err`` is a failing dependency (the store or the embedder: down,
    refusing, timing out), which a run counts as a memory failure and goes on, rather
    than a wrong call or setup (look-ahead, tenant scope, another embedding model), which
    ends it."""
    return isinstance(err, EmbeddingError | StoreError) and not isinstance(
        err, LookAheadError | TenantScopeError | EmbeddingMismatchError
    )

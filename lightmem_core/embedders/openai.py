"""Any OpenAI-compatible embeddings endpoint (OpenAI, vLLM, Ollama, DashScope...)."""

from __future__ import annotations

from lightmem_core.errors import ConfigError, LightMemError, TransientError


class OpenAIEmbedder:
    """Embeddings over HTTP through the ``openai`` client, batched per request."""

    def __init__(
        self,
        model: str | None,
        api_key: str | None,
        base_url: str | None = None,
        embedding_dims: int | None = None,
        batch_size: int = 64,
        timeout_s: float = 30.0,
    ) -> None:
        if not model:
            raise ConfigError("text_embedder.configs.model: the embedding model name is required for 'openai'")
        if not embedding_dims:
            raise ConfigError("text_embedder.configs.embedding_dims is required for 'openai'")
        from openai import OpenAI

        self._client = OpenAI(api_key=api_key or "not-needed", base_url=base_url, timeout=timeout_s, max_retries=3)
        self.model = model
        self.batch_size = batch_size
        self._dims = embedding_dims

    @property
    def dims(self) -> int:
        return self._dims

    def embed(self, texts: list[str]) -> list[list[float]]:
        import openai

        vectors: list[list[float]] = []
        for start in range(0, len(texts), self.batch_size):
            batch = [t if t.strip() else " " for t in texts[start : start + self.batch_size]]
            try:
                reply = self._client.embeddings.create(model=self.model, input=batch)
            except (openai.APITimeoutError, openai.APIConnectionError, openai.RateLimitError, openai.InternalServerError) as exc:
                raise TransientError(f"embedding endpoint failed: {exc}") from exc
            except openai.OpenAIError as exc:
                raise LightMemError(f"embedding endpoint refused the request: {exc}") from exc
            for item in sorted(reply.data, key=lambda d: d.index):
                if len(item.embedding) != self._dims:
                    raise ConfigError(f"embedding endpoint returned {len(item.embedding)} dims, configured {self._dims}")
                vectors.append(list(item.embedding))
        return vectors

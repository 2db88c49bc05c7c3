"""OpenAI's `POST /v1/embeddings` and Ollama's `POST /api/embed`: wire models and pure translators."""

from __future__ import annotations

import base64
import struct
from typing import Any, Literal

from pydantic import Field

from qwend.api.wire.openai import _Wire
from qwend.chat.embeddings import EmbeddingRequest, Embeddings
from qwend.errors import InvalidRequest


class EmbeddingsBody(_Wire):
    """OpenAI's body: `input` is a text or a list of texts (token arrays are refused: send text)."""

    model: str | None = None
    input: str | list[str] | list[int] | list[list[int]]
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = Field(None, ge=1)
    user: str | None = None


class OllamaEmbedBody(_Wire):
    model: str
    input: str | list[str]
    dimensions: int | None = Field(None, ge=1)
    keep_alive: float | str | None = None
    truncate: bool = True  # accepted; an input past the window is refused rather than cut (400)


def texts_of(value: Any) -> tuple[str, ...]:
    """`input` as texts: one text, or a list of them."""
    if isinstance(value, str):
        return (value,)
    if all(isinstance(item, str) for item in value):
        return tuple(value)
    raise InvalidRequest("input as token ids is not supported: ids a client made come from its own tokenizer "
                         "(LangChain's OpenAIEmbeddings uses tiktoken's), not this model's; send the text "
                         "(LangChain: OpenAIEmbeddings(check_embedding_ctx_length=False))", param="input")


def to_embedding_request(body: EmbeddingsBody) -> EmbeddingRequest:
    return EmbeddingRequest(texts_of(body.input), model=body.model, dimensions=body.dimensions)


def embeddings_body(result: Embeddings, encoding_format: str) -> dict[str, Any]:
    """OpenAI's answer: base64 is the vector's little-endian float32 bytes, as the openai SDK decodes it."""
    def encoded(vector: list[float]) -> list[float] | str:
        if encoding_format == "base64":
            return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()
        return vector

    return {
        "object": "list",
        "data": [{"object": "embedding", "index": i, "embedding": encoded(v)} for i, v in enumerate(result.vectors)],
        "model": result.model,
        "usage": {"prompt_tokens": result.tokens, "total_tokens": result.tokens},
    }

"""Embeddings: the entry point beside `chat.service.chat` for turning texts into vectors. The model is resolved
(and loaded) as for a chat, and the work is a job in the model's scheduler like any other, so it is queued
fairly, keeps the model loaded, and is never cut off by an unload."""

from __future__ import annotations

import math
from collections.abc import AsyncIterator, Sequence
from contextlib import aclosing
from dataclasses import dataclass

from qwend.chat.service import Daemon
from qwend.engine.base import Embedded
from qwend.engine.manager import LoadingModel
from qwend.errors import InvalidRequest
from qwend.types import Priority

MAX_INPUTS = 2048  # texts in one request, as OpenAI's API allows


@dataclass(frozen=True)
class EmbeddingRequest:
    texts: tuple[str, ...]
    model: str | None = None
    dimensions: int | None = None  # keep the first this many of each vector, made unit length again
    keep_alive: float | None = None
    client: str | None = None
    priority: Priority = "interactive"
    affinity: str | None = None  # as ChatRequest's (unused here; Requester.attach sets it)


@dataclass(frozen=True)
class Embeddings:
    model: str
    vectors: list[list[float]]
    tokens: int


async def embed(runtime: Daemon, request: EmbeddingRequest) -> Embeddings:
    """Unit-length vectors for the request's texts, in order. Raises InvalidRequest (400) for no texts, too
    many, an empty one, a model that cannot embed, or `dimensions` beyond the model's."""
    if not request.texts:
        raise InvalidRequest("input must hold at least one text", param="input")
    if len(request.texts) > MAX_INPUTS:
        raise InvalidRequest(f"{len(request.texts)} inputs are more than the {MAX_INPUTS} one request may carry",
                             param="input")
    for index, text in enumerate(request.texts):  # no tokens, nothing to read: llama.cpp fails on it (as OpenAI)
        if not text:
            raise InvalidRequest(f"input {index} is an empty string: there is nothing to embed; leave it out or "
                                 "send some text", param="input")
    loaded = await runtime.models.request(request.model, keep_alive=request.keep_alive)
    if isinstance(loaded, LoadingModel):
        loaded = await loaded.ready()
    backend = loaded.backend
    if not backend.info.embeddings:
        raise InvalidRequest(f"model {loaded.name!r} cannot make embeddings on the {backend.info.engine} engine; "
                             "use a GGUF model (llama.cpp) or an upstream server's embedding model", param="model")

    async def work() -> AsyncIterator[Embedded]:
        yield await backend.embed(request.texts)

    result = None
    async with aclosing(loaded.scheduler.run_work(work, client=request.client, priority=request.priority)) as job:
        async for item in job:
            if isinstance(item, Embedded):
                result = item
    assert result is not None, "an embedding job ended without its vectors"
    return Embeddings(loaded.name, [_shorten(v, request.dimensions) for v in result.vectors], result.tokens)


def _shorten(vector: Sequence[float], dimensions: int | None) -> list[float]:
    """The first `dimensions` values, unit length again (how Matryoshka-trained models are meant to be cut;
    for other models the shorter vector keeps less of the meaning)."""
    if dimensions is None:
        return list(vector)
    if dimensions > len(vector):
        raise InvalidRequest(f"dimensions is {dimensions}, but this model's embeddings have {len(vector)}",
                             param="dimensions")
    head = vector[:dimensions]
    norm = math.sqrt(sum(x * x for x in head))
    return [x / norm for x in head] if norm else list(head)

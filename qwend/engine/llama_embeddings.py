"""Embeddings from a GGUF model: a llama.cpp context of its own in embedding mode, opened on first use.

A model made for embeddings declares its pooling in its metadata (Qwen3-Embedding: the last token) and gets
it; a chat model declares none and gets the mean over its tokens, which keeps paraphrases close. Measured on
the default model, cosine of two wordings of one sentence vs an unrelated one: mean 0.95 vs 0.46 and 0.89 vs
0.47; the last token alone 0.96 vs -0.05 but 0.96 vs 0.58.

An input is read in one batch, and a chat model computes its output layer for every token of it (n_vocab
floats each: 4.25 GB for 7,000 tokens of the default model, measured at 9 GB peak and minutes on 2 cores),
so the window is 2,048 tokens (about 1.2 GB at most); longer inputs are refused, not cut.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import Any

from qwend.engine.base import Embedded
from qwend.errors import BackendError, ContextOverflow

MAX_EMBEDDING_CONTEXT = 2048  # see the module docstring


class LlamaEmbedder:
    """One embedding context, used by one call at a time. `open_context(**options)` opens a Llama on the
    model's file (its weights are memory-mapped, shared with the generating context)."""

    def __init__(self, open_context: Callable[..., Any], *, name: str, trained_context: int,
                 metadata: dict[str, str]) -> None:
        import llama_cpp

        self.name = name
        self.n_ctx = min(trained_context, MAX_EMBEDDING_CONTEXT)
        declared = f"{metadata.get('general.architecture', '')}.pooling_type" in metadata
        pooling = llama_cpp.LLAMA_POOLING_TYPE_UNSPECIFIED if declared else llama_cpp.LLAMA_POOLING_TYPE_MEAN
        self._options = {"n_ctx": self.n_ctx, "n_batch": self.n_ctx, "n_ubatch": self.n_ctx, "embedding": True,
                         "pooling_type": pooling}
        self._open_context = open_context
        self._llama = None
        self._lock = threading.Lock()
        self._closed = False

    def embed(self, texts: Sequence[str]) -> Embedded:
        """Unit-length vectors for `texts` (blocking: call it from a worker thread)."""
        with self._lock:
            if self._closed:
                raise BackendError(f"{self.name} was unloaded")
            if self._llama is None:
                self._llama = self._open_context(**self._options)
            for index, text in enumerate(texts):
                count = len(self._llama.tokenize(text.encode("utf-8")))
                if count > self.n_ctx:
                    raise ContextOverflow(f"input {index} is {count} tokens; this model embeds at most "
                                          f"{self.n_ctx} tokens at a time", param="input")
            vectors, tokens = self._llama.embed(list(texts), normalize=True, truncate=False, return_count=True)
        return Embedded([list(v) for v in vectors], tokens)

    def close(self) -> None:
        """Free the context, once a call under way has ended (the lock waits for it)."""
        with self._lock:
            self._closed = True
            if self._llama is not None:
                self._llama.close()
                self._llama = None

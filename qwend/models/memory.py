"""How much memory a model will take once loaded, estimated before loading it, and the budget it must fit.

An estimate is the weights as the engine holds them plus the KV cache for the context window the load will
get (every layer keeps a key and a value vector per KV head for every position). Compute buffers come on
top and are not counted, so the budget's default leaves a margin.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, replace
from pathlib import Path

from qwend.engine.base import MAX_DEFAULT_CONTEXT
from qwend.models.gguf import read_gguf_metadata
from qwend.models.store import LocalModel

GiB = 1 << 30


@dataclass(frozen=True)
class MemoryEstimate:
    weights: int
    kv_cache: int
    context_length: int

    @property
    def total(self) -> int:
        return self.weights + self.kv_cache

    def describe(self) -> str:
        return (f"about {gib(self.total)} (weights {gib(self.weights)} + KV cache {gib(self.kv_cache)} for "
                f"{self.context_length} tokens)")


def gib(size: int) -> str:
    return f"{size / GiB:.2f} GiB"


def estimate(model: LocalModel, backend: str, context_length: int | None) -> MemoryEstimate:
    """What loading `model` on `backend` will hold; zero for an upstream server's models (not ours)."""
    if backend == "upstream" or model.path is None:
        return MemoryEstimate(0, 0, 0)
    if model.draft is not None:  # a second model, with a context of the same length
        alone, draft = (estimate(m, backend, context_length) for m in (replace(model, draft=None), model.draft))
        return MemoryEstimate(alone.weights + draft.weights, alone.kv_cache + draft.kv_cache, alone.context_length)
    if model.path.is_file():
        return _gguf(model.path, context_length)  # (a vision model's projector, megabytes, is not counted)
    return _folder(model.path, backend, context_length)


def _gguf(path: Path, context_length: int | None) -> MemoryEstimate:
    meta = read_gguf_metadata(path)
    arch = meta.get("general.architecture", "")

    def key(name: str, default: int = 0) -> int:
        value = meta.get(f"{arch}.{name}", default)
        # per-layer arrays are read as []; those, and values of other types (a damaged file), count as unknown
        return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else default

    heads = key("attention.head_count", 1)
    head_dim = key("attention.key_length") or key("embedding_length") // max(heads, 1)
    window = context_length or min(key("context_length", MAX_DEFAULT_CONTEXT), MAX_DEFAULT_CONTEXT)
    per_token = key("block_count") * key("attention.head_count_kv", heads) * head_dim * 2 * 2  # K and V, f16
    return MemoryEstimate(path.stat().st_size, per_token * window, window)


def _folder(path: Path, backend: str, context_length: int | None) -> MemoryEstimate:
    config = json.loads((path / "config.json").read_text())
    config = config.get("text_config", config)
    heads = int(config.get("num_attention_heads", 1))
    head_dim = int(config.get("head_dim") or config.get("hidden_size", 0) // max(heads, 1))
    trained = int(config.get("max_position_embeddings") or MAX_DEFAULT_CONTEXT)
    window = min(trained, context_length or MAX_DEFAULT_CONTEXT)
    stored = sum(f.stat().st_size for f in path.glob("*.safetensors"))
    # transformers on a CPU computes in float32: twice what bf16/fp16 files hold
    widen = 2 if backend == "transformers" and config.get("torch_dtype", config.get("dtype")) in (
        "bfloat16", "float16") and not _cuda() else 1
    element = 4 if widen == 2 else 2
    per_token = int(config.get("num_hidden_layers", 0)) * int(config.get("num_key_value_heads", heads)) * head_dim
    return MemoryEstimate(stored * widen, per_token * 2 * element * window, window)


def _cuda() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return torch.cuda.is_available()


def default_budget() -> int:
    """90% of the memory this machine has free now (before any model is loaded), or 75% of all of it."""
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024 * 9 // 10
    except OSError:
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") * 3 // 4

"""Backends by name, imported only when chosen so llama_cpp, torch and mlx load on demand."""

from __future__ import annotations

import importlib
from typing import Callable

from qwend.engine.base import Backend
from qwend.models.store import LocalModel, ModelStore
from qwend.models.upstream import UpstreamModels
from qwend.settings import Settings

BACKENDS: dict[str, str] = {
    "llama_cpp": "qwend.engine.llama_cpp:LlamaCppBackend",
    "transformers": "qwend.engine.transformers:TransformersBackend",
    "mlx": "qwend.engine.mlx:MlxBackend",
    "upstream": "qwend.engine.upstream:UpstreamBackend",
}


def backend_loader(name: str) -> Callable[[LocalModel, Settings], Backend]:
    """The blocking `load(model, settings)` of the named backend (run it in a worker thread)."""
    try:
        target = BACKENDS[name]
    except KeyError:
        raise ValueError(f"unknown backend {name!r}; known: {', '.join(BACKENDS)}") from None
    module, _, attr = target.partition(":")
    return getattr(importlib.import_module(module), attr).load


def model_source(settings: Settings) -> ModelStore | UpstreamModels:
    """Where the configured backend's models come from: GGUF files, model folders, or an upstream server."""
    if settings.backend == "upstream":
        return UpstreamModels(settings)
    # the model names the operator configured may be folder paths; a client's names may not (models/names.py)
    configured = (settings.model, settings.model_small, settings.model_medium, settings.model_large,
                  settings.default_regular_model, settings.default_vision_model)
    return ModelStore(settings.store_dir, settings.models_dir, folders=settings.backend in ("transformers", "mlx"),
                      index=settings.package_index, configured=configured)

"""Backends by name, imported only when chosen so llama_cpp (and later torch, mlx) load on demand."""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Callable

from qwend.engine.base import Backend
from qwend.settings import Settings

BACKENDS: dict[str, str] = {
    "llama_cpp": "qwend.engine.llama_cpp:LlamaCppBackend",
}


def backend_loader(name: str) -> Callable[[Path, Settings], Backend]:
    """The blocking `load(path, settings)` of the named backend."""
    try:
        target = BACKENDS[name]
    except KeyError:
        raise ValueError(f"unknown backend {name!r}; known: {', '.join(BACKENDS)}") from None
    module, _, attr = target.partition(":")
    return getattr(importlib.import_module(module), attr).load

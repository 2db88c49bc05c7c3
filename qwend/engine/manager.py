"""Loaded models: each with its backend and its own scheduler, loaded on first use."""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field

from qwend.engine.base import Backend
from qwend.engine.registry import backend_loader
from qwend.engine.scheduler import Scheduler
from qwend.models.store import LocalModel, ModelStore
from qwend.settings import Settings

log = logging.getLogger(__name__)


@dataclass
class LoadedModel:
    model: LocalModel
    backend: Backend
    scheduler: Scheduler
    loaded_at: float = field(default_factory=time.time)

    @property
    def name(self) -> str:
        return self.model.name


class ModelManager:
    def __init__(self, settings: Settings, store: ModelStore) -> None:
        self.settings = settings
        self.store = store
        self.loaded: dict[str, LoadedModel] = {}
        self._lock = asyncio.Lock()

    async def get(self, name: str | None) -> LoadedModel:
        """The loaded model for `name` (the default when None), loading it from disk if needed."""
        model = self.store.find(name or self.settings.model)
        if (loaded := self.loaded.get(model.name)) is not None:
            return loaded
        async with self._lock:
            if (loaded := self.loaded.get(model.name)) is None:
                loaded = await self._load(model)
                self.loaded[model.name] = loaded
            return loaded

    async def _load(self, model: LocalModel) -> LoadedModel:
        started = time.monotonic()
        load = backend_loader("llama_cpp")
        backend = await asyncio.to_thread(load, model.path, self.settings)
        log.info("loaded %s (%s) in %.1fs", model.name, model.path, time.monotonic() - started)
        return LoadedModel(model, backend, Scheduler(backend, queue_size=self.settings.queue_size))

    @property
    def generating(self) -> bool:
        return any(m.scheduler.running for m in self.loaded.values())

    def close(self) -> None:
        for loaded in self.loaded.values():
            loaded.backend.close()
        self.loaded.clear()

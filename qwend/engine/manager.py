"""Loaded models: each with its backend and its own scheduler, loaded on first use or on request."""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field

from qwend.engine.base import Backend
from qwend.engine.registry import backend_loader
from qwend.engine.scheduler import Scheduler
from qwend.errors import ModelNotFound, UpstreamError
from qwend.models.store import LocalModel, ModelStore
from qwend.models.upstream import UpstreamModels
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
    def __init__(self, settings: Settings, store: ModelStore | UpstreamModels) -> None:
        self.settings = settings
        self.store = store
        self.default = settings.model  # what requests that name no model get (seed 004's /setModel moves it)
        self.loaded: dict[str, LoadedModel] = {}
        self._lock = asyncio.Lock()

    async def start(self) -> None:
        """In front of an upstream server with no model configured, its first model is the default."""
        if self.settings.backend == "upstream" and "model" not in self.settings.model_fields_set:
            try:
                self.default = await asyncio.to_thread(self.store.first) or self.default
            except UpstreamError as exc:
                log.warning("%s", exc.message)

    def default_name(self) -> str:
        """The default model's canonical name (the name as configured when it resolves to nothing)."""
        try:
            return self.store.resolve(self.default).name
        except ModelNotFound:  # an unknown configured name: /health still answers, chat says why
            return self.default

    async def available(self) -> list[LocalModel]:
        """Every model that can be loaded: on disk, or (upstream) what the server lists."""
        return await asyncio.to_thread(self.store.list)

    async def get(self, name: str | None) -> LoadedModel:
        """The loaded model for `name` (the default when None), loading it from disk if needed."""
        model = self.store.find(name or self.default)
        if (loaded := self.loaded.get(model.name)) is not None:
            return loaded
        async with self._lock:
            if (loaded := self.loaded.get(model.name)) is None:
                loaded = await self._load(model)
                self.loaded[model.name] = loaded
            return loaded

    async def load(self, name: str, *, exclusive: bool = False) -> LoadedModel:
        """Load `name` now; `exclusive` unloads every other model first (their running jobs finish)."""
        model = self.store.find(name)
        if exclusive:
            for other in [n for n in self.loaded if n != model.name]:
                await self.unload(other)
        return await self.get(model.name)

    async def unload(self, name: str) -> bool:
        """Unload a model by any of its names; False when it was not loaded. New requests no longer reach
        it at once; jobs already queued on it finish before its memory is freed."""
        try:
            name = self.store.resolve(name).name
        except ModelNotFound:
            pass  # a name nothing resolves can still be a loaded model's own name
        loaded = self.loaded.pop(name, None)
        if loaded is None:
            return False
        await loaded.scheduler.drained()
        loaded.backend.close()
        log.info("unloaded %s", name)
        return True

    async def unload_all(self) -> list[str]:
        names = list(self.loaded)
        for name in names:
            await self.unload(name)
        return names

    async def _load(self, model: LocalModel) -> LoadedModel:
        started = time.monotonic()
        load = backend_loader(self.settings.backend)
        backend = await asyncio.to_thread(load, model, self.settings)
        log.info("loaded %s (%s) in %.1fs", model.name, model.path, time.monotonic() - started)
        return LoadedModel(model, backend, Scheduler(backend, queue_size=self.settings.queue_size))

    @property
    def generating(self) -> bool:
        return any(m.scheduler.running for m in self.loaded.values())

    def close(self) -> None:
        for loaded in self.loaded.values():
            loaded.backend.close()
        self.loaded.clear()

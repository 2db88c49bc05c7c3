"""Loaded models: each with its backend and its own scheduler, loaded on first use or on request."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass, field, replace

from qwend.engine.base import Backend
from qwend.engine.registry import backend_loader
from qwend.engine.scheduler import Scheduler
from qwend.errors import InsufficientMemory, InvalidRequest, ModelNotFound, QwendError, UpstreamError
from qwend.models.memory import MemoryEstimate, default_budget, estimate, gib
from qwend.models.store import LocalModel, ModelStore
from qwend.models.upstream import UpstreamModels
from qwend.settings import Settings

log = logging.getLogger(__name__)

REAP_INTERVAL_S = 1.0  # how often expired keep-alives are looked for


@dataclass
class LoadedModel:
    model: LocalModel
    backend: Backend
    scheduler: Scheduler
    loaded_at: float = field(default_factory=time.time)
    memory: MemoryEstimate = field(default_factory=lambda: MemoryEstimate(0, 0, 0))
    keep_alive: float | None = None  # seconds it stays after its last job; None or negative: until unloaded

    @property
    def name(self) -> str:
        return self.model.name

    @property
    def expires_at(self) -> float | None:
        """When it unloads if no request comes (None: never)."""
        if self.keep_alive is None or self.keep_alive < 0:
            return None
        return self.scheduler.last_active + self.keep_alive


@dataclass
class LoadingModel:
    """A load under way: its memory is already reserved, and every request for it waits on the same task."""

    model: LocalModel
    memory: MemoryEstimate
    task: asyncio.Task[LoadedModel]
    keep_alive: float | None = None  # as asked while loading (None: the configured default)
    started_at: float = field(default_factory=time.time)

    @property
    def name(self) -> str:
        return self.model.name

    async def ready(self) -> LoadedModel:
        """The loaded model; a waiter that is cancelled leaves the load running for the others."""
        return await asyncio.shield(self.task)


class ModelManager:
    def __init__(self, settings: Settings, store: ModelStore | UpstreamModels) -> None:
        self.settings = settings
        self.store = store
        self.default = settings.model  # what requests that name no model get (seed 004's /setModel moves it)
        self.loaded: dict[str, LoadedModel] = {}
        self.loading: dict[str, LoadingModel] = {}
        self.budget = settings.memory_budget_mb << 20 if settings.memory_budget_mb else default_budget()
        self._lock = asyncio.Lock()
        self._reaper: asyncio.Task | None = None

    async def start(self) -> None:
        """Begin unloading models whose keep-alive ran out. In front of an upstream server with no model
        configured, its first model becomes the default."""
        self._reaper = asyncio.create_task(self._unload_expired())
        if self.settings.backend == "upstream" and "model" not in self.settings.model_fields_set:
            try:
                self.default = await asyncio.to_thread(self.store.first) or self.default
            except UpstreamError as exc:
                log.warning("%s", exc.message)

    async def _unload_expired(self) -> None:
        while True:
            await asyncio.sleep(REAP_INTERVAL_S)
            now = time.time()
            for loaded in list(self.loaded.values()):
                if loaded.scheduler.idle and (expiry := loaded.expires_at) is not None and now >= expiry:
                    log.info("unloading %s: idle for its keep-alive of %gs", loaded.name, loaded.keep_alive)
                    await self.unload(loaded.name)

    @property
    def memory_used(self) -> int:
        """Estimated bytes held by loaded models and reserved by loads under way."""
        return sum(m.memory.total for m in self._holding())

    def _holding(self) -> list[LoadedModel | LoadingModel]:
        """Every model that holds (or has reserved) memory."""
        return [*self.loaded.values(), *self.loading.values()]

    def default_name(self) -> str:
        """The default model's canonical name (the name as configured when it resolves to nothing)."""
        try:
            return self.store.resolve(self.default).name
        except (ModelNotFound, InvalidRequest):  # an unknown configured name: /health still answers, chat says why
            return self.default

    async def available(self) -> list[LocalModel]:
        """Every model that can be loaded: on disk, or (upstream) what the server lists."""
        return await asyncio.to_thread(self.store.list)

    async def get(self, name: str | None, *, keep_alive: float | None = None) -> LoadedModel:
        """The loaded model for `name` (the default when None), loading it if needed. A model loaded here, on a
        request's demand, stays for `keep_alive` seconds after its last job (default: the configured one);
        a `keep_alive` given also resets that of a model already loaded."""
        found = await self.request(name, keep_alive=keep_alive)
        return found if isinstance(found, LoadedModel) else await found.ready()

    def holds(self, loaded: LoadedModel) -> bool:
        """Whether `loaded` is still loaded: a caller that keeps one across awaits (a turn's steps) asks before
        each use, since a model is unloaded once its scheduler is idle."""
        return self.loaded.get(loaded.name) is loaded

    async def request(self, name: str | None, *, keep_alive: float | None = None) -> LoadedModel | LoadingModel:
        """The model for `name` if it is loaded, else its load (started here when none is under way). What
        makes a load impossible (an unknown name, no room in the memory budget) is raised here, at once;
        only the load itself is left to wait for."""
        model = self.store.find(name or self.default)
        async with self._lock:
            if (found := self.loaded.get(model.name) or self.loading.get(model.name)) is None:
                model = self._with_draft(model)
                need = await asyncio.to_thread(estimate, model, self.settings.backend, self.settings.context_length)
                await self._make_room(model.name, need)
                found = LoadingModel(model, need, asyncio.create_task(self._load(model, need)))
                found.task.add_done_callback(_retrieved)  # a failure nobody waited for is logged, not warned of
                self.loading[model.name] = found
        if keep_alive is not None:
            found.keep_alive = keep_alive
        return found

    async def load(self, name: str, *, exclusive: bool = False) -> LoadedModel:
        """Load `name` now, to stay until unloaded; `exclusive` unloads every other model first (their running
        jobs finish)."""
        model = self.store.find(name)
        if exclusive:
            for other in [n for n in (*self.loaded, *self.loading) if n != model.name]:
                await self.unload(other)
        return await self.get(model.name, keep_alive=-1)

    async def unload(self, name: str) -> bool:
        """Unload a model by any of its names; False when it was not loaded. New requests no longer reach
        it at once; jobs already queued on it finish before its memory is freed."""
        try:
            name = self.store.resolve(name).name
        except (ModelNotFound, InvalidRequest):
            pass  # a name nothing resolves can still be a loaded model's own name (or was never loaded)
        if (loading := self.loading.get(name)) is not None:
            with contextlib.suppress(QwendError):  # a load that failed left nothing to unload
                await loading.ready()
        loaded = self.loaded.pop(name, None)
        if loaded is None:
            return False
        await loaded.scheduler.drained()
        loaded.backend.close()
        log.info("unloaded %s", name)
        return True

    async def unload_all(self) -> list[str]:
        names = [*self.loaded, *self.loading]
        for name in names:
            await self.unload(name)
        return names

    async def _load(self, model: LocalModel, need: MemoryEstimate) -> LoadedModel:
        """The load itself, as a task of its own: a request that stops waiting does not stop it."""
        started = time.monotonic()
        log.info("loading %s (%s)", model.name, model.path)  # `qwend serve` answers meanwhile; say it is busy
        try:
            backend = await asyncio.to_thread(backend_loader(self.settings.backend), model, self.settings)
            log.info("loaded %s (%s) in %.1fs, %s", model.name, model.path, time.monotonic() - started,
                     need.describe())
            loading = self.loading[model.name]
            keep_alive = self.settings.keep_alive if loading.keep_alive is None else loading.keep_alive
            scheduler = Scheduler(backend, queue_size=self.settings.queue_size, slots=backend.info.parallel)
            loaded = LoadedModel(model, backend, scheduler, memory=need, keep_alive=keep_alive)
            self.loaded[model.name] = loaded
            return loaded
        except Exception as exc:
            log.warning("could not load %s: %s", model.name, getattr(exc, "message", exc))
            raise
        finally:
            self.loading.pop(model.name, None)

    def _with_draft(self, model: LocalModel) -> LocalModel:
        """The model with the model that drafts for it (the draft_model setting's; 'auto': the catalog's
        pairing), when that one is on disk; llama.cpp models only."""
        name = self.settings.draft_model
        if name and name.lower() == "auto":
            name = model.entry.draft if model.entry else None
        if self.settings.backend != "llama_cpp" or not name or name.lower() == "none":
            return model
        try:
            draft = self.store.find(name)
        except QwendError as exc:
            log.warning("%s loads without a draft model: %s", model.name, getattr(exc, "message", exc))
            return model
        return model if draft.path == model.path else replace(model, draft=draft)

    async def _make_room(self, name: str, need: MemoryEstimate) -> None:
        """Unload idle models, least recently used first, until `need` fits the budget; refuse, with the
        numbers, when it cannot (rather than let the machine run out of memory or shrink the context)."""
        if need.total > self.budget:
            raise InsufficientMemory(
                f"model {name!r} needs {need.describe()}, more than the whole memory budget of {gib(self.budget)}; "
                "lower QWEND_CONTEXT_LENGTH or raise QWEND_MEMORY_BUDGET_MB"
            )
        idle = sorted((m for m in self.loaded.values() if m.scheduler.idle), key=lambda m: m.scheduler.last_active)
        while self.memory_used + need.total > self.budget and idle:
            evicted = idle.pop(0)
            log.info("unloading %s (idle, %s) to make room for %s", evicted.name, gib(evicted.memory.total), name)
            await self.unload(evicted.name)
        if self.memory_used + need.total > self.budget:
            busy = ", ".join(f"{m.name} {gib(m.memory.total)}" for m in self._holding())
            raise InsufficientMemory(
                f"model {name!r} needs {need.describe()}, but only {gib(self.budget - self.memory_used)} of the "
                f"memory budget of {gib(self.budget)} is free: the rest is held by models in use ({busy}); retry "
                "when they are done, or unload one"
            )

    @property
    def generating(self) -> bool:
        return any(m.scheduler.running for m in self.loaded.values())

    def close(self) -> None:
        if self._reaper is not None:
            self._reaper.cancel()
        for loading in self.loading.values():
            loading.task.cancel()  # its thread finishes the load; nothing keeps the result
        for loaded in self.loaded.values():
            loaded.backend.close()
        self.loaded.clear()


def _retrieved(task: asyncio.Task) -> None:
    if not task.cancelled():
        task.exception()

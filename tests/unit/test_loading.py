"""Loads run in the background: requests for a loading model wait on the one load and say so, /health lists
it, its memory is reserved, and a failed load reaches every waiter (real daemons: test_lifecycle_real.py)."""

from __future__ import annotations

import asyncio
import threading

import pytest

from qwend.chat.service import chat
from qwend.engine import manager
from qwend.engine.manager import LoadingModel
from qwend.errors import BackendError
from qwend.types import ChatRequest, Message, Queued, Started
from tests.conftest import client_for, fake_runtime
from tests.fakes import FakeBackend


class SlowLoader:
    """A loader that holds every load until released (or fails it), counting the loads it was asked for."""

    def __init__(self, error: str | None = None) -> None:
        self.release = threading.Event()
        self.error = error
        self.calls = 0

    def __call__(self, model, settings):
        self.calls += 1
        self.release.wait(10)
        if self.error:
            raise BackendError(self.error)
        return FakeBackend("loaded reply")


@pytest.fixture
def runtime(tmp_path, monkeypatch):
    runtime = fake_runtime(tmp_path, FakeBackend())
    (runtime.settings.models_dir / "other.gguf").write_bytes(b"GGUF" + bytes(1000))
    return runtime


def use_loader(monkeypatch, loader: SlowLoader) -> None:
    monkeypatch.setattr(manager, "backend_loader", lambda name: loader)


async def test_requests_for_a_loading_model_wait_on_one_load_and_say_so(runtime, monkeypatch):
    loader = SlowLoader()
    use_loader(monkeypatch, loader)
    request = ChatRequest(messages=(Message("user", "hi"),), model="other.gguf")
    first, second = chat(runtime, request), chat(runtime, request)
    assert await anext(first) == Queued(0, loading="other.gguf")
    assert await anext(second) == Queued(0, loading="other.gguf")
    loading = runtime.models.loading["other.gguf"]
    assert isinstance(loading, LoadingModel)
    assert runtime.models.memory_used >= 1004  # reserved before the load finishes

    async with client_for(runtime) as client:
        health = (await client.get("/health")).json()
    assert [(m["model"], m["memory_bytes"] >= 1004) for m in health["loading"]] == [("other.gguf", True)]

    loader.release.set()
    assert isinstance(await anext(first), Started)
    assert await anext(second) == Queued(1)  # now behind the first on the loaded model
    assert loader.calls == 1
    assert "other.gguf" in runtime.models.loaded and not runtime.models.loading
    await first.aclose()
    assert isinstance(await anext(second), Started)
    await second.aclose()


async def test_a_waiter_that_leaves_does_not_stop_the_load(runtime, monkeypatch):
    loader = SlowLoader()
    use_loader(monkeypatch, loader)
    events = chat(runtime, ChatRequest(messages=(Message("user", "hi"),), model="other.gguf"))
    assert (await anext(events)).loading == "other.gguf"
    waiting = asyncio.ensure_future(anext(events))
    await asyncio.sleep(0.05)
    waiting.cancel()
    loader.release.set()
    loaded = await runtime.models.get("other.gguf")
    assert loaded.backend.reply == "loaded reply" and loader.calls == 1


async def test_a_failed_load_reaches_every_waiter_and_leaves_nothing(runtime, monkeypatch):
    loader = SlowLoader(error="the file is damaged")
    use_loader(monkeypatch, loader)
    found = await runtime.models.request("other.gguf")
    waiters = [asyncio.ensure_future(runtime.models.get("other.gguf")) for _ in range(2)]
    loader.release.set()
    for waiter in waiters:
        with pytest.raises(BackendError, match="the file is damaged"):
            await waiter
    with pytest.raises(BackendError):
        await found.ready()
    assert not runtime.models.loading and "other.gguf" not in runtime.models.loaded
    assert runtime.models.memory_used == 0  # the default fake model has no estimate; nothing stays reserved


async def test_unloading_a_loading_model_waits_for_the_load_then_frees_it(runtime, monkeypatch):
    loader = SlowLoader()
    use_loader(monkeypatch, loader)
    await runtime.models.request("other.gguf")
    unloading = asyncio.ensure_future(runtime.models.unload("other.gguf"))
    await asyncio.sleep(0.05)
    assert not unloading.done()
    loader.release.set()
    assert await unloading is True
    assert "other.gguf" not in runtime.models.loaded

"""Model lifecycle without real models: Ollama's keep_alive durations, keep-alive expiry, and the memory
budget's eviction order and refusals (real daemons: tests/real/test_lifecycle_real.py)."""

from __future__ import annotations

import pytest

from qwend.api.wire.ollama import keep_alive_seconds
from qwend.engine.manager import LoadedModel
from qwend.engine.scheduler import Scheduler
from qwend.errors import InsufficientMemory, InvalidRequest
from qwend.models.memory import MemoryEstimate
from qwend.models.store import LocalModel
from tests.conftest import fake_runtime
from tests.fakes import FakeBackend

MiB = 1 << 20


@pytest.mark.parametrize("value, seconds", [
    (None, None), (0, 0), (-1, -1), (300, 300), ("300", 300), ("5m", 300), ("1h30m", 5400), ("1.5s", 1.5),
    ("-1m", -60), ("250ms", 0.25),
])
def test_keep_alive_durations(value, seconds):
    assert keep_alive_seconds(value) == seconds


def test_a_bad_keep_alive_is_refused():
    with pytest.raises(InvalidRequest, match="not a duration"):
        keep_alive_seconds("5 minutes")


def resident(runtime, name: str, size_mib: int, last_active: float, keep_alive: float | None = None) -> LoadedModel:
    backend = FakeBackend()
    loaded = LoadedModel(LocalModel(name, None), backend, Scheduler(backend, queue_size=1),
                         memory=MemoryEstimate(size_mib * MiB, 0, 0), keep_alive=keep_alive)
    loaded.scheduler.last_active = last_active
    runtime.models.loaded[name] = loaded
    return loaded


def test_keep_alive_sets_when_a_model_expires(tmp_path):
    runtime = fake_runtime(tmp_path, FakeBackend())
    assert resident(runtime, "a", 1, last_active=100.0, keep_alive=30).expires_at == 130.0
    assert resident(runtime, "b", 1, last_active=100.0, keep_alive=-1).expires_at is None
    assert resident(runtime, "c", 1, last_active=100.0).expires_at is None


async def test_idle_models_are_evicted_least_recently_used_first(tmp_path):
    runtime = fake_runtime(tmp_path, FakeBackend(), memory_budget_mb=100)
    runtime.models.loaded.clear()
    resident(runtime, "old", 40, last_active=1.0)
    resident(runtime, "recent", 40, last_active=2.0)
    await runtime.models._make_room("new", MemoryEstimate(50 * MiB, 0, 0))
    assert list(runtime.models.loaded) == ["recent"]  # 40 + 50 fits once "old" is gone


async def test_models_in_use_are_never_evicted(tmp_path):
    runtime = fake_runtime(tmp_path, FakeBackend(), memory_budget_mb=100)
    runtime.models.loaded.clear()
    busy = resident(runtime, "busy", 80, last_active=1.0)
    busy.scheduler._running_by_client["a client"] = 1  # as if a job were running
    with pytest.raises(InsufficientMemory, match=r"only 0.02 GiB of the memory budget of 0.10 GiB is free: the rest "
                                                 r"is held by models in use \(busy 0.08 GiB\)"):
        await runtime.models._make_room("new", MemoryEstimate(50 * MiB, 0, 0))
    assert list(runtime.models.loaded) == ["busy"]


async def test_a_model_bigger_than_the_budget_is_refused_with_its_numbers(tmp_path):
    runtime = fake_runtime(tmp_path, FakeBackend(), memory_budget_mb=100)
    with pytest.raises(InsufficientMemory, match=r"needs about 0.20 GiB \(weights 0.10 GiB \+ KV cache 0.10 GiB for "
                                                 r"4096 tokens\), more than the whole memory budget of 0.10 GiB"):
        await runtime.models._make_room("big", MemoryEstimate(100 * MiB, 100 * MiB, 4096))


@pytest.mark.parametrize("setting, drafted_by", [
    (None, None),  # off by default
    ("none", None),
    ("small.gguf", "small.gguf"),
    ("fake.gguf", None),  # a model never drafts for itself
    ("missing.gguf", None),  # not on disk: loaded without one (a warning says why)
])
def test_the_draft_model_comes_from_the_setting(tmp_path, caplog, setting, drafted_by):
    runtime = fake_runtime(tmp_path, FakeBackend(), draft_model=setting)
    (runtime.settings.models_dir / "small.gguf").write_bytes(b"GGUF")
    model = runtime.models._with_draft(runtime.models.store.find("fake.gguf"))
    assert (model.draft.name if model.draft else None) == drafted_by
    assert ("loads without a draft model" in caplog.text) == (setting == "missing.gguf")


def test_auto_takes_the_catalogs_pairing(tmp_path):
    runtime = fake_runtime(tmp_path, FakeBackend(), draft_model="auto")
    store = runtime.models.store
    for name in ("qwen2.5-coder:0.5b", "qwen2.5-coder:1.5b"):  # four bytes each: what is on disk is enough here
        store.resolve(name).path.parent.mkdir(parents=True, exist_ok=True)
        store.resolve(name).path.write_bytes(b"GGUF")
    paired = runtime.models._with_draft(store.find("qwen2.5-coder:1.5b"))
    assert paired.draft.name == "qwen2.5-coder:0.5b"
    assert runtime.models._with_draft(store.find("qwen2.5-coder:0.5b")).draft is None  # nothing drafts for it

"""Seed 004's routes on a scripted backend: the GGUF list, /setModel, /chat/completions and /restore_cache."""

import pytest

from tests.conftest import client_for, fake_runtime
from tests.fakes import FakeBackend

HELLO = {"messages": [{"role": "user", "content": "hi"}]}


@pytest.fixture
def runtime(tmp_path):
    return fake_runtime(tmp_path, FakeBackend("Hello there."))


@pytest.fixture
async def client(runtime):
    async with client_for(runtime) as c:
        yield c


async def test_models_lists_loaded_models_and_gguf_files(client):
    body = (await client.get("/models")).json()
    assert body["models"] == ["fake.gguf"] and body["files"] == ["fake.gguf"]
    assert [m["model_key"] for m in body["loaded_models"]] == ["fake.gguf"]
    assert body["current_model"] == "fake.gguf"
    await client.post("/models/unload", json={"unload_all": True})  # seed 002: gone from `models`, still on disk
    body = (await client.get("/models")).json()
    assert body["models"] == [] and body["loaded_models"] == [] and body["files"] == ["fake.gguf"]


async def test_set_model_unknown_is_404_and_known_becomes_default(client, runtime):
    reply = await client.post("/setModel", json={"modelName": "missing.gguf"})
    assert reply.status_code == 404 and "missing.gguf" in reply.json()["detail"]
    assert (await client.post("/setModel", json={})).status_code == 400
    reply = await client.post("/setModel", json={"modelName": "fake.gguf"})
    assert reply.json()["model"] == "fake.gguf" and runtime.models.default == "fake.gguf"


async def test_chat_completions_without_v1_is_openai(client):
    body = (await client.post("/chat/completions", json=HELLO)).json()
    assert body["object"] == "chat.completion" and body["choices"][0]["message"]["content"] == "Hello there."
    error = (await client.post("/chat/completions", json={"messages": "x"})).json()
    assert error["error"]["type"] == "invalid_request_error"  # OpenAI's error shape, as OpenAI clients expect


async def test_restore_cache_runs_the_prefix(client, runtime):
    backend = runtime.models.loaded["fake.gguf"].backend
    reply = await client.post("/restore_cache", json={"messages": [{"role": "system", "content": "Be brief."}]})
    body = reply.json()
    assert body["status"] == "ok" and body["model"] == "fake.gguf" and body["prompt_tokens"] > 0
    assert backend.prompts[-1].startswith("<system>Be brief.")

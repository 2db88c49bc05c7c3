"""Seed 004's API against a real daemon whose `models/` folder holds GGUF files, as that server's did:
model listing and switching, OpenAI-compatible chat without `/v1` (tools, streaming), and /restore_cache."""

import os
import shutil

import httpx
import openai
import pytest

from tests.conftest import Daemon

WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "Current weather for a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}}


@pytest.fixture(scope="module")
def server(model_path, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("llama-server")
    (workdir / "models").mkdir()
    # a second file: seed 004 switches between files. A link, not a symlink: a symlink out of the models folder
    # names a file outside it, which qwend refuses (docs/security.md, model names)
    try:
        os.link(model_path, workdir / "models" / "coder.gguf")
    except OSError:  # another file system
        shutil.copyfile(model_path, workdir / "models" / "coder.gguf")
    daemon = Daemon(workdir).start()
    yield daemon.url
    daemon.stop()


@pytest.fixture(scope="module")
def client(server):
    with httpx.Client(base_url=server, timeout=300) as c:
        yield c


def test_status_and_gguf_listing(client):
    assert client.get("/").json()["status"] == "running"
    models = client.get("/models").json()
    assert "coder.gguf" in models["files"] and "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf" in models["files"]
    assert models["models"] == ["qwen2.5-coder:0.5b"]  # what is loaded now
    assert [m["model_key"] for m in models["loaded_models"]] == ["qwen2.5-coder:0.5b"]


def test_switch_by_model_field_and_set_model(client):
    sdk = openai.OpenAI(base_url=str(client.base_url), api_key="unused", max_retries=0)
    ask = {"messages": [{"role": "user", "content": "Say OK."}], "max_tokens": 5, "temperature": 0}
    assert sdk.chat.completions.create(model="coder.gguf", **ask).model == "coder.gguf"
    assert client.post("/setModel", json={"modelName": "missing.gguf"}).status_code == 404
    assert client.post("/setModel", json={"modelName": "coder.gguf"}).json()["model"] == "coder.gguf"
    assert client.post("/chat/completions", json=ask).json()["model"] == "coder.gguf"
    assert client.get("/models").json()["current_model"] == "coder.gguf"
    client.post("/setModel", json={"modelName": "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf"})


def test_tools_and_streaming_through_the_openai_sdk(client):
    sdk = openai.OpenAI(base_url=str(client.base_url), api_key="unused", max_retries=0)
    messages = [{"role": "user", "content": "What is the weather in Paris?"}]
    reply = sdk.chat.completions.create(model="qwen2.5-coder:0.5b", messages=messages, tools=[WEATHER],
                                        temperature=0)
    call = reply.choices[0].message.tool_calls[0]
    assert call.function.name == "get_weather" and "Paris" in call.function.arguments
    stream = sdk.chat.completions.create(model="qwen2.5-coder:0.5b", temperature=0, stream=True,
                                         messages=[{"role": "user", "content": "Name three colors."}])
    text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    assert len(text) > 5


def test_restore_cache_prewarms_the_prefix(client):
    system = {"role": "system", "content": "You are a weather assistant. " * 40}
    warm = client.post("/restore_cache", json={"messages": [system], "tools": [WEATHER]}).json()
    assert warm["status"] == "ok" and warm["prompt_tokens"] > 300
    reply = client.post("/chat/completions", json={
        "messages": [system, {"role": "user", "content": "Hi"}], "tools": [WEATHER], "max_tokens": 5,
    }).json()
    cached = reply["usage"]["prompt_tokens_details"]["cached_tokens"]
    assert cached >= warm["prompt_tokens"] - 5  # all but the generation prompt's last few tokens


def test_a_pinned_prefix_is_still_cached_after_a_restart(model_path, tmp_path):
    """`"pin": true` keeps the prefix's KV state for good; the daemon writes it to disk when it stops, and the
    next daemon restores it for the first request that starts the same way."""
    system = {"role": "system", "content": "You are a travel assistant. " * 40}
    daemon = Daemon(tmp_path).start()
    try:
        warm = httpx.post(f"{daemon.url}/restore_cache", json={"messages": [system], "tools": [WEATHER], "pin": True},
                          timeout=300).json()
        assert warm["pinned"] is True and warm["prompt_tokens"] > 300
    finally:
        daemon.stop()
    assert list((daemon.data_dir / "kv-cache").rglob("*.kv"))
    daemon.start()
    try:
        reply = httpx.post(f"{daemon.url}/chat/completions", timeout=300, json={
            "messages": [system, {"role": "user", "content": "Hi"}], "tools": [WEATHER], "max_tokens": 5}).json()
        assert reply["usage"]["prompt_tokens_details"]["cached_tokens"] >= warm["prompt_tokens"] - 5
    finally:
        daemon.stop()

"""Seed 001's chat (JSON, SSE, WebSocket) and model routes, and the shared `/`, `/api/health`, on a scripted
backend."""

import json

import pytest
from starlette.testclient import TestClient

from qwend.app import create_app
from tests.conftest import client_for, fake_runtime
from tests.fakes import FakeBackend
from tests.sse import named_events

HELLO = {"messages": [{"role": "user", "content": "Hello!"}], "max_tokens": 100, "temperature": 0.7}


@pytest.fixture
def runtime(tmp_path):
    return fake_runtime(tmp_path, FakeBackend("Hi there, friend."))


@pytest.fixture
async def client(runtime):
    async with client_for(runtime) as c:
        yield c


def ws_client(runtime) -> TestClient:
    app = create_app(runtime.settings, runtime)
    app.state.runtime = runtime
    return TestClient(app)


async def test_completion_carries_message_content_and_openai_choices(client):
    body = (await client.post("/api/chat/completions", json=HELLO)).json()
    assert body["message"] == {"role": "assistant", "content": "Hi there, friend."}
    assert body["finish_reason"] == "stop"
    assert body["choices"][0]["message"] == body["message"]
    assert body["usage"]["completion_tokens"] == 3


async def test_stream_frames_end_with_done(client):
    async with client.stream("POST", "/api/chat/completions/stream", json=HELLO) as reply:
        assert reply.headers["content-type"].startswith("text/event-stream")
        events = named_events([line async for line in reply.aiter_lines()])
    names = [name for name, _ in events]
    assert names[0] == "start" and names[-1] == "done"
    assert "".join(data["content"] for name, data in events if name == "token") == "Hi there, friend."
    assert events[-1][1]["usage"]["completion_tokens"] == 3
    # "stream": true on the plain route answers the same stream
    async with client.stream("POST", "/api/chat/completions", json={**HELLO, "stream": True}) as reply:
        assert [n for n, _ in named_events([line async for line in reply.aiter_lines()])] == names


async def test_errors_are_detail_bodies(client):
    reply = await client.post("/api/chat/completions", json={"messages": []})
    assert reply.status_code == 400 and "messages" in reply.json()["detail"]
    reply = await client.post("/api/chat/completions", json={**HELLO, "model": "mlx-community__Llama-3.2-3B-Instruct-4bit"})
    assert reply.status_code == 404 and "not found" in reply.json()["detail"]
    # the seed's own example names an MLX repository: the answer says what is here and how to fetch it
    reply = await client.post("/api/chat/completions", json={**HELLO, "model": "mlx-community/Llama-3.1-8B-Instruct-4bit"})
    detail = reply.json()["detail"]
    assert reply.status_code == 404 and "On disk: fake.gguf" in detail
    assert "qwend pull hf:mlx-community/Llama-3.1-8B-Instruct-4bit" in detail


async def test_the_seeds_env_generation_defaults_fill_what_a_request_leaves_unset(tmp_path, monkeypatch):
    """seed 001's .env: DEFAULT_MAX_TOKENS, DEFAULT_TEMPERATURE, DEFAULT_TOP_P (read under the seed's names)."""
    for name, value in (("DEFAULT_MAX_TOKENS", "2"), ("DEFAULT_TEMPERATURE", "0.3"), ("DEFAULT_TOP_P", "0.5")):
        monkeypatch.setenv(name, value)
    backend = FakeBackend("Hi there, friend.")
    async with client_for(fake_runtime(tmp_path, backend)) as client:
        short = (await client.post("/api/chat/completions", json={"messages": HELLO["messages"]})).json()
        assert short["message"]["content"] == "Hi there, " and short["finish_reason"] == "length"
        assert (backend.sampled[-1].temperature, backend.sampled[-1].top_p) == (0.3, 0.5)
        asked = (await client.post("/api/chat/completions", json={**HELLO, "top_p": 0.9})).json()
        assert asked["message"]["content"] == "Hi there, friend."  # what the request sets wins
        assert (backend.sampled[-1].temperature, backend.sampled[-1].top_p) == (0.7, 0.9)
        await client.post("/v1/chat/completions", json={"messages": HELLO["messages"]})
        assert backend.sampled[-1].temperature == 0.8  # the seed's defaults are for its own routes


async def test_models_list_load_and_unload(client, runtime):
    body = (await client.get("/api/models")).json()
    assert body["default_model"] == "fake.gguf"
    assert [(m["id"], m["loaded"]) for m in body["models"]] == [("fake.gguf", True)]
    reply = await client.post("/api/models/mlx-community__Llama-3.2-3B-Instruct-4bit/load")
    assert reply.status_code == 404 and "mlx-community__Llama-3.2-3B-Instruct-4bit" in reply.json()["detail"]
    reply = await client.post("/api/models/fake.gguf/unload")
    assert reply.json() == {"success": True, "model_id": "fake.gguf", "name": "fake.gguf",
                            "message": "Model fake.gguf unloaded"}
    assert runtime.models.loaded == {}
    again = (await client.post("/api/models/fake.gguf/unload")).json()
    assert again["success"] is False and "was not loaded" in again["message"]


async def test_root_and_both_health_paths_share_bodies(client):
    root = (await client.get("/")).json()
    assert root["status"] == "running" and root["docs"] == "/docs" and root["default_model"] == "fake.gguf"
    health, api_health = (await client.get("/health")).json(), (await client.get("/api/health")).json()
    assert health == api_health and health["model_loaded"] is True


def test_websocket_chat_ping_errors_and_done(runtime):
    with ws_client(runtime).websocket_connect("/api/chat/ws") as ws:
        ws.send_text("not json")
        assert ws.receive_json()["type"] == "error"
        ws.send_json({"type": "ping"})
        assert ws.receive_json() == {"type": "pong"}
        ws.send_json({"type": "chat", "messages": []})
        assert "messages" in ws.receive_json()["error"]
        ws.send_json({"type": "chat", "messages": [{"role": "user", "content": "Hello!"}], "temperature": 0.7})
        frames = []
        while (frame := ws.receive_json())["type"] != "done":
            frames.append(frame)
        assert frames[0]["type"] == "start"
        assert "".join(f["content"] for f in frames if f["type"] == "token") == "Hi there, friend."
        assert frame["finish_reason"] == "stop"
        ws.send_json({"type": "chat", "messages": [{"role": "user", "content": "x"}], "model": "nope"})
        assert "not found" in ws.receive_json()["error"]
        assert ws.receive_json() == {"type": "done", "finish_reason": "error"}


def test_websocket_cancel_stops_generation(tmp_path):
    backend = FakeBackend(" ".join(["word"] * 200), delay=0.02)
    runtime = fake_runtime(tmp_path, backend)
    with ws_client(runtime).websocket_connect("/api/chat/ws") as ws:
        ws.send_json({"type": "chat", "messages": [{"role": "user", "content": "go"}]})
        while ws.receive_json()["type"] != "token":
            pass
        ws.send_json({"type": "cancel"})
        while (frame := ws.receive_json())["type"] != "done":
            assert frame["type"] == "token"
        assert frame["finish_reason"] == "cancelled"
        ws.send_json({"type": "ping"})
        assert ws.receive_json() == {"type": "pong"}
    assert backend.stopped_early == 1


def test_sse_frames_are_json(runtime):
    # each SSE data line is one JSON frame a plain `iter_lines` reader can print and parse
    with ws_client(runtime) as http:
        lines = http.post("/api/chat/completions/stream", json=HELLO).text.splitlines()
    frames = [json.loads(line[5:]) for line in lines if line.startswith("data:")]
    assert frames[-1]["type"] == "done"

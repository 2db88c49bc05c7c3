"""Who a request is from and how urgent it is reach the scheduler from every protocol (X-Qwend-Client,
X-Qwend-Priority, the API key, OpenAI's service_tier, the session), and a full queue is 429 in each protocol's
error shape, on a scripted backend."""

import asyncio
import hashlib

import pytest
from starlette.testclient import TestClient

from qwend.app import create_app
from tests.conftest import client_for, fake_runtime
from tests.fakes import FakeBackend

OPENAI = {"messages": [{"role": "user", "content": "hi"}]}


def scheduler_of(runtime):
    return runtime.models.loaded["fake.gguf"].scheduler


def record_jobs(runtime) -> list[tuple[str | None, str]]:
    """(client, priority) of every job the model's scheduler is given from now on."""
    scheduler, seen = scheduler_of(runtime), []
    run_work = scheduler.run_work  # every job goes through it (chat jobs: chat/decide.py's generations)

    def spy(*args, client=None, priority="interactive"):
        seen.append((client, priority))
        return run_work(*args, client=client, priority=priority)

    scheduler.run_work = spy
    return seen


@pytest.fixture
def runtime(tmp_path):
    return fake_runtime(tmp_path, FakeBackend("Hello there.", context_length=8192))


@pytest.fixture
async def client(runtime):
    async with client_for(runtime) as c:
        yield c


def key_client(key: str) -> str:
    return "key " + hashlib.sha256(key.encode()).hexdigest()[:16]


@pytest.mark.parametrize(("headers", "extra", "expected"), [
    ({}, {}, ("127.0.0.1", "interactive")),  # the remote address
    ({"X-Qwend-Priority": "batch"}, {}, ("127.0.0.1", "batch")),
    ({}, {"service_tier": "flex"}, ("127.0.0.1", "batch")),
    ({}, {"service_tier": "default"}, ("127.0.0.1", "interactive")),
    ({"X-Qwend-Priority": "Interactive"}, {"service_tier": "flex"}, ("127.0.0.1", "interactive")),  # header wins
    ({"Authorization": "Bearer sk-one"}, {}, (key_client("sk-one"), "interactive")),
    ({"X-Qwend-Client": "alice", "Authorization": "Bearer sk-one"}, {}, ("alice", "interactive")),
])
async def test_openai_requests_carry_client_and_priority(runtime, client, headers, extra, expected):
    jobs = record_jobs(runtime)
    reply = await client.post("/v1/chat/completions", json={**OPENAI, **extra}, headers=headers)
    assert reply.status_code == 200, reply.text
    assert jobs == [expected]


async def test_an_unknown_priority_is_400_naming_the_header(client):
    reply = await client.post("/v1/chat/completions", json=OPENAI, headers={"X-Qwend-Priority": "urgent"})
    assert reply.status_code == 400
    assert reply.json()["error"]["param"] == "X-Qwend-Priority" and "urgent" in reply.json()["error"]["message"]


@pytest.mark.parametrize(("path", "body"), [
    ("/chat/completions", OPENAI),  # seed 004
    ("/v1/messages", {"model": "fake.gguf", "max_tokens": 16, "messages": [{"role": "user", "content": "hi"}]}),
    ("/api/chat", {"model": "fake.gguf", "messages": [{"role": "user", "content": "hi"}], "stream": False}),
    ("/api/generate", {"model": "fake.gguf", "prompt": "hi", "stream": False}),
    ("/api/chat/completions", OPENAI),  # seed 001
    ("/api/chat/completions/stream", OPENAI),
    ("/chat", {"messages": [{"role": "user", "content": "hi"}]}),  # seed 002
    ("/v1/chat", {"message": "hi"}),  # seed 000
])
async def test_every_protocol_carries_the_headers(runtime, client, path, body):
    jobs = record_jobs(runtime)
    headers = {"X-Qwend-Client": "bob", "X-Qwend-Priority": "batch"}
    reply = await client.post(path, json=body, headers=headers)
    assert reply.status_code == 200, reply.text
    assert jobs and set(jobs) == {("bob", "batch")}


async def test_anthropic_api_key_names_the_client(runtime, client):
    jobs = record_jobs(runtime)
    body = {"model": "fake.gguf", "max_tokens": 16, "messages": [{"role": "user", "content": "hi"}]}
    assert (await client.post("/v1/messages", json=body, headers={"x-api-key": "sk-ant"})).status_code == 200
    assert jobs == [(key_client("sk-ant"), "interactive")]


async def test_a_session_chat_is_queued_as_its_session(runtime, client):
    jobs = record_jobs(runtime)
    sid = (await client.post("/v1/sessions", json={"profile_name": "general"})).json()["session_id"]
    reply = await client.post(f"/v1/sessions/{sid}/chat", json={"message": "hi"},
                              headers={"X-Qwend-Client": "bob", "X-Qwend-Priority": "batch"})
    assert reply.status_code == 200, reply.text
    assert set(jobs) == {(sid, "batch")}


def test_websocket_chats_carry_the_headers(runtime):
    jobs = record_jobs(runtime)
    with TestClient(create_app(runtime.settings, runtime)) as http:
        with http.websocket_connect("/api/chat/ws", headers={"X-Qwend-Priority": "batch"}) as ws:
            ws.send_json({"type": "chat", **OPENAI})
            while ws.receive_json()["type"] != "done":
                pass
        sid = http.post("/create_session").json()["session_id"]
        with http.websocket_connect(f"/ws/{sid}") as ws:  # seed 003: the session is the client
            ws.send_json({"jsonrpc": "2.0", "method": "generate", "params": {"message": "hi"}, "id": 1})
            while ws.receive_json().get("method") != "end":
                pass
    assert jobs == [("testclient", "batch"), (sid, "interactive")]


@pytest.mark.parametrize(("path", "body", "shape"), [
    ("/v1/messages", {"model": "fake.gguf", "max_tokens": 16, "messages": [{"role": "user", "content": "hi"}]},
     lambda b: b["error"]["type"] == "rate_limit_error"),
    ("/api/chat", {"model": "fake.gguf", "messages": [{"role": "user", "content": "hi"}]},
     lambda b: "busy" in b["error"]),
    ("/chat", {"messages": [{"role": "user", "content": "hi"}]}, lambda b: "busy" in b["detail"]),
    ("/v1/chat", {"message": "hi"}, lambda b: "busy" in b["detail"]),
])
async def test_a_full_queue_is_429_with_retry_after_in_each_shape(tmp_path, path, body, shape):
    runtime = fake_runtime(tmp_path, FakeBackend("w " * 20, delay=0.02, context_length=8192),
                           queue_size=0)
    async with client_for(runtime) as client:
        running = asyncio.create_task(client.post("/v1/chat/completions", json=OPENAI))
        while not scheduler_of(runtime).running:
            await asyncio.sleep(0.01)
        refused = await client.post(path, json=body)
        assert refused.status_code == 429, refused.text
        assert int(refused.headers["retry-after"]) >= 1 and shape(refused.json())
        assert (await running).status_code == 200

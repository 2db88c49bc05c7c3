"""KV affinity (qwend/api/affinity.py): every answer names its daemon, a request's affinity key comes from its
header or its session path (never its body), and the key reaches the engine, an upstream server included."""

from __future__ import annotations

import httpx
import pytest

from qwend.engine import upstream as upstream_module
from qwend.engine.base import Prompt
from qwend.engine.upstream import UpstreamBackend
from qwend.models.upstream import UpstreamModels
from qwend.settings import Settings
from qwend.types import Message, SamplingParams
from tests.conftest import client_for, fake_runtime
from tests.fakes import FakeBackend

CHAT = {"messages": [{"role": "user", "content": "hi"}]}


@pytest.fixture
def backend():
    return FakeBackend("Hello.", context_length=8192)


@pytest.fixture
async def client(tmp_path, backend):
    async with client_for(fake_runtime(tmp_path, backend, instance="qwend-a")) as client:
        yield client


async def test_every_answer_names_its_daemon_and_echoes_the_key(client, backend):
    plain = await client.post("/v1/chat/completions", json=CHAT)
    assert plain.headers["x-qwend-instance"] == "qwend-a" and "x-qwend-affinity" not in plain.headers
    assert backend.generated[-1].affinity is None

    keyed = await client.post("/v1/chat/completions", json=CHAT, headers={"X-Qwend-Affinity": "conv-7"})
    assert (keyed.status_code, keyed.headers["x-qwend-affinity"]) == (200, "conv-7")
    assert backend.generated[-1].affinity == "conv-7"

    odd = await client.post("/v1/chat/completions", json=CHAT, headers={"X-Qwend-Affinity": "a b\\c"})
    assert "x-qwend-affinity" not in odd.headers and backend.generated[-1].affinity is None

    refused = await client.get("/no/such/route")
    assert (refused.status_code, refused.headers["x-qwend-instance"]) == (404, "qwend-a")


async def test_a_session_is_its_own_key(client, backend):
    sid = (await client.post("/v1/sessions", json={"profile_name": "general"})).json()["session_id"]
    turn = await client.post(f"/v1/sessions/{sid}/chat", json={"message": "hi"})
    assert (turn.status_code, turn.headers["x-qwend-affinity"]) == (200, sid)
    assert backend.generated[-1].affinity == sid
    assert (await client.get(f"/v1/sessions/{sid}")).headers["x-qwend-affinity"] == sid

    # a header wins over the path: a client may group several sessions on one daemon
    grouped = await client.post(f"/v1/sessions/{sid}/chat", json={"message": "again"},
                                headers={"X-Qwend-Affinity": "team-1"})
    assert grouped.headers["x-qwend-affinity"] == "team-1" and backend.generated[-1].affinity == "team-1"


async def test_an_upstream_server_is_told_the_key(monkeypatch):
    seen: list[httpx.Request] = []

    def server(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        chunk = '{"choices": [{"index": 0, "delta": {"content": "Hi."}, "finish_reason": "stop"}]}'
        return httpx.Response(200, text=f"data: {chunk}\n\ndata: [DONE]\n\n",
                              headers={"content-type": "text/event-stream"})

    real_client = httpx.AsyncClient
    monkeypatch.setattr(upstream_module.httpx, "AsyncClient",
                        lambda **kwargs: real_client(transport=httpx.MockTransport(server), **kwargs))
    settings = Settings(_env_file=None, backend="upstream", upstream_url="http://upstream.test/v1")
    backend = UpstreamBackend("m", UpstreamModels(settings), settings, 4096)
    for affinity in ("sess-1", None):
        prompt = Prompt(messages=(Message("user", "hi"),), affinity=affinity)
        [item async for item in backend.generate(prompt, SamplingParams())]
    assert seen[0].headers["x-qwend-affinity"] == "sess-1" and "x-qwend-affinity" not in seen[1].headers

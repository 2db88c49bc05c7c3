"""The OpenAI adapter's wire format and error shapes, on a scripted backend."""

import asyncio
import json

import pytest

from tests.conftest import client_for, fake_runtime
from tests.fakes import FakeBackend
from tests.sse import data_lines

URL = "/v1/chat/completions"
HELLO = {"messages": [{"role": "user", "content": "hi"}]}


@pytest.fixture
def backend():
    return FakeBackend("Hello there, friend.")


@pytest.fixture
async def client(tmp_path, backend):
    async with client_for(fake_runtime(tmp_path, backend)) as c:
        yield c


async def test_non_streaming_body(client):
    reply = await client.post(URL, json=HELLO)
    assert reply.status_code == 200
    body = reply.json()
    assert body["object"] == "chat.completion" and body["id"].startswith("chatcmpl-")
    assert body["model"] == "fake.gguf"
    assert body["choices"] == [
        {"index": 0, "message": {"role": "assistant", "content": "Hello there, friend."}, "logprobs": None,
         "finish_reason": "stop"}
    ]
    assert body["usage"]["completion_tokens"] == 3
    assert body["usage"]["total_tokens"] == body["usage"]["prompt_tokens"] + 3


async def test_streaming_chunks_and_usage(client):
    reply = await client.post(URL, json={**HELLO, "stream": True, "stream_options": {"include_usage": True}})
    assert reply.headers["content-type"].startswith("text/event-stream")
    lines = [l for l in reply.text.splitlines() if l.startswith("data: ")]
    assert lines[-1] == "data: [DONE]"
    chunks = [json.loads(l[6:]) for l in lines[:-1]]
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    assert len({c["id"] for c in chunks}) == 1
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"])
    assert text == "Hello there, friend."
    assert chunks[-2]["choices"][0]["finish_reason"] == "stop" and chunks[-2]["usage"] is None
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] == 3


async def test_streaming_without_usage_has_no_usage_field(client):
    reply = await client.post(URL, json={**HELLO, "stream": True})
    chunks = [json.loads(l[6:]) for l in reply.text.splitlines() if l.startswith("data: {")]
    assert all("usage" not in c for c in chunks)


async def test_max_tokens_gives_length(client):
    body = (await client.post(URL, json={**HELLO, "max_tokens": 1})).json()
    assert body["choices"][0]["finish_reason"] == "length"
    assert body["choices"][0]["message"]["content"] == "Hello "


async def test_stop_string_cuts_the_answer(client):
    body = (await client.post(URL, json={**HELLO, "stop": ["there"]})).json()
    assert body["choices"][0]["message"]["content"] == "Hello "
    assert body["choices"][0]["finish_reason"] == "stop"


def assert_openai_error(reply, status, param=None, code=None):
    assert reply.status_code == status, reply.text
    error = reply.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["message"]
    if param is not None:
        assert error["param"] == param
    if code is not None:
        assert error["code"] == code
    return error


@pytest.mark.parametrize(
    "body, param",
    [
        ({}, "messages"),
        ({"messages": []}, "messages"),
        ({"messages": [{"role": "wizard", "content": "x"}]}, "messages.0.role"),
        ({**HELLO, "temperature": 5}, "temperature"),
        ({**HELLO, "max_tokens": 0}, "max_tokens"),
        ({**HELLO, "n": 9}, "n"),
        ({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]},
         "messages[0].content"),
    ],
)
async def test_invalid_bodies_are_400_in_openai_shape(client, body, param):
    assert_openai_error(await client.post(URL, json=body), 400, param=param)


async def test_malformed_json_is_400(client):
    reply = await client.post(URL, content=b'{"messages": [', headers={"content-type": "application/json"})
    assert "not valid JSON" in assert_openai_error(reply, 400)["message"]


async def test_unknown_model_is_404(client):
    error = assert_openai_error(await client.post(URL, json={**HELLO, "model": "gpt-4o"}), 404, code="model_not_found")
    assert "gpt-4o" in error["message"]


async def test_unknown_model_is_404_when_streaming_too(client):
    assert_openai_error(await client.post(URL, json={**HELLO, "model": "nope", "stream": True}), 404)


async def test_context_overflow_is_400_with_both_lengths(client):
    error = assert_openai_error(
        await client.post(URL, json={"messages": [{"role": "user", "content": "x" * 600}]}), 400,
        code="context_length_exceeded",
    )
    assert "512" in error["message"] and "tokens" in error["message"]
    error = assert_openai_error(await client.post(URL, json={**HELLO, "max_tokens": 500}), 400, param="max_tokens")


async def test_queue_full_is_429_with_retry_after(tmp_path):
    runtime = fake_runtime(tmp_path, FakeBackend("w " * 50, delay=0.02), queue_size=1)
    async with client_for(runtime) as client:
        scheduler = next(iter(runtime.models.loaded.values())).scheduler
        first = asyncio.create_task(client.post(URL, json=HELLO))
        while not scheduler.running:
            await asyncio.sleep(0.01)
        second = asyncio.create_task(client.post(URL, json=HELLO))
        while not scheduler.waiting:
            await asyncio.sleep(0.01)
        reply = await client.post(URL, json=HELLO)
        error = assert_openai_error(reply, 429, code="busy")
        assert int(reply.headers["retry-after"]) >= 1
        assert "busy" in error["message"]
        assert (await first).status_code == 200 and (await second).status_code == 200


async def test_models_health_and_root(client):
    models = (await client.get("/v1/models")).json()
    assert models["object"] == "list"
    assert [(m["id"], m["loaded"]) for m in models["data"]] == [("fake.gguf", True)]
    health = (await client.get("/health")).json()
    assert health["status"] == "healthy" and health["model_loaded"] is True
    assert health["generation_in_progress"] is False
    for field in ("model_size", "available_profiles", "available_tools"):
        assert field in health
    root = (await client.get("/")).json()
    assert root["name"] == "qwend" and root["status"] == "running"
    assert (await client.get("/openapi.json")).json()["paths"][URL]
    assert (await client.get("/docs")).status_code == 200
    assert (await client.get("/redoc")).status_code == 200


async def test_unknown_route_on_openai_prefix_uses_openai_shape(client):
    assert_openai_error(await client.get("/v1/nothing-here"), 404)


async def test_n_choices_in_one_answer_and_one_stream(tmp_path):
    backend = FakeBackend("Hello there.", context_length=4096)
    async with client_for(fake_runtime(tmp_path, backend, max_choices=3)) as client:
        body = {**HELLO, "n": 3, "seed": 5}
        reply = (await client.post("/v1/chat/completions", json=body)).json()
        assert [(c["index"], c["message"]["content"], c["finish_reason"]) for c in reply["choices"]] == [
            (i, "Hello there.", "stop") for i in range(3)]
        assert reply["usage"]["completion_tokens"] == 6 and reply["usage"]["prompt_tokens"] == len(backend.generated[-1].tokens)
        async with client.stream("POST", "/v1/chat/completions",
                                 json={**body, "stream": True, "stream_options": {"include_usage": True}}) as stream:
            lines = data_lines([line async for line in stream.aiter_lines()])
    chunks = [json.loads(line) for line in lines[:-1]]
    for index in range(3):
        mine = [c["choices"][0] for c in chunks if c["choices"] and c["choices"][0]["index"] == index]
        assert "".join(c["delta"].get("content") or "" for c in mine) == "Hello there."
        assert mine[-1]["finish_reason"] == "stop"
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] == 6


async def test_logprobs_with_their_alternatives(tmp_path):
    async with client_for(fake_runtime(tmp_path, FakeBackend("Hello there.", logprobs=True))) as client:
        body = {**HELLO, "logprobs": True, "top_logprobs": 2}
        choice = (await client.post("/v1/chat/completions", json=body)).json()["choices"][0]
        first = choice["logprobs"]["content"][0]
        assert [t["token"] for t in choice["logprobs"]["content"]] == ["Hello ", "there."]
        assert (first["logprob"], first["bytes"]) == (-0.5, list(b"Hello "))
        assert [(t["token"], t["logprob"]) for t in first["top_logprobs"]] == [("Hello ", -0.5), ("x", -2.0)]
        async with client.stream("POST", "/v1/chat/completions", json={**body, "stream": True}) as stream:
            lines = data_lines([line async for line in stream.aiter_lines()])
        streamed = [c["choices"][0]["logprobs"] for c in map(json.loads, lines[:-1]) if c["choices"]]
        assert [entry["token"] for part in streamed if part for entry in part["content"]] == ["Hello ", "there."]
        plain = (await client.post("/v1/chat/completions", json=HELLO)).json()["choices"][0]
        assert plain["logprobs"] is None
        refused = await client.post("/v1/chat/completions", json={**HELLO, "top_logprobs": 2})
        assert refused.status_code == 400 and refused.json()["error"]["param"] == "top_logprobs"


async def test_an_engine_without_logprobs_says_so(tmp_path):
    async with client_for(fake_runtime(tmp_path, FakeBackend("Hello."))) as client:
        reply = await client.post("/v1/chat/completions", json={**HELLO, "logprobs": True})
    assert reply.status_code == 400 and "cannot report log probabilities" in reply.json()["error"]["message"]

"""/v1/completions over a scripted backend: prompts as they are (no chat template), lists of prompts and n
choices in OpenAI's order, echo, stop, suffix (fill-in-the-middle markers), streaming with usage, and every
refusal. The real model: tests/real/test_completions_real.py."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from tests.conftest import client_for, fake_runtime
from tests.fakes import FakeBackend
from tests.sse import data_lines


@pytest.fixture
def backend():
    return FakeBackend("one two three four", context_length=4096)


@pytest.fixture
async def client(tmp_path, backend):
    async with client_for(fake_runtime(tmp_path, backend, max_choices=6)) as client:
        yield client


async def test_a_prompt_is_read_as_it_is(client, backend):
    reply = await client.post("/v1/completions", json={"prompt": "def add(a, b):", "max_tokens": 50})
    body = reply.json()
    assert reply.status_code == 200 and body["object"] == "text_completion" and body["id"].startswith("cmpl-")
    assert body["choices"] == [{"text": "one two three four", "index": 0, "logprobs": None, "finish_reason": "stop"}]
    assert backend.generated[-1].tokens == tuple(ord(c) for c in "def add(a, b):")  # no chat template
    assert body["usage"] == {"prompt_tokens": 14, "completion_tokens": 4, "total_tokens": 18}


async def test_prompts_times_n_in_order_with_echo_stop_and_the_default_length(client, backend):
    reply = (await client.post("/v1/completions", json={"prompt": ["A:", "B:"], "n": 2, "echo": True,
                                                          "stop": [" three"], "max_tokens": 50})).json()
    assert [(c["index"], c["text"], c["finish_reason"]) for c in reply["choices"]] == [
        (0, "A:one two", "stop"), (1, "A:one two", "stop"), (2, "B:one two", "stop"), (3, "B:one two", "stop")]
    assert reply["usage"]["prompt_tokens"] == 4  # each prompt once, not once per choice
    short = (await client.post("/v1/completions", json={"prompt": "x", "max_tokens": 2})).json()["choices"][0]
    assert (short["text"], short["finish_reason"]) == ("one two ", "length")


async def test_suffix_needs_fill_in_the_middle_markers(tmp_path):
    backend = FakeBackend("return a + b", context_length=4096)
    backend.info = replace(backend.info, fill_in_middle=("<PRE>", "<SUF>", "<MID>"))
    async with client_for(fake_runtime(tmp_path, backend)) as client:
        reply = await client.post("/v1/completions", json={"prompt": "def add(a, b):\n    ", "suffix": "\n\nprint(add(1, 2))"})
    assert reply.json()["choices"][0]["text"] == "return a + b"
    assert backend.generated[-1].tokens == tuple(ord(c) % 256 for c in
                                                 "<PRE>def add(a, b):\n    <SUF>\n\nprint(add(1, 2))<MID>")


async def test_streamed_choices_and_usage(client):
    async with client.stream("POST", "/v1/completions", json={
            "prompt": "p", "n": 2, "stream": True, "echo": True, "max_tokens": 50,
            "stream_options": {"include_usage": True}}) as reply:
        lines = data_lines([line async for line in reply.aiter_lines()])
    assert lines[-1] == "[DONE]"
    chunks = [json.loads(line) for line in lines[:-1]]
    assert all(c["object"] == "text_completion" for c in chunks)
    for index in (0, 1):
        mine = [c["choices"][0] for c in chunks if c["choices"] and c["choices"][0]["index"] == index]
        assert "".join(c["text"] for c in mine) == "pone two three four"
        assert [c["finish_reason"] for c in mine][-1] == "stop"
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] == 8


@pytest.mark.parametrize(("body", "status", "says"), [
    ({"prompt": [1, 2, 3]}, 400, "token ids"),
    ({"prompt": []}, 400, "at least one"),
    ({"prompt": "x", "n": 7}, 400, "QWEND_MAX_CHOICES"),
    ({"prompt": ["a", "b", "c"], "n": 3}, 400, "QWEND_MAX_CHOICES"),
    ({"prompt": "x", "logprobs": 2, "echo": True}, 400, "logprobs"),
    ({"prompt": "x", "best_of": 3}, 400, "best_of"),
    ({"prompt": "x", "suffix": "y"}, 400, "fill-in-the-middle"),
    ({"prompt": "x", "model": "nope:1b"}, 404, "nope:1b"),
    ({"prompt": "x" * 5000}, 400, "context window"),
    ({"prompt": "x", "temperature": 3}, 400, "temperature"),
])
async def test_refusals_are_openai_errors(client, body, status, says):
    reply = await client.post("/v1/completions", json=body)
    assert reply.status_code == status, reply.text
    assert says in json.dumps(reply.json()["error"])


async def test_an_upstream_server_gets_the_text_and_suffix(monkeypatch):
    import httpx

    from qwend.engine import upstream as upstream_module
    from qwend.engine.upstream import UpstreamBackend
    from qwend.models.upstream import UpstreamModels
    from qwend.settings import Settings
    from qwend.types import SamplingParams

    seen = []

    def server(request: httpx.Request) -> httpx.Response:
        seen.append((request.url.path, json.loads(request.content)))
        chunks = [{"choices": [{"index": 0, "text": "return a", "finish_reason": None}]},
                  {"choices": [{"index": 0, "text": " + b", "finish_reason": "stop"}]}]
        text = "".join(f"data: {json.dumps(c)}\n\n" for c in chunks) + "data: [DONE]\n\n"
        return httpx.Response(200, text=text, headers={"content-type": "text/event-stream"})

    real_client = httpx.AsyncClient
    monkeypatch.setattr(upstream_module.httpx, "AsyncClient",
                        lambda **kwargs: real_client(transport=httpx.MockTransport(server), **kwargs))
    settings = Settings(_env_file=None, backend="upstream", upstream_url="http://upstream.test/v1")
    backend = UpstreamBackend("coder", UpstreamModels(settings), settings, 4096)
    prompt = backend.text_prompt("def add(a, b):\n    ", "\n")
    pieces = [item.text async for item in backend.generate(prompt, SamplingParams(max_tokens=8))
              if hasattr(item, "text")]
    assert "".join(pieces) == "return a + b"
    path, body = seen[0]
    assert path == "/v1/completions" and "messages" not in body
    assert (body["prompt"], body["suffix"], body["max_tokens"]) == ("def add(a, b):\n    ", "\n", 8)


async def test_logprobs_in_the_completions_shape(tmp_path):
    async with client_for(fake_runtime(tmp_path, FakeBackend("ab cd", logprobs=True, context_length=4096))) as client:
        choice = (await client.post("/v1/completions", json={"prompt": "x", "logprobs": 1})).json()["choices"][0]
        assert choice["logprobs"] == {"tokens": ["ab ", "cd"], "token_logprobs": [-0.5, -0.5],
                                      "top_logprobs": [{"ab ": -0.5}, {"cd": -0.5}], "text_offset": [0, 3]}
        async with client.stream("POST", "/v1/completions", json={"prompt": "x", "logprobs": 0, "stream": True}) as s:
            lines = data_lines([line async for line in s.aiter_lines()])
    pieces = [c["choices"][0]["logprobs"] for c in map(json.loads, lines[:-1]) if c["choices"][0]["text"]]
    assert [(p["tokens"], p["text_offset"]) for p in pieces] == [(["ab "], [0]), (["cd"], [3])]

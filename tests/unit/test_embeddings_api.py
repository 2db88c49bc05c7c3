"""/v1/embeddings (OpenAI) and /api/embed (Ollama) over a scripted backend: shapes, encodings, dimensions and
every refusal; and the upstream engine asking its server. The real model: tests/real/test_embeddings_real.py."""

from __future__ import annotations

import base64
import json
import math
import struct

import httpx
import pytest

from qwend.engine import upstream as upstream_module
from qwend.engine.upstream import UpstreamBackend
from qwend.models.upstream import UpstreamModels
from qwend.settings import Settings
from tests.conftest import client_for, fake_runtime
from tests.fakes import FakeBackend


@pytest.fixture
async def client(tmp_path):
    async with client_for(fake_runtime(tmp_path, FakeBackend(embeddings=True))) as client:
        yield client


def norm(vector):
    return math.sqrt(sum(x * x for x in vector))


async def test_one_text_and_a_batch_in_order(client):
    one = (await client.post("/v1/embeddings", json={"input": "hello"})).json()
    assert one["object"] == "list" and one["model"] == "fake.gguf"
    assert [(d["object"], d["index"], len(d["embedding"])) for d in one["data"]] == [("embedding", 0, 26)]
    assert abs(norm(one["data"][0]["embedding"]) - 1) < 1e-9
    assert one["usage"] == {"prompt_tokens": 5, "total_tokens": 5}

    batch = (await client.post("/v1/embeddings", json={"input": ["aaa", "zzz", "hello"], "model": "fake.gguf"})).json()
    assert [d["index"] for d in batch["data"]] == [0, 1, 2]
    assert batch["data"][2]["embedding"] == one["data"][0]["embedding"]
    assert batch["data"][0]["embedding"].index(max(batch["data"][0]["embedding"])) == 0  # "a" is the first letter


async def test_base64_is_little_endian_float32_and_dimensions_cut_and_renormalize(client):
    plain = (await client.post("/v1/embeddings", json={"input": "hello"})).json()["data"][0]["embedding"]
    encoded = (await client.post("/v1/embeddings", json={"input": "hello", "encoding_format": "base64"})).json()
    raw = base64.b64decode(encoded["data"][0]["embedding"])
    assert struct.unpack(f"<{len(raw) // 4}f", raw) == pytest.approx(plain, rel=1e-6)

    short = (await client.post("/v1/embeddings", json={"input": "hello", "dimensions": 8})).json()["data"][0]
    head = plain[:8]
    assert short["embedding"] == pytest.approx([x / norm(head) for x in head])


@pytest.mark.parametrize(("body", "status", "says"), [
    ({"input": []}, 400, "at least one text"),
    ({"input": [1, 2, 3]}, 400, "check_embedding_ctx_length=False"),
    ({"input": ""}, 400, "input 0 is an empty string"),
    ({"input": ["hello", ""]}, 400, "input 1 is an empty string"),
    ({"input": "hi", "dimensions": 27}, 400, "have 26"),
    ({"input": "hi", "dimensions": 0}, 400, "dimensions"),
    ({"input": ["x"] * 2049}, 400, "2048"),
    ({"input": "hi", "model": "nope:1b"}, 404, "nope:1b"),
    ({"input": "hi", "encoding_format": "hex"}, 400, "encoding_format"),
])
async def test_refusals_are_openai_errors(client, body, status, says):
    reply = await client.post("/v1/embeddings", json=body)
    assert reply.status_code == status, reply.text
    assert says in json.dumps(reply.json()["error"])


async def test_a_model_that_cannot_embed_says_so(tmp_path):
    async with client_for(fake_runtime(tmp_path, FakeBackend())) as client:
        reply = await client.post("/v1/embeddings", json={"input": "hi"})
    assert reply.status_code == 400
    assert "cannot make embeddings" in reply.json()["error"]["message"] and reply.json()["error"]["param"] == "model"


async def test_ollama_embed(client):
    reply = (await client.post("/api/embed", json={"model": "fake.gguf", "input": ["aaa", "hello"]})).json()
    assert reply["model"] == "fake.gguf" and len(reply["embeddings"]) == 2 and reply["prompt_eval_count"] == 8
    one = (await client.post("/api/embed", json={"model": "fake.gguf", "input": "hello"})).json()
    assert one["embeddings"] == reply["embeddings"][1:]
    missing = await client.post("/api/embed", json={"model": "nope:1b", "input": "x"})
    assert missing.status_code == 404 and "error" in missing.json()
    empty = await client.post("/api/embed", json={"model": "fake.gguf", "input": ["hello", ""]})
    assert empty.status_code == 400 and "input 1 is an empty string" in empty.json()["error"]
    # the older route (LangChain's and litellm's older providers): one prompt; an empty one only loads
    legacy = (await client.post("/api/embeddings", json={"model": "fake.gguf", "prompt": "hello"})).json()
    assert legacy == {"embedding": one["embeddings"][0]}
    assert (await client.post("/api/embeddings", json={"model": "fake.gguf", "prompt": ""})).json() == {"embedding": []}


async def test_a_fault_below_the_api_is_a_500_in_the_protocols_shape(tmp_path, monkeypatch):
    """What no refusal foresaw (a library raising) still reaches the client as its protocol's error body."""
    backend = FakeBackend(embeddings=True)

    async def broken(texts):
        raise RuntimeError("llama_decode returned -1")

    monkeypatch.setattr(backend, "embed", broken)
    app_client = client_for(fake_runtime(tmp_path, backend))
    app_client._transport = httpx.ASGITransport(app=app_client._transport.app, raise_app_exceptions=False)
    async with app_client as client:
        openai_reply = await client.post("/v1/embeddings", json={"input": "hi"})
        ollama_reply = await client.post("/api/embed", json={"model": "fake.gguf", "input": "hi"})
    assert openai_reply.status_code == 500 and openai_reply.json()["error"]["type"] == "server_error"
    assert "llama_decode returned -1" in openai_reply.json()["error"]["message"]
    assert ollama_reply.status_code == 500 and "llama_decode" in ollama_reply.json()["error"]


async def test_an_upstream_server_makes_the_vectors(monkeypatch):
    seen = []

    def server(request: httpx.Request) -> httpx.Response:
        seen.append(json.loads(request.content))
        rows = [{"object": "embedding", "index": 1, "embedding": [0.0, 2.0]},
                {"object": "embedding", "index": 0, "embedding": [3.0, 4.0]}]
        return httpx.Response(200, json={"data": rows, "usage": {"prompt_tokens": 7}})

    real_client = httpx.AsyncClient
    monkeypatch.setattr(upstream_module.httpx, "AsyncClient",
                        lambda **kwargs: real_client(transport=httpx.MockTransport(server), **kwargs))
    settings = Settings(_env_file=None, backend="upstream", upstream_url="http://upstream.test/v1")
    backend = UpstreamBackend("embedder", UpstreamModels(settings), settings, 4096)
    result = await backend.embed(["a", "b"])
    assert seen == [{"model": "embedder", "input": ["a", "b"], "encoding_format": "float"}]
    assert (result.vectors, result.tokens) == ([[0.6, 0.8], [0.0, 1.0]], 7)  # by index, unit length

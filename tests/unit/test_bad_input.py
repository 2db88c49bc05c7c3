"""Bad bodies at every protocol's chat endpoint (and the tool endpoints): each gets a 4xx in that protocol's
error shape, never a 5xx, and never reaches the model. Unknown fields alone are ignored (200)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import pytest
import pytest_asyncio

from tests.conftest import client_for, fake_runtime
from tests.error_shapes import error_shape_problem
from tests.fakes import FakeBackend

pytestmark = pytest.mark.asyncio(loop_scope="module")

NAN, INF = float("nan"), float("inf")  # json.dumps writes them as the literals NaN and Infinity
HI = [{"role": "user", "content": "hi"}]
MARKER = "zz_unknown_field"


def at(dotted: str, value: Any) -> dict[str, Any]:
    """{"a": {"b": value}} for "a.b"."""
    *parents, last = dotted.split(".")
    body: dict[str, Any] = {last: value}
    for parent in reversed(parents):
        body = {parent: body}
    return body


def chat_cases(max_tokens: str, temperature: str) -> dict[str, dict[str, Any]]:
    """Wrong types for the fields every messages-style body has; `max_tokens`/`temperature` are dotted paths."""
    return {
        "messages is a string": {"messages": "hi"},
        "a message is a number": {"messages": [123]},
        "role is a number": {"messages": [{"role": 123, "content": "hi"}]},
        "content is a number": {"messages": [{"role": "user", "content": 123}]},
        "messages is empty": {"messages": []},
        "max_tokens is a string": at(max_tokens, "x"),
        "max_tokens is Infinity": at(max_tokens, INF),
        "temperature is a string": at(temperature, "hot"),
        "temperature is NaN": at(temperature, NAN),
    }


def turn_cases() -> dict[str, dict[str, Any]]:
    """Seed 000's `{"message": ...}` turn bodies."""
    return {
        "message is a number": {"message": 123},
        "message is a list": {"message": ["hi"]},
        "message is empty": {"message": ""},
        "max_tokens is a string": {"max_tokens": "x"},
        "max_tokens is Infinity": {"max_tokens": INF},
        "temperature is a string": {"temperature": "hot"},
        "temperature is NaN": {"temperature": NAN},
    }


@dataclass(frozen=True)
class Endpoint:
    path: str  # "{session}" stands for a session's id
    protocol: str  # the error shape: openai, anthropic, ollama or detail (tests/error_shapes.py)
    valid: dict[str, Any]
    cases: dict[str, dict[str, Any]]  # name -> fields that replace the valid body's
    accepted: frozenset[str] = field(default=frozenset())  # cases the protocol answers 200 by design
    generates: bool = True  # a valid body makes the model answer


OPENAI_CASES = chat_cases("max_tokens", "temperature")
ENDPOINTS = [
    Endpoint("/v1/chat/completions", "openai", {"messages": HI, "max_tokens": 5}, OPENAI_CASES),
    Endpoint("/v1/messages", "anthropic", {"model": "fake.gguf", "max_tokens": 5, "messages": HI},
             {**OPENAI_CASES, "system is a number": {"system": 123}, "max_tokens is missing": {"max_tokens": None}}),
    Endpoint("/api/chat", "ollama", {"messages": HI, "stream": False},
             {**chat_cases("options.num_predict", "options.temperature"), "options is a string": {"options": "x"},
              "keep_alive is NaN": {"keep_alive": NAN}, "keep_alive is 'nan'": {"keep_alive": "nan"}},
             accepted=frozenset({"messages is empty"})),  # Ollama's way to load a model
    Endpoint("/api/generate", "ollama", {"prompt": "hi", "stream": False},
             {"prompt is a number": {"prompt": 123}, "prompt is a list": {"prompt": ["hi"]},
              "images is a string": {"images": "x"}, "max_tokens is a string": {"options": {"num_predict": "x"}},
              "temperature is a string": {"options": {"temperature": "hot"}},
              "temperature is NaN": {"options": {"temperature": NAN}}, "keep_alive is Infinity": {"keep_alive": INF},
              "keep_alive is not a duration": {"keep_alive": "soon"}}),
    Endpoint("/v1/chat", "detail", {"message": "hi", "max_tokens": 5},
             {**turn_cases(), "profile is a number": {"profile": 123}}),
    Endpoint("/v1/sessions/{session}/chat", "detail", {"message": "hi", "max_tokens": 5}, turn_cases()),
    Endpoint("/api/chat/completions", "detail", {"messages": HI, "max_tokens": 5}, OPENAI_CASES),
    Endpoint("/chat", "detail", {"messages": HI, "config": {"maxTokens": 5}},
             {**chat_cases("config.maxTokens", "config.temperature"), "config is a string": {"config": "x"}}),
    Endpoint("/chat/regular", "detail", {"messages": HI, "config": {"maxTokens": 5}},
             chat_cases("config.maxTokens", "config.temperature")),
    Endpoint("/chat/completions", "openai", {"messages": HI, "max_tokens": 5}, OPENAI_CASES),
    Endpoint("/create_session", "detail", {"tools": [{"name": "lookup", "parameters": {"type": "object"}}]},
             {"tools is a string": {"tools": "x"}, "a tool is a number": {"tools": [123]},
              "tool name is a number": {"tools": [{"name": 123}]},
              "tool schema holds NaN": {"tools": [{"name": "f", "parameters": {"type": "number", "maximum": NAN}}]},
              "system_prompt is a number": {"system_prompt": 123}, "model is a number": {"model": 123}},
             accepted=frozenset({"empty body", "null"}), generates=False),  # its body is optional
    Endpoint("/v1/tools/calculator/invoke", "detail", {"arguments": {"expression": "1+1"}},
             {"arguments is a string": {"arguments": "x"}, "arguments is a list": {"arguments": [1]},
              "an argument is a number": {"arguments": {"expression": 123}},
              "an argument is NaN": {"arguments": {"expression": NAN}}}, generates=False),
    Endpoint("/api/tools/execute", "detail", {"tool_name": "calculator", "parameters": {"expression": "1+1"}},
             {"tool_name is a number": {"tool_name": 123}, "tool_name is missing": {"tool_name": None},
              "parameters is a string": {"parameters": "x"}, "parameters is a list": {"parameters": [1]},
              "a parameter is NaN": {"parameters": {"expression": NAN}}}, generates=False),
    Endpoint("/v1/sessions", "detail", {"title": "t"},
             {"metadata holds NaN": {"metadata": {"score": NAN}}, "metadata is a string": {"metadata": "x"},
              "title is a number": {"title": 123}, "model_size is unknown": {"model_size": "huge"}}, generates=False),
]

JSON = {"content-type": "application/json"}
PAGE = "http://localhost:3000"  # an origin the guard allows
# name -> (raw body, headers, status); the body of the wrong-Content-Type cases is valid JSON
RAW = {
    "not JSON": (b"hello", JSON, 400),
    "truncated JSON": (b'{"messages": [{"role": "user", "con', JSON, 400),
    "array": (b"[]", JSON, 400),
    "number": (b"42", JSON, 400),
    "string": (b'"hi"', JSON, 400),
    "null": (b"null", JSON, 400),
    "empty body": (b"", JSON, 400),
    # a page's request must say it is JSON (a browser sends Origin on every cross-site POST) ...
    "text/plain from a page": (None, {"content-type": "text/plain", "origin": PAGE}, 415),
    "form from a page": (None, {"content-type": "application/x-www-form-urlencoded", "origin": PAGE}, 415),
    "no Content-Type from a page": (None, {"origin": PAGE}, 415),
    # ... any other client's body is read as JSON (litellm's Ollama providers, `curl -d`)
    "text/plain": (None, {"content-type": "text/plain"}, 200),
    "form": (None, {"content-type": "application/x-www-form-urlencoded"}, 200),
    "no Content-Type": (None, {}, 200),
}


@pytest.fixture(scope="module")
def backend():
    return FakeBackend("Hi there.", context_length=4096)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def client(tmp_path_factory, backend):
    runtime = fake_runtime(tmp_path_factory.mktemp("bad-input"), backend, enable_web_search=False,
                           enable_code_execution=False)
    async with client_for(runtime) as c:
        yield c


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def session_id(client):
    return (await client.post("/v1/sessions", json={})).json()["session_id"]


def url(endpoint: Endpoint, session_id: str) -> str:
    return endpoint.path.format(session=session_id)


async def send(client, backend, path: str, content: bytes, headers: dict[str, str]):
    """POST, and whether the model was asked to generate meanwhile."""
    prompts = len(backend.prompts)
    reply = await client.post(path, content=content, headers=headers)
    return reply, len(backend.prompts) > prompts


def assert_refused(reply, endpoint: Endpoint, status: int, reached_model: bool) -> None:
    assert reply.status_code == status, reply.text
    assert error_shape_problem(endpoint.protocol, reply.json()) is None, reply.text
    assert not reached_model


def merged(valid: dict[str, Any], fields: dict[str, Any]) -> bytes:
    body = {**valid, **fields}
    return json.dumps({k: v for k, v in body.items() if v is not None}).encode()  # None: the field is left out


@pytest.mark.parametrize("endpoint", ENDPOINTS, ids=lambda e: e.path)
@pytest.mark.parametrize("case", RAW)
async def test_a_body_that_is_not_a_json_object(client, backend, session_id, endpoint, case):
    content, headers, status = RAW[case]
    content = json.dumps(endpoint.valid).encode() if content is None else content
    reply, reached_model = await send(client, backend, url(endpoint, session_id), content, headers)
    if case in endpoint.accepted or status == 200:
        assert reply.status_code == 200, reply.text
    else:
        assert_refused(reply, endpoint, status, reached_model)


@pytest.mark.parametrize(
    ("endpoint", "case"),
    [pytest.param(e, c, id=f"{e.path} {c}") for e in ENDPOINTS for c in e.cases],
)
async def test_a_field_of_the_wrong_type(client, backend, session_id, endpoint, case):
    content = merged(endpoint.valid, endpoint.cases[case])
    reply, reached_model = await send(client, backend, url(endpoint, session_id), content, JSON)
    if case in endpoint.accepted:
        assert reply.status_code == 200, reply.text
    else:
        assert_refused(reply, endpoint, 400, reached_model)


@pytest.mark.parametrize("endpoint", ENDPOINTS, ids=lambda e: e.path)
async def test_unknown_fields_are_ignored(client, backend, session_id, endpoint):
    extra = {MARKER: {"nested": [1, "two"]}, "logit_bias_zz": NAN}
    prompts = len(backend.prompts)
    reply = await client.post(url(endpoint, session_id), content=merged(endpoint.valid, extra), headers=JSON)
    assert reply.status_code == 200, reply.text
    assert (len(backend.prompts) > prompts) == endpoint.generates
    assert not any(MARKER in p for p in backend.prompts[prompts:])


async def test_a_refused_metadata_leaves_the_session_list_readable(client):
    await client.post("/v1/sessions", content=b'{"metadata": {"x": NaN}}', headers=JSON)
    await client.post("/create_session", content=b'{"tools": [{"name": "f", "parameters": {"default": NaN}}]}',
                      headers=JSON)
    assert (await client.get("/v1/sessions")).status_code == 200


@pytest.mark.parametrize("keep_alive", [1e308, "99999999999999h", "inf"])
async def test_a_keep_alive_past_any_date_keeps_the_model_and_api_ps_answers(client, keep_alive):
    body = json.dumps({"prompt": "hi", "stream": False, "keep_alive": keep_alive}).encode()
    assert (await client.post("/api/generate", content=body, headers=JSON)).status_code == 200
    models = (await client.get("/api/ps")).json()["models"]
    assert models[0]["expires_at"].startswith("9999-")  # Ollama's "never"

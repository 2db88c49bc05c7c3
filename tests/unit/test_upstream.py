"""The upstream backend's translations, without a server: OpenAI stream deltas into the text the output
parser reads, requests out of qwend's sampling and constraints, and the lifecycle calls each kind of server
gets. The real round trip (llama-cpp-python's server) is in tests/real/test_engines.py."""

from __future__ import annotations

import json

import httpx
import pytest

from qwend.chat.parser import OutputParser
from qwend.engine.base import Prompt
from qwend.engine.upstream import UpstreamBackend, _AnswerText
from qwend.errors import InvalidRequest, ModelNotFound, UpstreamError
from qwend.models.upstream import UpstreamModels
from qwend.settings import Settings
from qwend.types import Image, Message, OutputConstraint, Reasoning, SamplingParams, Token, ToolCallEnd, ToolSpec

WEATHER = ToolSpec("get_weather", "Weather for a city", {"type": "object", "properties": {"city": {"type": "string"}}})


def parse(deltas: list[dict]) -> list:
    text = _AnswerText()
    pieces = [p for d in deltas for p in text.feed(d)] + [text.close()]
    parser = OutputParser((WEATHER,), lenient=True)
    return [e for p in pieces for e in parser.feed(p)] + parser.finish()


def test_parsed_tool_calls_come_back_as_calls():
    deltas = [
        {"role": "assistant", "content": ""},
        {"tool_calls": [{"index": 0, "id": "a", "function": {"name": "get_weather", "arguments": ""}}]},
        {"tool_calls": [{"index": 0, "function": {"arguments": '{"city": '}}]},
        {"tool_calls": [{"index": 0, "function": {"arguments": '"Paris"}'}}]},
        {"tool_calls": [{"index": 1, "id": "b", "function": {"name": "get_weather", "arguments": '{"city": "Rome"}'}}]},
    ]
    calls = [e.call for e in parse(deltas) if isinstance(e, ToolCallEnd)]
    assert [(c.name, json.loads(c.arguments)) for c in calls] == [
        ("get_weather", {"city": "Paris"}), ("get_weather", {"city": "Rome"}),
    ]


def test_a_call_without_arguments_has_an_empty_object():
    deltas = [{"tool_calls": [{"index": 0, "function": {"name": "get_weather"}}]}]
    [call] = [e.call for e in parse(deltas) if isinstance(e, ToolCallEnd)]
    assert json.loads(call.arguments) == {}


def test_reasoning_and_content_stay_apart():
    events = parse([{"reasoning_content": "Think "}, {"reasoning_content": "hard."}, {"content": "Paris."}])
    assert "".join(e.text for e in events if isinstance(e, Reasoning)).strip() == "Think hard."
    assert "".join(e.text for e in events if isinstance(e, Token)).strip() == "Paris."


@pytest.fixture
def backend():
    settings = Settings(_env_file=None, backend="upstream", upstream_url="http://upstream.test/v1")
    return UpstreamBackend("m", UpstreamModels(settings), settings, 4096)


def test_request_carries_sampling_tools_and_tool_choice(backend):
    image = Image(b"\x89PNG", "image/png")
    prompt = backend.prompt((Message("user", "hi", images=(image,)),), (WEATHER,))
    params = SamplingParams(temperature=0.2, top_k=5, repeat_penalty=1.1, seed=7, max_tokens=9)
    body = backend._body(prompt, params, OutputConstraint(tools=(WEATHER,), calls="required", parallel=False))
    assert body["model"] == "m" and body["stream"] is True and body["max_tokens"] == 9 and body["seed"] == 7
    assert (body["temperature"], body["top_k"], body["repeat_penalty"], body["repetition_penalty"]) == (0.2, 5, 1.1, 1.1)
    assert body["tools"][0]["function"]["name"] == "get_weather"
    assert (body["tool_choice"], body["parallel_tool_calls"]) == ("required", False)
    assert body["messages"][0]["content"][1] == {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw=="}}


def test_json_schema_becomes_response_format(backend):
    prompt = Prompt(messages=(Message("user", "hi"),))
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}}
    body = backend._body(prompt, SamplingParams(), OutputConstraint(json_schema=schema))
    assert body["response_format"] == {"type": "json_schema", "json_schema": {"name": "answer", "schema": schema}}
    assert backend._body(prompt, SamplingParams(), OutputConstraint(json_schema={}))["response_format"] == {
        "type": "json_object"}
    assert "tools" not in body and "repeat_penalty" not in body


def test_requests_sent_at_once_are_configured():
    settings = Settings(_env_file=None, backend="upstream", upstream_parallel=32)
    assert UpstreamBackend("m", UpstreamModels(settings), settings, 4096).info.parallel == 32


def test_prompt_length_is_estimated_from_the_text(backend):
    short = backend.prompt((Message("user", "hi"),)).length
    long = backend.prompt((Message("user", "hi " * 400),)).length
    assert 0 < short < 10 and 300 < long < 500


def models_with(handler) -> tuple[UpstreamModels, list[tuple[str, str, dict | None]]]:
    """UpstreamModels whose HTTP goes to `handler(method, path, body) -> (status, json)`; records requests."""
    seen: list[tuple[str, str, dict | None]] = []

    def transport(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content) if request.content else None
        seen.append((request.method, request.url.path, body))
        status, payload = handler(request.method, request.url.path, body)
        return httpx.Response(status, json=payload)

    models = UpstreamModels(Settings(_env_file=None, upstream_url="http://upstream.test/v1"))
    models._client = httpx.Client(transport=httpx.MockTransport(transport))
    return models, seen


def test_ollama_loads_and_unloads_through_keep_alive():
    models, seen = models_with(lambda m, path, b: (200, {"version": "0.12"}) if path == "/api/version" else (200, {}))
    models.load("qwen")
    models.unload("qwen")
    assert models.kind == "ollama"
    assert seen[-2:] == [("POST", "/api/generate", {"model": "qwen", "keep_alive": "5m"}),
                         ("POST", "/api/generate", {"model": "qwen", "keep_alive": 0})]


def test_lm_studio_loads_and_unloads_through_its_rest_api():
    def lm_studio(method, path, body):
        return (200, {"models": []}) if path == "/api/v1/models" else (404 if path == "/api/version" else 200, {})

    models, seen = models_with(lm_studio)
    models.load("qwen/qwen3-4b")
    models.unload("qwen/qwen3-4b")
    assert models.kind == "lmstudio"
    assert seen[-2:] == [("POST", "/api/v1/models/load", {"model": "qwen/qwen3-4b"}),
                         ("POST", "/api/v1/models/unload", {"instance_id": "qwen/qwen3-4b"})]


def test_llama_server_router_is_told_by_load_states():
    def router(method, path, body):
        if path == "/v1/models":
            return 200, {"data": [{"id": "a", "status": {"value": "unloaded"}}]}
        return (404, {}) if method == "GET" else (200, {})

    models, seen = models_with(router)
    models.load("a")
    assert models.kind == "llama_server"
    assert seen[-1] == ("POST", "/models/load", {"model": "a"})


def test_a_plain_openai_server_has_no_lifecycle_calls():
    models, seen = models_with(lambda m, path, b: (200, {"data": [{"id": "a"}]}) if path == "/v1/models" else (404, {}))
    models.load("a")
    models.unload("a")
    assert models.kind == "openai" and all(method == "GET" for method, _, _ in seen)
    assert [m.name for m in models.list()] == ["a"]
    with pytest.raises(ModelNotFound, match="has no model 'b'; it has: a"):
        models.entry("b")


def test_upstream_errors_keep_their_meaning():
    models, _ = models_with(lambda m, p, b: (400, {"error": {"message": "bad temperature"}}))
    with pytest.raises(InvalidRequest, match="answered 400: bad temperature"):
        models.listing()
    models, _ = models_with(lambda m, p, b: (500, {"detail": "boom"}))
    with pytest.raises(UpstreamError, match="answered 500: boom"):
        models.listing()


def test_an_absent_server_is_a_clear_error_at_once():
    models = UpstreamModels(Settings(_env_file=None, upstream_url="http://127.0.0.1:9/v1"))
    with pytest.raises(UpstreamError, match="Could not connect to the upstream server at http://127.0.0.1:9/v1"):
        models.list()

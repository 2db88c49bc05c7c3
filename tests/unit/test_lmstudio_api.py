"""Seed 002 (the LM Studio proxy): its wire format, model load/unload, errors and /help, on a scripted backend."""

import asyncio
import base64
import json
from dataclasses import replace

import pytest
from fastapi.routing import iter_route_contexts
from starlette.routing import Mount

from qwend.api.wire import lmstudio as wire
from qwend.engine.manager import LoadedModel
from qwend.engine.scheduler import Scheduler
from qwend.errors import BackendError
from qwend.models.store import LocalModel
from qwend.settings import Settings
from qwend.types import Message
from tests.conftest import client_for, fake_runtime
from tests.fakes import FakeBackend

# the seed's own example bodies
REGULAR = {
    "messages": [
        {"role": "system", "content": "You are a helpful assistant."},
        {"role": "user", "content": "What is 2+2?"},
    ],
    "config": {"temperature": 0.7, "maxTokens": 100},
}
# what Windows PowerShell's `ConvertTo-Json -Depth 10` writes for the seed's hashtable body
POWERSHELL = """{
    "messages":  [
                     {
                         "role":  "system",
                         "content":  "You are helpful."
                     },
                     {
                         "role":  "user",
                         "content":  "What is 2+2?"
                     }
                 ],
    "config":  {
                   "temperature":  0.7,
                   "maxTokens":  100
               }
}"""
PNG_1PX = base64.b64encode(
    bytes.fromhex("89504e470d0a1a0a0000000d4948445200000001000000010806000000"
                  "1f15c4890000000d49444154789c6360000002000154a24f5d0000000049454e44ae426082")
).decode()
WITH_IMAGE = {
    "messages": [{"role": "user", "content": "What is in this image?",
                  "images": [{"data_base64": PNG_1PX, "mime_type": "image/png"}]}],
    "config": {"temperature": 0.6, "maxTokens": 200},
}
CHAT_PATHS = ["/chat", "/chat/regular", "/chat/vision"]


def with_images(*images: dict) -> dict:
    return {"messages": [{"role": "user", "content": "x", "images": list(images)}]}


class SeeingBackend(FakeBackend):
    """A FakeBackend that reads images and keeps the messages it was given."""

    def __init__(self, reply: str) -> None:
        super().__init__(reply)
        self.info = replace(self.info, vision=True)
        self.messages: list[tuple[Message, ...]] = []

    def render(self, messages, tools=(), thinking=None):
        self.messages.append(tuple(messages))
        return super().render(messages, tools)


class FailingBackend(FakeBackend):
    """Answers one piece, then the engine fails (a failure after the stream has begun)."""

    async def generate(self, prompt, params, constraint=None):
        async for item in super().generate(prompt, params, constraint):
            yield item
            if type(item).__name__ == "Piece":
                raise BackendError("the engine fell over")


def add_model(runtime, name: str, backend: FakeBackend, *, loaded: bool = True) -> None:
    """Put another model file in the models folder (and load it with `backend`)."""
    path = runtime.settings.models_dir / name
    path.write_bytes(b"GGUF")
    if loaded:
        runtime.models.loaded[name] = LoadedModel(LocalModel(name, path), backend, Scheduler(backend, queue_size=4))


def ndjson(reply) -> list[dict]:
    assert reply.headers["content-type"] == "application/x-ndjson"
    assert reply.text.endswith("\n")
    return [json.loads(line) for line in reply.text.splitlines()]


@pytest.fixture
async def client(tmp_path):
    async with client_for(fake_runtime(tmp_path, FakeBackend("Hello there, friend."))) as c:
        yield c


@pytest.mark.parametrize("path", CHAT_PATHS)
async def test_non_streaming_body(client, path):
    reply = await client.post(path, json=REGULAR)
    assert reply.status_code == 200, reply.text
    assert reply.json() == {"model": "fake.gguf", "content": "Hello there, friend.", "stop_reason": "stop",
                            "predicted_tokens": 3}


@pytest.mark.parametrize("path", CHAT_PATHS)
async def test_streaming_is_ndjson_fragments_then_done(client, path):
    lines = ndjson(await client.post(f"{path}/stream", json=REGULAR))
    assert [line["type"] for line in lines] == ["fragment", "fragment", "fragment", "done"]
    assert "".join(line["content"] for line in lines[:-1]) == "Hello there, friend."
    assert lines[-1] == {"type": "done", "model": "fake.gguf", "predicted_tokens": 3, "stop_reason": "stop"}


async def test_powershell_body_works_as_sent(client):
    headers = {"content-type": "application/json"}
    reply = await client.post("/chat/regular", content=POWERSHELL.encode(), headers=headers)
    assert reply.status_code == 200 and reply.json()["content"] == "Hello there, friend."


async def test_max_tokens_gives_length(client):
    body = (await client.post("/chat", json={**REGULAR, "config": {"maxTokens": 1}})).json()
    assert body["content"] == "Hello " and body["stop_reason"] == "length" and body["predicted_tokens"] == 1
    lines = ndjson(await client.post("/chat/stream", json={**REGULAR, "config": {"max_tokens": 2}}))
    assert lines[-1]["stop_reason"] == "length" and lines[-1]["predicted_tokens"] == 2


def test_config_reaches_the_sampling_params():
    body = wire.ChatBody.model_validate({**REGULAR, "config": {
        "temperature": 0.2, "maxTokens": 7, "topP": 0.5, "presencePenalty": 1.5, "frequencyPenalty": -1}})
    sampling = wire.to_chat_request(body, default_model=None, images_allowed=False).sampling
    assert (sampling.temperature, sampling.max_tokens, sampling.top_p) == (0.2, 7, 0.5)
    assert (sampling.presence_penalty, sampling.frequency_penalty) == (1.5, -1)
    unlimited = wire.ChatBody.model_validate({**REGULAR, "config": {"maxTokens": -1}})
    assert wire.to_chat_request(unlimited, default_model=None, images_allowed=False).sampling.max_tokens is None
    bare = wire.ChatBody.model_validate({"messages": REGULAR["messages"], "config": None})
    request = wire.to_chat_request(bare, default_model="m", images_allowed=False)
    assert request.model == "m" and request.sampling.temperature == 0.8  # llama.cpp's default
    assert [m.role for m in request.messages] == ["system", "user"]


@pytest.mark.parametrize(
    "body, where",
    [
        ({}, "messages"),
        ({"messages": []}, "messages"),
        ({"messages": [{"role": "wizard", "content": "x"}]}, "messages.0.role"),
        ({"messages": [{"role": "user"}]}, "messages.0.content"),
        ({**REGULAR, "config": {"temperature": 5}}, "config.temperature"),
        ({**REGULAR, "config": {"maxTokens": 0}}, "config.maxTokens"),
        ({**REGULAR, "config": {"topP": 2}}, "config.topP"),
        ({**REGULAR, "config": {"presencePenalty": -3}}, "config.presencePenalty"),
        ({**REGULAR, "config": {"frequencyPenalty": 2.5}}, "config.frequencyPenalty"),
        (with_images({"data_base64": "%%%", "mime_type": "image/png"}),
         "messages[0].images[0]: the image is not valid base64"),
        (with_images({"data_base64": PNG_1PX}, {"data_base64": PNG_1PX, "mime_type": "image/bmp"}),
         "messages[0].images[1]: image type 'image/bmp' is not supported"),
    ],
)
async def test_bad_bodies_are_400_with_detail(client, body, where):
    for path in ("/chat/vision", "/chat/vision/stream"):
        reply = await client.post(path, json=body)
        assert reply.status_code == 400, reply.text
        assert set(reply.json()) == {"detail"} and where in reply.json()["detail"]


async def test_malformed_json_is_400(client):
    reply = await client.post("/chat", content=b'{"messages": [', headers={"content-type": "application/json"})
    assert reply.status_code == 400 and "not valid JSON" in reply.json()["detail"]


@pytest.mark.parametrize("path", ["/chat/regular", "/chat/regular/stream"])
async def test_text_routes_refuse_images(client, path):
    reply = await client.post(path, json=WITH_IMAGE)
    assert reply.status_code == 400
    assert "/chat/vision" in reply.json()["detail"] and "messages[0] has images" in reply.json()["detail"]


@pytest.mark.parametrize("path", ["/chat/vision", "/chat/vision/stream", "/chat"])
async def test_images_for_a_model_without_vision_are_a_clear_400(client, path):
    reply = await client.post(path, json=WITH_IMAGE)
    assert reply.status_code == 400
    assert reply.json() == {"detail": reply.json()["detail"]} and "cannot read images" in reply.json()["detail"]


async def test_vision_routes_use_the_default_vision_model_and_pass_images(tmp_path):
    runtime = fake_runtime(tmp_path, FakeBackend(), default_vision_model="eyes.gguf")
    eyes = SeeingBackend("A single pixel.")
    add_model(runtime, "eyes.gguf", eyes)
    data_url = {"data_base64": f"data:image/png;base64,{PNG_1PX}"}  # mime_type left to the data URL
    async with client_for(runtime) as client:
        body = (await client.post("/chat/vision", json=WITH_IMAGE)).json()
        lines = ndjson(await client.post("/chat/vision/stream", json={
            "messages": [{"role": "user", "content": "Describe this image in detail", "images": [data_url]}]}))
    assert body == {"model": "eyes.gguf", "content": "A single pixel.", "stop_reason": "stop", "predicted_tokens": 3}
    assert lines[-1]["model"] == "eyes.gguf"
    png = base64.b64decode(PNG_1PX)
    assert [(i.data, i.mime_type) for i in eyes.messages[0][0].images] == [(png, "image/png")]
    assert [(i.data, i.mime_type) for i in eyes.messages[1][0].images] == [(png, "image/png")]


async def test_regular_routes_use_the_default_regular_model_unless_model_key_names_one(tmp_path):
    runtime = fake_runtime(tmp_path, FakeBackend("From the default."), default_regular_model="regular.gguf")
    add_model(runtime, "regular.gguf", FakeBackend("From the regular one."))
    async with client_for(runtime) as client:
        regular = (await client.post("/chat/regular", json=REGULAR)).json()
        chosen = (await client.post("/chat/regular", json={**REGULAR, "model_key": "fake.gguf"})).json()
        generic = (await client.post("/chat", json=REGULAR)).json()
        by_model_field = (await client.post("/chat", json={**REGULAR, "model": "regular.gguf"})).json()
    assert (regular["model"], regular["content"]) == ("regular.gguf", "From the regular one.")
    assert (chosen["model"], generic["model"], by_model_field["model"]) == ("fake.gguf", "fake.gguf", "regular.gguf")


@pytest.mark.parametrize("path", ["/chat", "/chat/stream"])
@pytest.mark.parametrize("model_key", ["my-custom-model", "smollm2:135m"])  # unknown; known but not on disk
async def test_a_model_that_is_not_available_is_503_chat_service_unavailable(client, path, model_key):
    reply = await client.post(path, json={"model_key": model_key, "messages": [{"role": "user", "content": "Hello!"}]})
    assert reply.status_code == 503
    detail = reply.json()["detail"]
    assert detail.startswith("Chat service unavailable: ") and model_key in detail


async def test_a_default_regular_model_that_is_missing_is_503(tmp_path):
    async with client_for(fake_runtime(tmp_path, FakeBackend(), default_regular_model="gone.gguf")) as client:
        reply = await client.post("/chat/regular", json=REGULAR)
    assert reply.status_code == 503 and "gone.gguf" in reply.json()["detail"]


async def test_an_engine_failure_after_the_stream_began_is_an_error_line(tmp_path):
    async with client_for(fake_runtime(tmp_path, FailingBackend("one two three"))) as client:
        lines = ndjson(await client.post("/chat/stream", json=REGULAR))
        reply = await client.post("/chat", json=REGULAR)
    assert lines == [{"type": "fragment", "content": "one "}, {"type": "error", "detail": "the engine fell over"}]
    assert reply.status_code == 503 and reply.json()["detail"] == "Chat service unavailable: the engine fell over"


# -- model management


async def test_load_exclusive_unloads_the_others(tmp_path):
    runtime = fake_runtime(tmp_path, FakeBackend())
    add_model(runtime, "other.gguf", FakeBackend())
    async with client_for(runtime) as client:
        reply = await client.post("/models/load", json={"model_key": "fake.gguf", "exclusive": True})
        again = await client.post("/models/load", json={"model_key": "fake.gguf"})
    assert reply.status_code == 200
    assert reply.json() == {"loaded": True, "model_key": "fake.gguf", "model": "fake.gguf", "exclusive": True,
                            "already_loaded": True, "unloaded": ["other.gguf"]}
    assert again.json()["unloaded"] == [] and again.json()["exclusive"] is False
    assert list(runtime.models.loaded) == ["fake.gguf"]


async def test_load_of_an_unknown_model_is_the_seed_body(client):
    reply = await client.post("/models/load", json={"model_key": "qwen/qwen3-4b-2507", "exclusive": True})
    assert reply.status_code == 200  # the seed's clients read the body only from a 200
    body = reply.json()
    assert body["loaded"] is False and body["model_key"] == "qwen/qwen3-4b-2507"
    assert body["error"].startswith("Failed to load model: ") and "qwen/qwen3-4b-2507" in body["error"]


async def test_load_that_the_engine_refuses_is_the_seed_body(tmp_path):
    runtime = fake_runtime(tmp_path, FakeBackend())
    add_model(runtime, "broken.gguf", FakeBackend(), loaded=False)  # four bytes: no GGUF llama.cpp can read
    async with client_for(runtime) as client:
        reply = await client.post("/models/load", json={"model_key": "broken.gguf"})
    assert reply.status_code == 200
    assert reply.json()["loaded"] is False and "Failed to load model: llama.cpp could not" in reply.json()["error"]
    assert "broken.gguf" not in runtime.models.loaded


async def test_load_without_model_key_is_400(client):
    reply = await client.post("/models/load", json={"exclusive": True})
    assert reply.status_code == 400 and "model_key" in reply.json()["detail"]


async def test_unload_one_then_again_then_all(tmp_path):
    runtime = fake_runtime(tmp_path, FakeBackend())
    add_model(runtime, "other.gguf", FakeBackend())
    async with client_for(runtime) as client:
        one = (await client.post("/models/unload", json={"model_key": "other.gguf"})).json()
        again = (await client.post("/models/unload", json={"model_key": "other.gguf"})).json()
        unknown = (await client.post("/models/unload", json={"model_key": "qwen/qwen3-4b-2507"})).json()
        everything = (await client.post("/models/unload", json={"unload_all": True})).json()
        nothing = (await client.post("/models/unload", json={"unload_all": True})).json()
        # with nothing loaded the next chat loads its model on demand; this one's file is no real GGUF
        chat = await client.post("/chat", json=REGULAR)
    assert one == {"unloaded": True, "models": ["other.gguf"], "model_key": "other.gguf"}
    assert again == {"unloaded": False, "models": [], "model_key": "other.gguf",
                     "message": "model 'other.gguf' was not loaded"}
    assert unknown["unloaded"] is False and "was not loaded" in unknown["message"]
    assert everything == {"unloaded": True, "models": ["fake.gguf"], "unload_all": True}
    assert nothing == {"unloaded": False, "models": [], "unload_all": True, "message": "no model was loaded"}
    assert chat.status_code == 503 and chat.json()["detail"].startswith("Chat service unavailable: llama.cpp")


@pytest.mark.parametrize("body", [{}, {"unload_all": False}, {"unload_all": True, "model_key": "fake.gguf"}])
async def test_unload_needs_exactly_one_target(client, body):
    reply = await client.post("/models/unload", json=body)
    assert reply.status_code == 400 and "unload_all" in reply.json()["detail"]


# -- /help


async def test_help_lists_every_route_of_the_app_grouped_by_protocol(tmp_path):
    runtime = fake_runtime(tmp_path, FakeBackend())
    async with client_for(runtime) as client:
        body = (await client.get("/help")).json()
        app = client._transport.app
    listed = {(e["method"], e["path"]) for entries in body["endpoints"].values() for e in entries}
    expected = set()
    for route in iter_route_contexts(app.routes):
        mount = isinstance(route.original_route, Mount)  # the browser UI's static files answer any method
        if route.methods:  # HEAD is implied by GET; a route of HEAD alone (Ollama's liveness check) is listed
            methods = route.methods - {"HEAD"} if "GET" in route.methods else route.methods
        else:
            methods = {"*"} if mount else {"WEBSOCKET"}
        expected |= {(m, route.path) for m in methods}
    assert listed == expected and body["routes"] == len(listed)
    ours = {e["path"]: e for e in body["endpoints"]["LM Studio proxy (seed 002)"]}
    assert set(ours) == {"/help", "/models/load", "/models/unload", "/chat", "/chat/stream", "/chat/regular",
                         "/chat/regular/stream", "/chat/vision", "/chat/vision/stream"}
    assert all(e["summary"] for entries in body["endpoints"].values() for e in entries)
    assert body["name"] == "qwend" and body["endpoints"]["OpenAI"]


# -- cancellation


async def _request_then_leave(app, path: str, body: dict, left) -> list[dict]:
    """Drive the ASGI app directly; the client disconnects once `left(sent messages)` is true."""
    inbox = [{"type": "http.request", "body": json.dumps(body).encode(), "more_body": False}]
    sent: list[dict] = []

    async def receive():
        if inbox:
            return inbox.pop(0)
        while not left(sent):
            await asyncio.sleep(0.01)
        return {"type": "http.disconnect"}

    async def send(message):
        sent.append(message)

    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
             "path": path, "raw_path": path.encode(), "query_string": b"", "root_path": "",
             "headers": [(b"content-type", b"application/json"), (b"host", b"localhost")],
             "client": ("127.0.0.1", 1), "server": ("test", 80)}
    await asyncio.wait_for(app(scope, receive, send), 10)
    return sent


@pytest.mark.parametrize("path", ["/chat/stream", "/chat"])
async def test_a_client_that_leaves_cancels_the_generation(tmp_path, path):
    from qwend.app import create_app

    backend = FakeBackend("w " * 200, delay=0.01)
    runtime = fake_runtime(tmp_path, backend)
    app = create_app(runtime.settings, runtime)
    app.state.runtime = runtime

    def left(sent):  # streaming: after the first fragment; otherwise while the answer is being generated
        return any(b'"fragment"' in m.get("body", b"") for m in sent) if path.endswith("stream") else backend.active

    sent = await _request_then_leave(app, path, REGULAR, left)
    assert backend.stopped_early == 1 and backend.active == 0
    assert sent[0]["status"] == (200 if path.endswith("stream") else 499)


def test_seed_env_names_set_the_default_models(monkeypatch):
    monkeypatch.setenv("DEFAULT_REGULAR_MODEL", "qwen/qwen3-4b-2507")
    monkeypatch.setenv("DEFAULT_VISION_MODEL", "qwen3-vl-4b-instruct")
    settings = Settings(_env_file=None)
    assert settings.default_regular_model == "qwen/qwen3-4b-2507"
    assert settings.default_vision_model == "qwen3-vl-4b-instruct"
    monkeypatch.delenv("DEFAULT_REGULAR_MODEL")
    monkeypatch.delenv("DEFAULT_VISION_MODEL")
    assert Settings(_env_file=None).default_regular_model is None

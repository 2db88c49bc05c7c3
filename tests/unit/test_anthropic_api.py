"""The Anthropic Messages adapter's wire format, validation and error shapes, on a scripted backend."""

import base64
import json
from dataclasses import replace

import anthropic
import httpx2
import pytest

from tests.conftest import client_for, fake_runtime
from tests.fakes import FakeBackend

URL = "/v1/messages"
HELLO = {"model": "fake.gguf", "max_tokens": 64, "messages": [{"role": "user", "content": "hi"}]}
WEATHER = {"name": "get_weather", "description": "Weather in a city",
           "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}
CALL = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>'
ASK = {**HELLO, "messages": [{"role": "user", "content": "Weather in Paris?"}], "tools": [WEATHER]}
PNG = base64.b64encode(b"\x89PNG\r\n\x1a\n" + b"\0" * 16).decode()


@pytest.fixture
def backend():
    return FakeBackend("Hello there, friend.")


@pytest.fixture
async def client(tmp_path, backend):
    async with client_for(fake_runtime(tmp_path, backend)) as c:
        yield c


async def calling_client(tmp_path, reply=CALL):
    return client_for(fake_runtime(tmp_path, FakeBackend(reply)))


def sse_events(text: str) -> list[tuple[str, dict]]:
    """(event name, data) for each event of an SSE body, keep-alive comments left out."""
    events = []
    for frame in text.replace("\r\n", "\n").split("\n\n"):
        lines = [line for line in frame.split("\n") if line and not line.startswith(":")]
        name = next((line[7:] for line in lines if line.startswith("event: ")), None)
        data = "".join(line[6:] for line in lines if line.startswith("data: "))
        if name:
            events.append((name, json.loads(data)))
    return events


def assert_anthropic_error(reply, status, error_type, words=()):
    assert reply.status_code == status, reply.text
    body = reply.json()
    assert body["type"] == "error" and set(body["error"]) == {"type", "message"}
    assert body["error"]["type"] == error_type
    for word in words:
        assert word in body["error"]["message"]
    return body["error"]["message"]


async def test_non_streaming_body(client, backend):
    reply = await client.post(URL, json=HELLO)
    assert reply.status_code == 200
    body = reply.json()
    assert body["id"].startswith("msg_") and body["type"] == "message" and body["role"] == "assistant"
    assert body["model"] == "fake.gguf"
    assert body["content"] == [{"type": "text", "text": "Hello there, friend."}]
    assert body["stop_reason"] == "end_turn" and body["stop_sequence"] is None
    usage = body["usage"]
    assert usage["output_tokens"] == 3 and usage["cache_creation_input_tokens"] == 0
    assert usage["input_tokens"] + usage["cache_read_input_tokens"] == len(backend.prompts[-1])


async def test_max_tokens_gives_max_tokens(client):
    body = (await client.post(URL, json={**HELLO, "max_tokens": 1})).json()
    assert body["stop_reason"] == "max_tokens"
    assert body["content"] == [{"type": "text", "text": "Hello "}]


async def test_stop_sequence_cuts_the_answer_and_is_reported(client):
    body = (await client.post(URL, json={**HELLO, "stop_sequences": ["zzz", "there", "Hel"]})).json()
    assert body["content"] == [{"type": "text", "text": ""}] or body["content"] == []
    body = (await client.post(URL, json={**HELLO, "stop_sequences": ["zzz", "there"]})).json()
    assert body["content"] == [{"type": "text", "text": "Hello "}]
    assert (body["stop_reason"], body["stop_sequence"]) == ("stop_sequence", "there")
    events = sse_events((await client.post(URL, json={**HELLO, "stop_sequences": ["there"], "stream": True})).text)
    [delta] = [data["delta"] for name, data in events if name == "message_delta"]
    assert delta == {"stop_reason": "stop_sequence", "stop_sequence": "there"}
    plain = (await client.post(URL, json=HELLO)).json()
    assert (plain["stop_reason"], plain["stop_sequence"]) == ("end_turn", None)


async def test_the_sdk_counts_tokens_and_lists_models_in_anthropics_shape(tmp_path):
    backend = FakeBackend("Hello there")
    runtime = fake_runtime(tmp_path, backend)
    from qwend.app import create_app

    app = create_app(runtime.settings, runtime)
    app.state.runtime = runtime
    http = httpx2.AsyncClient(transport=httpx2.ASGITransport(app=app), base_url="http://localhost")
    sdk = anthropic.AsyncAnthropic(base_url="http://localhost", api_key="unused", http_client=http, max_retries=0)
    counted = await sdk.messages.count_tokens(model="fake.gguf", messages=[{"role": "user", "content": "Hi"}],
                                              system="Be brief.")
    assert counted.input_tokens == len("<system>Be brief.<user>Hi<assistant>")  # the fake's prompt, a token a character
    listed = await sdk.models.list()
    assert [(m.type, m.id, m.display_name) for m in listed.data] == [("model", "fake.gguf", "fake.gguf")]
    one = await sdk.models.retrieve("fake.gguf")
    assert one.id == "fake.gguf" and one.created_at.year >= 2020
    with pytest.raises(anthropic.NotFoundError):
        await sdk.models.retrieve("nope:1b")
    await http.aclose()


async def test_system_string_and_blocks_and_turns_reach_the_prompt(client, backend):
    messages = [{"role": "user", "content": [{"type": "text", "text": "one"}, {"type": "text", "text": "two"}]},
                {"role": "assistant", "content": "three"},
                {"role": "user", "content": "four"}]
    await client.post(URL, json={**HELLO, "system": "Be brief.", "messages": messages})
    assert backend.prompts[-1] == "<system>Be brief.<user>one\ntwo<assistant>three<user>four<assistant>"
    await client.post(URL, json={**HELLO, "system": [{"type": "text", "text": "A"}, {"type": "text", "text": "B"}]})
    assert backend.prompts[-1] == "<system>A\nB<user>hi<assistant>"


async def test_streaming_events_in_order(client):
    reply = await client.post(URL, json={**HELLO, "stream": True})
    assert reply.status_code == 200 and reply.headers["content-type"].startswith("text/event-stream")
    events = sse_events(reply.text)
    names = [name for name, _ in events]
    assert names[:3] == ["message_start", "ping", "content_block_start"]
    assert names[-4:] == ["content_block_delta", "content_block_stop", "message_delta", "message_stop"]
    assert all(data["type"] == name for name, data in events)
    start = events[0][1]["message"]
    assert start["id"].startswith("msg_") and start["content"] == [] and start["stop_reason"] is None
    assert start["model"] == "fake.gguf"
    assert events[2][1] == {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}
    deltas = [data for name, data in events if name == "content_block_delta"]
    assert all(d["index"] == 0 and d["delta"]["type"] == "text_delta" for d in deltas)
    assert "".join(d["delta"]["text"] for d in deltas) == "Hello there, friend."
    delta = events[-2][1]
    assert delta["delta"] == {"stop_reason": "end_turn", "stop_sequence": None}
    assert delta["usage"]["output_tokens"] == 3
    assert delta["usage"]["input_tokens"] + delta["usage"]["cache_read_input_tokens"] == (
        start["usage"]["input_tokens"])


async def test_tool_use_non_streaming(tmp_path):
    async with await calling_client(tmp_path) as client:
        body = (await client.post(URL, json=ASK)).json()
    assert body["stop_reason"] == "tool_use"
    [block] = body["content"]
    assert block["type"] == "tool_use" and block["id"].startswith("toolu_")
    assert block["name"] == "get_weather" and block["input"] == {"city": "Paris"}


async def test_tool_use_streaming_blocks(tmp_path):
    async with await calling_client(tmp_path, "Let me look. " + CALL) as client:
        events = sse_events((await client.post(URL, json={**ASK, "stream": True})).text)
    starts = [data for name, data in events if name == "content_block_start"]
    assert [(s["index"], s["content_block"]["type"]) for s in starts] == [(0, "text"), (1, "tool_use")]
    tool = starts[1]["content_block"]
    assert tool["id"].startswith("toolu_") and tool["name"] == "get_weather" and tool["input"] == {}
    pieces = [d["delta"]["partial_json"] for n, d in events if n == "content_block_delta" and d["index"] == 1]
    assert json.loads("".join(pieces)) == {"city": "Paris"}
    stops = [data["index"] for name, data in events if name == "content_block_stop"]
    assert stops == [0, 1]
    assert events[-2][1]["delta"]["stop_reason"] == "tool_use"


async def test_reasoning_becomes_thinking_blocks(tmp_path):
    async with await calling_client(tmp_path, "<think>Paris, surely.</think>It is Paris.") as client:
        body = (await client.post(URL, json=HELLO)).json()
        events = sse_events((await client.post(URL, json={**HELLO, "stream": True})).text)
    assert body["content"] == [{"type": "thinking", "thinking": "Paris, surely.", "signature": ""},
                               {"type": "text", "text": "It is Paris."}]
    starts = [(d["index"], d["content_block"]["type"]) for n, d in events if n == "content_block_start"]
    assert starts == [(0, "thinking"), (1, "text")]
    thinking = "".join(d["delta"]["thinking"] for n, d in events if n == "content_block_delta" and d["index"] == 0)
    assert thinking == "Paris, surely."


async def test_thinking_blocks_sent_back_are_reasoning(tmp_path):
    turn = {"role": "assistant", "content": [{"type": "thinking", "thinking": "hm", "signature": "x"},
                                             {"type": "redacted_thinking", "data": "opaque"},
                                             {"type": "text", "text": "Hi."}]}
    messages = HELLO["messages"] + [turn, {"role": "user", "content": "again"}]
    backend = SeeingBackend()
    async with client_for(fake_runtime(tmp_path, backend)) as client:
        assert (await client.post(URL, json={**HELLO, "messages": messages})).status_code == 200
    assistant = backend.rendered[-1][1]
    assert (assistant.role, assistant.content, assistant.reasoning) == ("assistant", "Hi.", "hm")


async def test_the_sdk_accumulates_a_streamed_tool_call(tmp_path):
    """The official SDK's stream helper folds our events into the same Message the JSON route returns."""
    runtime = fake_runtime(tmp_path, FakeBackend(CALL))
    from qwend.app import create_app

    app = create_app(runtime.settings, runtime)
    app.state.runtime = runtime
    http = httpx2.AsyncClient(transport=httpx2.ASGITransport(app=app), base_url="http://localhost")
    sdk = anthropic.AsyncAnthropic(base_url="http://localhost", api_key="unused", http_client=http, max_retries=0)
    async with sdk.messages.stream(model="fake.gguf", max_tokens=64, tools=[WEATHER],
                                   messages=[{"role": "user", "content": "Weather in Paris?"}]) as stream:
        final = await stream.get_final_message()
    assert final.stop_reason == "tool_use"
    assert [(b.type, b.name, b.input) for b in final.content] == [("tool_use", "get_weather", {"city": "Paris"})]
    plain = await sdk.messages.create(model="fake.gguf", max_tokens=64, messages=[{"role": "user", "content": "x"}],
                                      tools=[WEATHER], tool_choice={"type": "none"})
    assert plain.content[0].type == "text"
    await http.aclose()


async def test_tool_round_trip_becomes_tool_messages(tmp_path):
    backend = FakeBackend("It is sunny.")
    async with client_for(fake_runtime(tmp_path, backend)) as client:
        messages = ASK["messages"] + [
            {"role": "assistant", "content": [
                {"type": "text", "text": "Checking."},
                {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Paris"}}]},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "toolu_1", "content": [{"type": "text", "text": "18C"}]},
                {"type": "tool_result", "tool_use_id": "toolu_2", "content": "no data", "is_error": True},
                {"type": "text", "text": "And now?"}]},
        ]
        body = (await client.post(URL, json={**ASK, "messages": messages})).json()
    assert body["content"] == [{"type": "text", "text": "It is sunny."}]
    assert "<assistant>Checking.<tool>18C<tool>Error: no data<user>And now?" in backend.prompts[-1]


async def test_tool_choice_maps_to_the_core(tmp_path):
    async with await calling_client(tmp_path) as client:
        named = (await client.post(URL, json={**ASK, "tool_choice": {"type": "tool", "name": "get_weather"}})).json()
        assert named["content"][0]["name"] == "get_weather"
        anything = (await client.post(URL, json={**ASK, "tool_choice": {"type": "any"}})).json()
        assert anything["stop_reason"] == "tool_use"
        nothing = (await client.post(URL, json={**ASK, "tool_choice": {"type": "none"}})).json()
        assert nothing["stop_reason"] == "end_turn" and nothing["content"][0]["type"] == "text"


async def test_disable_parallel_tool_use_keeps_one_call(tmp_path):
    async with await calling_client(tmp_path, CALL + "\n" + CALL.replace("Paris", "Rome")) as client:
        both = (await client.post(URL, json=ASK)).json()
        one = (await client.post(URL, json={**ASK, "tool_choice": {"type": "auto", "disable_parallel_tool_use": True}}))
    assert [b["input"]["city"] for b in both["content"]] == ["Paris", "Rome"]
    assert [b["input"]["city"] for b in one.json()["content"]] == ["Paris"]


class SeeingBackend(FakeBackend):
    """A vision model that keeps the messages it was asked to render."""

    def __init__(self):
        super().__init__()
        self.info = replace(self.info, vision=True)
        self.rendered = []

    def render(self, messages, tools=(), thinking=None):
        self.rendered.append(messages)
        return super().render(messages, tools)


async def test_base64_image_reaches_the_model(tmp_path, client):
    image = {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG}}
    body = {**HELLO, "messages": [{"role": "user", "content": [image, {"type": "text", "text": "What is this?"}]}]}
    backend = SeeingBackend()
    async with client_for(fake_runtime(tmp_path, backend)) as seeing:
        assert (await seeing.post(URL, json=body)).status_code == 200
    [message] = backend.rendered[-1]
    assert message.content == "What is this?" and message.images[0].mime_type == "image/png"
    assert message.images[0].data == base64.b64decode(PNG)
    # a model without vision refuses it clearly
    assert_anthropic_error(await client.post(URL, json=body), 400, "invalid_request_error", ["images"])


async def test_output_config_json_schema_is_accepted(client):
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}}
    reply = await client.post(URL, json={**HELLO, "output_config": {"format": {"type": "json_schema", "schema": schema}}})
    assert reply.status_code == 200


async def test_ignored_fields_are_accepted(client):
    extra = {"metadata": {"user_id": "u1"}, "thinking": {"type": "enabled", "budget_tokens": 1024},
             "service_tier": "auto", "temperature": 0, "top_p": 0.9, "top_k": 5}
    system = [{"type": "text", "text": "x", "cache_control": {"type": "ephemeral"}}]
    assert (await client.post(URL, json={**HELLO, **extra, "system": system})).status_code == 200


def user(*blocks):
    return {**HELLO, "messages": [{"role": "user", "content": list(blocks)}]}


@pytest.mark.parametrize(
    "body, words",
    [
        ({"model": "fake.gguf", "messages": HELLO["messages"]}, ["max_tokens"]),
        ({**HELLO, "max_tokens": 0}, ["max_tokens"]),
        ({"max_tokens": 5, "messages": HELLO["messages"]}, ["model"]),
        ({**HELLO, "messages": []}, ["messages"]),
        ({**HELLO, "messages": [{"role": "system", "content": "x"}]}, ["role"]),
        ({**HELLO, "temperature": 1.5}, ["temperature"]),
        ({**HELLO, "stop_sequences": ["x"] * 17}, ["stop_sequences"]),
        ({**HELLO, "messages": HELLO["messages"] + [{"role": "assistant", "content": "The answer is"}]}, ["prefill"]),
        (user({"type": "image", "source": {"type": "url", "url": "https://example.com/a.png"}}), ["base64"]),
        (user({"type": "image", "source": {"type": "base64", "media_type": "image/tiff", "data": PNG}}), ["tiff"]),
        (user({"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "!!"}}), ["base64"]),
        (user({"type": "document", "source": {"type": "text", "data": "x"}}), ["document"]),
        (user({"type": "tool_use", "id": "t", "name": "f", "input": {}}), ["assistant"]),
        (user({"type": "tool_result", "content": "x"}), ["tool_use_id"]),
        (user({"type": "tool_result", "tool_use_id": "t", "content": [{"type": "image"}]}), ["text"]),
        ({**ASK, "tool_choice": {"type": "tool"}}, ["name"]),
        ({**ASK, "tool_choice": {"type": "tool", "name": "nope"}}, ["nope"]),
        ({**HELLO, "tool_choice": {"type": "any"}}, ["tool"]),
        ({**ASK, "tools": [WEATHER, WEATHER]}, ["unique"]),
        ({**ASK, "tools": [{"name": "bad name!", "input_schema": {"type": "object"}}]}, ["name"]),
        ({**ASK, "tools": [{"type": "web_search_20250305", "name": "web_search"}]}, ["web_search_20250305"]),
        ({**ASK, "tools": [{"name": "f"}]}, ["input_schema"]),
        ({**ASK, "tools": [{"name": "f", "input_schema": {"type": "object", "properties": {
            "a": {"$ref": "https://example.com/x.json"}}}}]}, ["$ref"]),
    ],
)
async def test_invalid_bodies_are_400_in_anthropic_shape(client, body, words):
    assert_anthropic_error(await client.post(URL, json=body), 400, "invalid_request_error", words)


async def test_assistant_blocks_must_be_complete(client):
    messages = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": [{"type": "tool_use", "id": "t"}]},
                {"role": "user", "content": "ok"}]
    assert_anthropic_error(await client.post(URL, json={**HELLO, "messages": messages}), 400, "invalid_request_error",
                           ["tool_use", "input"])


async def test_malformed_json_is_400(client):
    reply = await client.post(URL, content=b'{"messages": [', headers={"content-type": "application/json"})
    assert_anthropic_error(reply, 400, "invalid_request_error", ["not valid JSON"])


async def test_unknown_model_is_404(client):
    assert_anthropic_error(await client.post(URL, json={**HELLO, "model": "claude-sonnet-4-5"}), 404,
                           "not_found_error", ["claude-sonnet-4-5"])


async def test_unknown_model_is_404_when_streaming_too(client):
    reply = await client.post(URL, json={**HELLO, "model": "nope", "stream": True})
    assert_anthropic_error(reply, 404, "not_found_error")


async def test_context_overflow_is_400(client):
    message = assert_anthropic_error(await client.post(URL, json={**HELLO, "max_tokens": 500}), 400,
                                     "invalid_request_error", ["512"])
    assert "max_tokens" in message


async def test_error_after_the_stream_started_is_an_error_event(tmp_path):
    from qwend.errors import BackendError

    class FailingBackend(FakeBackend):
        async def generate(self, prompt, params, constraint=None):
            async for item in super().generate(prompt, params, constraint):
                yield item
                raise BackendError("the engine fell over")

    async with client_for(fake_runtime(tmp_path, FailingBackend())) as client:
        events = sse_events((await client.post(URL, json={**HELLO, "stream": True})).text)
    assert events[0][0] == "message_start"
    assert events[-1] == ("error", {"type": "error", "error": {"type": "api_error", "message": "the engine fell over"}})


async def test_the_sdk_reads_errors(tmp_path):
    runtime = fake_runtime(tmp_path, FakeBackend())
    from qwend.app import create_app

    app = create_app(runtime.settings, runtime)
    app.state.runtime = runtime
    async with httpx2.AsyncClient(transport=httpx2.ASGITransport(app=app), base_url="http://localhost") as http:
        sdk = anthropic.AsyncAnthropic(base_url="http://localhost", api_key="unused", http_client=http, max_retries=0)
        with pytest.raises(anthropic.NotFoundError) as caught:
            await sdk.messages.create(model="nope", max_tokens=5, messages=[{"role": "user", "content": "hi"}])
        assert caught.value.body["error"]["type"] == "not_found_error"
        with pytest.raises(anthropic.BadRequestError):
            await sdk.messages.create(model="fake.gguf", max_tokens=0, messages=[{"role": "user", "content": "hi"}])

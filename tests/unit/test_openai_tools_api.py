"""The OpenAI tool-calling and structured-output wire, on a scripted backend."""

import json

import pytest

from tests.conftest import client_for, fake_runtime
from tests.fakes import FakeBackend
from tests.unit.test_openai_api import URL, assert_openai_error

WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "Weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}
TWO_CALLS = ('<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>\n'
             '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Rome"}}\n</tool_call>')
ASK = {"messages": [{"role": "user", "content": "Weather in Paris and Rome?"}], "tools": [WEATHER]}


@pytest.fixture
async def client(tmp_path):
    async with client_for(fake_runtime(tmp_path, FakeBackend(TWO_CALLS))) as c:
        yield c


async def test_non_streaming_tool_calls(client):
    body = (await client.post(URL, json=ASK)).json()
    choice = body["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    message = choice["message"]
    assert message["content"] is None
    assert [(c["type"], c["function"]["name"], json.loads(c["function"]["arguments"])) for c in message["tool_calls"]] == [
        ("function", "get_weather", {"city": "Paris"}), ("function", "get_weather", {"city": "Rome"})]
    assert len({c["id"] for c in message["tool_calls"]}) == 2


async def test_streaming_tool_call_deltas(client):
    reply = await client.post(URL, json={**ASK, "stream": True})
    chunks = [json.loads(l[6:]) for l in reply.text.splitlines() if l.startswith("data: {")]
    deltas = [c["choices"][0]["delta"] for c in chunks]
    call_deltas = [tc for d in deltas for tc in d.get("tool_calls", [])]
    assert {tc["index"] for tc in call_deltas} == {0, 1}
    for index in (0, 1):
        mine = [tc for tc in call_deltas if tc["index"] == index]
        first, rest = mine[0], mine[1:]
        assert first["id"].startswith("call_") and first["type"] == "function"
        assert first["function"]["name"] == "get_weather"
        assert all("id" not in tc and "name" not in tc["function"] for tc in rest)
        arguments = "".join(tc["function"].get("arguments", "") for tc in mine)
        assert json.loads(arguments)["city"] == ("Paris", "Rome")[index]
    assert chunks[-1]["choices"][0]["finish_reason"] == "tool_calls"


async def test_parallel_tool_calls_false_keeps_the_first(client):
    body = (await client.post(URL, json={**ASK, "parallel_tool_calls": False})).json()
    assert [c["function"]["arguments"] for c in body["choices"][0]["message"]["tool_calls"]] == ['{"city": "Paris"}']


async def test_tool_choice_none_hides_the_tools(client):
    body = (await client.post(URL, json={**ASK, "tool_choice": "none"})).json()
    message = body["choices"][0]["message"]
    assert "tool_calls" not in message and message["content"].startswith("<tool_call>")
    assert body["choices"][0]["finish_reason"] == "stop"


async def test_assistant_tool_calls_and_tool_results_are_accepted(client):
    messages = ASK["messages"] + [
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "18C"},
    ]
    assert (await client.post(URL, json={**ASK, "messages": messages})).status_code == 200


@pytest.mark.parametrize("body, param", [
    ({**ASK, "tool_choice": {"type": "function", "function": {"name": "nope"}}}, "tool_choice"),
    ({"messages": ASK["messages"], "tool_choice": "required"}, "tool_choice"),
    ({**ASK, "tools": [WEATHER, WEATHER]}, "tools"),
    ({**ASK, "tools": [{"type": "function", "function": {"name": "bad name!"}}]}, "tools.0.function.name"),
    ({**ASK, "response_format": {"type": "json_schema", "json_schema": {"name": "x"}}}, "response_format.json_schema"),
])
async def test_invalid_tool_requests_are_400(client, body, param):
    assert_openai_error(await client.post(URL, json=body), 400, param=param)


async def test_unknown_tool_in_model_output_stays_content(tmp_path):
    invented = '{"name": "tell_joke", "arguments": {}}'
    async with client_for(fake_runtime(tmp_path, FakeBackend(invented))) as client:
        body = (await client.post(URL, json=ASK)).json()
        message = body["choices"][0]["message"]
        assert "tool_calls" not in message and message["content"] == invented
        health = (await client.get("/health")).json()
        assert health["tool_parse_outcomes"] == {"fell_back": 1}


async def test_a_tool_schema_with_a_remote_ref_is_400(client):
    tool = {"type": "function", "function": {"name": "f", "parameters": {
        "type": "object", "properties": {"a": {"$ref": "https://example.com/x.json"}}}}}
    assert_openai_error(await client.post(URL, json={**ASK, "tools": [tool]}), 400, param="tools[0].function.parameters")

"""/v1/responses over a scripted backend: stored responses and chains (function calls and their outputs kept),
qwend's own tools run server-side, the stream's named events, background runs and cancel, and refusals.
The real model and the openai SDK: tests/real/test_responses_real.py."""

from __future__ import annotations

import asyncio
import json

import pytest

from tests.conftest import client_for, fake_runtime
from tests.fakes import FakeBackend
from tests.sse import named_events

WEATHER = {"type": "function", "name": "get_weather", "description": "Weather for a city",
           "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}


def call(name: str, **arguments) -> str:
    return "<tool_call>\n" + json.dumps({"name": name, "arguments": arguments}) + "\n</tool_call>"


def runtime_for(tmp_path, *replies, delay=0.0):
    backend = FakeBackend(replies=list(replies), context_length=8192, delay=delay)
    return fake_runtime(tmp_path, backend), backend


async def test_a_stored_response_and_its_continuation(tmp_path):
    runtime, backend = runtime_for(tmp_path, "Hello Ada.", "Your name is Ada.")
    async with client_for(runtime) as client:
        first = (await client.post("/v1/responses", json={"input": "I am Ada.", "instructions": "Be brief."})).json()
        assert first["id"].startswith("resp_") and first["object"] == "response" and first["status"] == "completed"
        assert [(o["type"], o["content"][0]["text"]) for o in first["output"]] == [("message", "Hello Ada.")]
        assert first["usage"]["output_tokens"] == 2 and first["instructions"] == "Be brief."
        assert (await client.get(f"/v1/responses/{first['id']}")).json() == first
        listed = (await client.get(f"/v1/responses/{first['id']}/input_items")).json()
        assert listed["object"] == "list" and listed["has_more"] is False
        assert [(i["role"], i["content"]) for i in listed["data"]] == [("user", "I am Ada.")]  # not its output

        second = (await client.post("/v1/responses", json={"input": "Who am I?", "previous_response_id": first["id"]})).json()
        assert second["output"][0]["content"][0]["text"] == "Your name is Ada."
        prompt = backend.prompts[-1]
        assert "<user>I am Ada.<assistant>Hello Ada.<user>Who am I?" in prompt
        assert "Be brief." not in prompt  # instructions belong to their own response only

        assert (await client.delete(f"/v1/responses/{first['id']}")).json()["deleted"] is True
        for reply in (await client.get(f"/v1/responses/{first['id']}"),
                      await client.post("/v1/responses", json={"input": "x", "previous_response_id": first["id"]})):
            assert reply.status_code == 404 and "error" in reply.json()


async def test_function_calls_and_their_outputs_survive_the_chain(tmp_path):
    runtime, backend = runtime_for(tmp_path, call("get_weather", city="Paris"), "It is 18 C in Paris.")
    async with client_for(runtime) as client:
        first = (await client.post("/v1/responses", json={
            "input": "Weather in Paris?", "tools": [WEATHER], "tool_choice": "required"})).json()
        [fc] = first["output"]
        assert (fc["type"], fc["name"], json.loads(fc["arguments"])) == ("function_call", "get_weather", {"city": "Paris"})
        second = (await client.post("/v1/responses", json={
            "previous_response_id": first["id"], "tools": [WEATHER],
            "input": [{"type": "function_call_output", "call_id": fc["call_id"], "output": '{"temp": 18}'}]})).json()
    assert second["output"][0]["content"][0]["text"] == "It is 18 C in Paris."
    # the question, the call (an assistant message: the fake template shows no calls), then its output
    assert '<user>Weather in Paris?<assistant><tool>{"temp": 18}' in backend.prompts[-1]


async def test_qwend_tools_run_here(tmp_path):
    runtime, backend = runtime_for(tmp_path, call("calculator", expression="6*7"), "6 times 7 is 42.")
    async with client_for(runtime) as client:
        reply = (await client.post("/v1/responses", json={"input": "6*7?", "tools": [{"type": "calculator"}]})).json()
        assert [o["type"] for o in reply["output"]] == ["mcp_call", "message"]
        ran = reply["output"][0]
        assert (ran["name"], ran["output"], ran["error"], ran["server_label"]) == ("calculator", "42", None, "qwend")
        for kind in ("no_such_tool", "local_shell", "computer_use_preview"):  # refused by name, in OpenAI's shape
            refused = await client.post("/v1/responses", json={"input": "x", "tools": [{"type": kind}]})
            assert refused.status_code == 400 and refused.json()["error"]["param"] == "tools"
            assert repr(kind) in refused.json()["error"]["message"]


async def test_the_stream_of_named_events(tmp_path):
    runtime, _ = runtime_for(tmp_path, "Hi there.")
    async with client_for(runtime) as client:
        async with client.stream("POST", "/v1/responses", json={"input": "hi", "stream": True}) as reply:
            events = named_events([line async for line in reply.aiter_lines()])
    names = [name for name, _ in events]
    assert names[:4] == ["response.created", "response.in_progress", "response.output_item.added",
                         "response.content_part.added"]
    assert names[-4:] == ["response.output_text.done", "response.content_part.done", "response.output_item.done",
                          "response.completed"]
    assert "".join(data["delta"] for name, data in events if name == "response.output_text.delta") == "Hi there."
    assert [data["sequence_number"] for _, data in events] == list(range(len(events)))
    assert events[-1][1]["response"]["output"][0]["content"][0]["text"] == "Hi there."


async def test_background_then_cancel(tmp_path):
    runtime, backend = runtime_for(tmp_path, "word " * 200, delay=0.05)
    async with client_for(runtime) as client:
        started = (await client.post("/v1/responses", json={"input": "go", "background": True})).json()
        assert started["status"] == "in_progress" and started["background"] is True
        await asyncio.sleep(0.2)
        assert (await client.get(f"/v1/responses/{started['id']}")).json()["status"] == "in_progress"
        cancelled = (await client.post(f"/v1/responses/{started['id']}/cancel")).json()
        assert cancelled["status"] == "cancelled"
        assert (await client.get(f"/v1/responses/{started['id']}")).json()["status"] == "cancelled"
    assert backend.stopped_early == 1 and client._transport.app.state.response_jobs.running == {}


@pytest.mark.parametrize(("body", "status", "says"), [
    ({"input": [{"type": "message", "content": "no role"}]}, 400, "input"),
    ({"input": [{"type": "bogus"}]}, 400, "bogus"),
    ({"input": "x", "tool_choice": "always"}, 400, "tool_choice"),
    ({"input": "x", "previous_response_id": "resp_nope"}, 404, "resp_nope"),
    ({"input": "x", "model": "nope:1b"}, 404, "nope:1b"),
    ({"input": "x", "store": False}, 200, ""),
])
async def test_refusals(tmp_path, body, status, says):
    runtime, _ = runtime_for(tmp_path, "ok")
    async with client_for(runtime) as client:
        reply = await client.post("/v1/responses", json=body)
        assert reply.status_code == status, reply.text
        assert says in json.dumps(reply.json())
        if not body.get("store", True):  # not stored: nothing to get or continue
            assert (await client.get(f"/v1/responses/{reply.json()['id']}")).status_code == 404


async def test_a_repeated_builtin_call_is_not_run_again(tmp_path):
    replies = [call("calculator", expression="6*7"), call("calculator", expression="6*7"), "6 times 7 is 42."]
    backend = FakeBackend(replies=replies, context_length=8192)
    runtime = fake_runtime(tmp_path, backend, answer_after_tool_results=False)  # so the model may call again
    async with client_for(runtime) as client:
        reply = (await client.post("/v1/responses", json={"input": "6*7?", "tools": [{"type": "calculator"}],
                                                          "tool_choice": "required"})).json()
    first, again, answer = reply["output"]
    assert (first["output"], first["error"]) == ("42", None)
    assert again["type"] == "mcp_call" and again["output"] is None and "already made" in again["error"]
    assert answer["content"][0]["text"] == "6 times 7 is 42."


async def test_a_call_for_the_client_ends_the_response_as_a_hand_off(tmp_path):
    # the model calls a qwend tool and the client's function together: the client's turn comes first
    both = call("calculator", expression="1+1") + "\n" + call("get_weather", city="Paris")
    runtime, backend = runtime_for(tmp_path, both, "unused")
    async with client_for(runtime) as client:
        reply = (await client.post("/v1/responses", json={
            "input": "x", "tools": [WEATHER, {"type": "calculator"}], "tool_choice": "required"})).json()
    assert [(o["type"], o["name"]) for o in reply["output"]] == [("function_call", "get_weather")]
    assert reply["status"] == "completed" and len(backend.prompts) == 1


async def test_custom_and_namespaced_tools_come_back_in_their_own_items(tmp_path):
    """Agent CLIs send free-text `custom` tools and `namespace` groups: their calls are custom_tool_call items
    (the text as `input`) and function_call items naming the namespace, and both chain on."""
    sql = {"type": "custom", "name": "run_sql", "description": "Run one SQL query"}
    crm = {"type": "namespace", "name": "crm", "description": "Customer records",
           "tools": [{"type": "function", "name": "find_customer", "parameters": {
               "type": "object", "properties": {"email": {"type": "string"}}, "required": ["email"]}}]}
    runtime, backend = runtime_for(tmp_path, call("run_sql", input="SELECT count(*) FROM users"),
                                   call("find_customer", email="ada@example.com"), "There are 3 users.")
    async with client_for(runtime) as client:
        first = (await client.post("/v1/responses", json={"input": "How many users?", "tools": [sql, crm]})).json()
        [custom] = first["output"]
        assert (custom["type"], custom["name"], custom["input"]) == ("custom_tool_call", "run_sql",
                                                                     "SELECT count(*) FROM users")
        second = (await client.post("/v1/responses", json={
            "previous_response_id": first["id"], "tools": [sql, crm], "tool_choice": "required",
            "input": [{"type": "custom_tool_call_output", "call_id": custom["call_id"], "output": "3"}]})).json()
        [found] = second["output"]
        assert (found["type"], found["name"], found["namespace"]) == ("function_call", "find_customer", "crm")
        third = (await client.post("/v1/responses", json={
            "previous_response_id": second["id"], "tools": [sql, crm],
            "input": [{"type": "function_call_output", "call_id": found["call_id"], "output": "{}"}]})).json()
        assert third["output"][0]["content"][0]["text"] == "There are 3 users."
        assert '<tool>3<assistant><tool>{}' in backend.prompts[-1]


async def test_text_format_is_taken_and_echoed(tmp_path):
    runtime, _ = runtime_for(tmp_path, '{"city": "Paris"}')
    schema = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
    asked = {"type": "json_schema", "name": "place", "schema": schema, "strict": True}
    async with client_for(runtime) as client:
        reply = (await client.post("/v1/responses", json={"input": "Where?", "text": {"format": asked}})).json()
        assert reply["text"] == {"format": asked}
        plain = (await client.post("/v1/responses", json={"input": "Where?"})).json()
        assert plain["text"] == {"format": {"type": "text"}}
        for bad, param in (({"type": "yaml"}, "text.format.type"), ({"type": "json_schema", "name": "x"},
                                                                    "text.format.schema")):
            refused = await client.post("/v1/responses", json={"input": "x", "text": {"format": bad}})
            assert refused.status_code == 400 and refused.json()["error"]["param"] == param

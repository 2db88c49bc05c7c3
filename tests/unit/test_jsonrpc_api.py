"""Seed 003's JSON-RPC 2.0 over WebSocket, in-process on a scripted backend: shapes, the client-side tool
round trip, cancel, disconnect, history handling and every error code."""

import json

import pytest
from starlette.testclient import TestClient
from starlette.websockets import WebSocketDisconnect

from qwend.app import create_app
from tests.conftest import fake_runtime
from tests.fakes import FakeBackend

WEATHER = {"name": "get_weather", "description": "Get the current weather for a location.",
           "parameters": {"type": "object", "properties": {"location": {"type": "string"}}, "required": ["location"]}}
CLOCK = {"type": "function", "function": {"name": "get_time", "description": "The time in a city.",
                                          "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}
SEED_RESULT = {"temperature": "15°C", "condition": "Cloudy"}
LONG = " ".join(f"word{i}" for i in range(400))


def call(name: str, **arguments) -> str:
    return f'<tool_call>\n{json.dumps({"name": name, "arguments": arguments})}\n</tool_call>'


@pytest.fixture
def make(tmp_path):
    """make(*replies, delay=..., context_length=...) -> (client, runtime, backend); the client runs the lifespan."""
    clients = []

    def build(*replies, delay=0.0, context_length=8192):
        backend = FakeBackend(replies=list(replies), delay=delay, context_length=context_length)
        runtime = fake_runtime(tmp_path, backend)
        client = TestClient(create_app(runtime.settings, runtime))
        clients.append(client.__enter__())
        return client, runtime, backend

    yield build
    for client in clients:
        client.__exit__(None, None, None)


def session(client, body=None) -> str:
    reply = client.post("/create_session", json=body) if body is not None else client.post("/create_session")
    assert reply.status_code == 200, reply.text
    return reply.json()["session_id"]


def request(ws, method, params=None, id=1):
    message = {"jsonrpc": "2.0", "method": method, "id": id}
    if params is not None:
        message["params"] = params
    ws.send_json(message)


def until(ws, method="end") -> list[dict]:
    """Every message up to and including the first notification named `method`."""
    seen = []
    while True:
        seen.append(ws.receive_json())
        if seen[-1].get("method") == method:
            return seen


def notes(messages, method) -> list[dict]:
    return [m["params"] for m in messages if m.get("method") == method]


def stored(client, runtime, sid):
    return client.portal.call(runtime.sessions.messages, sid)


def test_create_session_stores_the_tools_in_a_real_session(make):
    client, runtime, _ = make("x")
    sid = session(client, {"tools": [WEATHER, CLOCK]})
    record = client.portal.call(runtime.sessions.get, sid)
    assert [t["name"] for t in record.metadata["tools"]] == ["get_weather", "get_time"]
    assert record.metadata["tools"][1]["parameters"]["properties"] == {"city": {"type": "string"}}
    assert session(client) != session(client, {})  # the body is optional


def test_create_session_extensions_system_prompt_and_model(make):
    client, _, backend = make("Arr.")
    missing = client.post("/create_session", json={"model": "nope:1b"})
    assert missing.status_code == 404 and "nope:1b" in missing.json()["detail"]
    sid = session(client, {"system_prompt": "Talk like a pirate.", "model": "fake.gguf"})
    with client.websocket_connect(f"/ws/{sid}") as ws:
        request(ws, "generate", {"message": "hi"})
        ws.receive_json()
        until(ws)
    assert backend.prompts[-1] == "<system>Talk like a pirate.<user>hi<assistant>"


@pytest.mark.parametrize(("body", "words"), [
    ({"tools": [WEATHER, WEATHER]}, "unique"),
    ({"tools": [{"name": "bad name!"}]}, "tools.0.name"),
    ({"tools": [{**WEATHER, "parameters": {"type": "nonsense"}}]}, "invalid JSON schema"),
    ({"tools": "get_weather"}, "tools"),
])
def test_create_session_rejects_bad_tools(make, body, words):
    client, _, _ = make("x")
    reply = client.post("/create_session", json=body)
    assert reply.status_code == 400 and words in reply.json()["detail"], reply.text


def test_generate_streams_chunks_then_final_text_and_end(make):
    client, runtime, backend = make("Hello there, friend.", "You said hi before.")
    sid = session(client, {"persistent": True})
    with client.websocket_connect(f"/ws/{sid}") as ws:
        request(ws, "generate", {"message": "hi", "max_new_tokens": 64}, id=7)
        assert ws.receive_json() == {"jsonrpc": "2.0", "result": {"status": "processing"}, "id": 7}
        messages = until(ws)
        task = messages[0]["params"]["task_id"]
        assert all(m["params"]["session_id"] == sid and m["params"]["task_id"] == task for m in messages)
        assert "".join(p["chunk"] for p in notes(messages, "text_chunk")) == "Hello there, friend."
        assert [m["method"] for m in messages[-2:]] == ["final_text", "end"]
        assert messages[-2]["params"]["final_text"] == "Hello there, friend."
        assert messages[-1]["params"] == {"session_id": sid, "task_id": task}
        # in a persistent session `message` continues the stored conversation: the second turn sees the first
        request(ws, "generate", {"message": "what did I say?"}, id=8)
        ws.receive_json()
        second = until(ws)
        assert second[0]["params"]["task_id"] != task
    assert "<user>hi<assistant>Hello there, friend.<user>what did I say?" in backend.prompts[-1]
    assert [(m.role, m.content) for m in stored(client, runtime, sid)] == [
        ("user", "hi"), ("assistant", "Hello there, friend."), ("user", "what did I say?"),
        ("assistant", "You said hi before.")]


def test_client_side_tool_round_trip(make):
    client, runtime, backend = make(call("get_weather", location="London"), "It is 15°C and cloudy in London.")
    sid = session(client, {"tools": [WEATHER], "persistent": True})
    with client.websocket_connect(f"/ws/{sid}") as ws:
        request(ws, "generate", {"message": "What is the weather like in London?", "max_new_tokens": 512})
        ws.receive_json()
        asked = until(ws, "function_call_request")[-1]["params"]
        assert asked["session_id"] == sid
        [requested] = asked["tool_calls"]
        assert requested["tool"] == "get_weather" and requested["parameters"] == {"location": "London"}
        request(ws, "tool_result", {"task_id": asked["task_id"], "results": [
            {"tool_name": "get_weather", "result": SEED_RESULT, "isError": False}]}, id=2)
        assert ws.receive_json() == {"jsonrpc": "2.0", "result": {"status": "received"}, "id": 2}
        rest = until(ws)
    assert notes(rest, "final_text")[0]["final_text"] == "It is 15°C and cloudy in London."
    assert '<tool>{"temperature": "15°C", "condition": "Cloudy"}' in backend.prompts[-1]
    roles = [(m.role, m.name) for m in stored(client, runtime, sid)]
    assert roles == [("user", None), ("assistant", None), ("tool", "get_weather"), ("assistant", None)]


def test_a_tool_error_reaches_the_model(make):
    client, _, backend = make(call("get_weather", location="Atlantis"), "I could not find Atlantis.")
    sid = session(client, {"tools": [WEATHER]})
    with client.websocket_connect(f"/ws/{sid}") as ws:
        request(ws, "generate", {"message": "Weather in Atlantis?"})
        ws.receive_json()
        task = until(ws, "function_call_request")[-1]["params"]["task_id"]
        request(ws, "tool_result", {"task_id": task, "results": [
            {"tool_name": "get_weather", "isError": True, "error_message": "no such place"}]})
        ws.receive_json()
        until(ws)
    assert "<tool>Error: no such place" in backend.prompts[-1]


def test_request_tools_replace_the_session_tools(make):
    client, _, _ = make(call("get_time", city="Oslo"))
    sid = session(client, {"tools": [WEATHER]})
    with client.websocket_connect(f"/ws/{sid}") as ws:
        request(ws, "generate", {"message": "Time in Oslo?"})  # get_time is no tool of the session: text
        ws.receive_json()
        assert "get_time" in notes(until(ws), "final_text")[0]["final_text"]
        request(ws, "generate", {"message": "Time in Oslo?", "tools": [CLOCK]})
        ws.receive_json()
        asked = until(ws, "function_call_request")[-1]["params"]
        assert asked["tool_calls"][0]["tool"] == "get_time"


def test_history_is_answered_as_sent_and_not_stored(make):
    client, runtime, backend = make("Blue.")
    sid = session(client)
    history = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Sky colour?"},
               {"role": "assistant", "content": "Blue."}, {"role": "user", "content": "And the sea?"}]
    with client.websocket_connect(f"/ws/{sid}") as ws:
        request(ws, "generate", {"history": history, "do_sample": False})
        ws.receive_json()
        assert notes(until(ws), "final_text")[0]["final_text"] == "Blue."
    assert backend.prompts[-1] == "<system>Be brief.<user>Sky colour?<assistant>Blue.<user>And the sea?<assistant>"
    assert stored(client, runtime, sid) == []


def test_cancel_stops_the_backend_and_the_socket_stays_usable(make):
    client, runtime, backend = make(LONG, "Short answer.", delay=0.01)
    sid = session(client, {"persistent": True})
    with client.websocket_connect(f"/ws/{sid}") as ws:
        request(ws, "generate", {"message": "talk a lot"})
        ws.receive_json()
        first = until(ws, "text_chunk")[-1]["params"]["task_id"]
        request(ws, "cancel", id=5)
        after = []
        while (message := ws.receive_json()).get("id") != 5:
            after.append(message)
        assert message == {"jsonrpc": "2.0", "result": {"status": "cancelled"}, "id": 5}
        assert ws.receive_json() == {"jsonrpc": "2.0", "method": "end", "params": {"session_id": sid, "task_id": first}}
        assert backend.stopped_early == 1 and backend.active == 0
        request(ws, "generate", {"message": "again"}, id=6)
        assert ws.receive_json()["result"] == {"status": "processing"}
        rest = until(ws)
    assert all(m["method"] == "text_chunk" for m in after)
    assert {m["params"]["task_id"] for m in rest} != {first}
    assert notes(rest, "final_text")[0]["final_text"] == "Short answer."
    # the cancelled turn is kept as far as it came, marked stopped; the next one after it
    kept = stored(client, runtime, sid)
    assert [(m.role, m.stopped) for m in kept] == [("user", False), ("assistant", True), ("user", False),
                                                   ("assistant", False)]
    assert kept[0].content == "talk a lot" and LONG.startswith(kept[1].content) and kept[1].content
    assert [m.content for m in kept[2:]] == ["again", "Short answer."]


def test_cancel_while_waiting_for_a_tool_result(make):
    client, runtime, _ = make(call("get_weather", location="Paris"), "never")
    sid = session(client, {"tools": [WEATHER]})
    with client.websocket_connect(f"/ws/{sid}") as ws:
        request(ws, "generate", {"message": "Weather in Paris?"})
        ws.receive_json()
        task = until(ws, "function_call_request")[-1]["params"]["task_id"]
        request(ws, "cancel", id=3)
        assert ws.receive_json()["result"] == {"status": "cancelled"}
        assert ws.receive_json() == {"jsonrpc": "2.0", "method": "end", "params": {"session_id": sid, "task_id": task}}
        request(ws, "tool_result", {"task_id": task, "results": [{"tool_name": "get_weather", "result": 1}]}, id=4)
        assert ws.receive_json()["error"]["code"] == -32002
    assert stored(client, runtime, sid) == []


def test_errors_after_processing_arrive_as_error_notifications(make):
    client, _, _ = make("x", context_length=64)
    sid = session(client)
    with client.websocket_connect(f"/ws/{sid}") as ws:
        request(ws, "generate", {"message": "long " * 40})
        assert ws.receive_json()["result"] == {"status": "processing"}
        messages = until(ws)
    [error] = notes(messages, "error")
    assert error["error"]["code"] == -32602 and "context window" in error["error"]["message"]
    assert error["session_id"] == sid and error["task_id"] == messages[-1]["params"]["task_id"]


def test_unknown_session_gets_an_error_then_a_1008_close(make):
    client, _, _ = make("x")
    with client.websocket_connect("/ws/no-such-session") as ws:
        message = ws.receive_json()
        assert message["method"] == "error" and message["params"]["session_id"] == "no-such-session"
        assert message["params"]["error"]["code"] == -32000
        with pytest.raises(WebSocketDisconnect) as closed:
            ws.receive_json()
    assert closed.value.code == 1008


@pytest.mark.parametrize(("raw", "code", "id_"), [
    ("{not json", -32700, None),
    ("[]", -32600, None),
    ('[{"jsonrpc": "2.0", "method": "cancel", "id": 1}]', -32600, None),
    ("42", -32600, None),
    ('{"jsonrpc": "1.0", "method": "cancel", "id": 3}', -32600, 3),
    ('{"jsonrpc": "2.0", "id": 4}', -32600, 4),
    ('{"jsonrpc": "2.0", "method": "cancel", "id": {"a": 1}}', -32600, None),
    ('{"jsonrpc": "2.0", "method": "summon", "id": "x"}', -32601, "x"),
    ('{"jsonrpc": "2.0", "method": "generate", "params": {"message": "hi", "temperature": 9}, "id": 5}', -32602, 5),
    ('{"jsonrpc": "2.0", "method": "generate", "params": {}, "id": 6}', -32602, 6),
    ('{"jsonrpc": "2.0", "method": "generate", "params": ["hi"], "id": 7}', -32602, 7),
    ('{"jsonrpc": "2.0", "method": "generate", "params": {"message": "hi", "tools": [{"name": "a b"}]}, "id": 8}',
     -32602, 8),
    ('{"jsonrpc": "2.0", "method": "tool_result", "params": {"task_id": "t"}, "id": 9}', -32602, 9),
    ('{"jsonrpc": "2.0", "method": "tool_result", "params": {"task_id": "t", "results": [{"tool_name": "f"}]}, '
     '"id": 10}', -32002, 10),
    ('{"jsonrpc": "2.0", "method": "cancel", "id": 11}', -32003, 11),
])
def test_error_codes(make, raw, code, id_):
    client, _, _ = make("x")
    with client.websocket_connect(f"/ws/{session(client)}") as ws:
        ws.send_text(raw)
        reply = ws.receive_json()
    assert reply["jsonrpc"] == "2.0" and reply["id"] == id_ and reply["error"]["code"] == code, reply
    assert reply["error"]["message"]


def test_invalid_params_message_names_the_field(make):
    client, _, _ = make("x")
    with client.websocket_connect(f"/ws/{session(client)}") as ws:
        request(ws, "generate", {"message": "hi", "top_p": 2})
        assert "top_p" in ws.receive_json()["error"]["message"]


def test_a_second_generate_while_one_runs_is_refused(make):
    client, _, _ = make(LONG, delay=0.01)
    with client.websocket_connect(f"/ws/{session(client)}") as ws:
        request(ws, "generate", {"message": "talk"}, id=1)
        ws.receive_json()
        request(ws, "generate", {"message": "again"}, id=2)
        while "id" not in (reply := ws.receive_json()):
            pass
        assert reply["id"] == 2 and reply["error"]["code"] == -32001
        request(ws, "cancel", id=3)
        while ws.receive_json().get("id") != 3:
            pass


def test_a_tool_result_for_another_tool_is_invalid_params_and_the_call_still_waits(make):
    client, _, _ = make(call("get_weather", location="Rome"), "Sunny.")
    with client.websocket_connect(f"/ws/{session(client, {'tools': [WEATHER]})}") as ws:
        request(ws, "generate", {"message": "Weather in Rome?"})
        ws.receive_json()
        task = until(ws, "function_call_request")[-1]["params"]["task_id"]
        request(ws, "tool_result", {"task_id": task, "results": [{"tool_name": "get_time", "result": 1}]}, id=2)
        assert ws.receive_json()["error"]["code"] == -32602
        request(ws, "tool_result", {"task_id": task, "results": [{"tool_name": "get_weather", "result": "sun"}]}, id=3)
        assert ws.receive_json()["result"] == {"status": "received"}
        assert notes(until(ws), "final_text")[0]["final_text"] == "Sunny."


def test_notifications_get_no_response(make):
    client, _, _ = make("x")
    with client.websocket_connect(f"/ws/{session(client)}") as ws:
        ws.send_json({"jsonrpc": "2.0", "method": "summon"})
        ws.send_json({"jsonrpc": "2.0", "method": "cancel"})
        request(ws, "cancel", id=9)
        assert ws.receive_json()["id"] == 9


def test_sampling_params_reach_the_backend(make, monkeypatch):
    client, runtime, backend = make("ok")
    seen = []
    generate = backend.generate

    def spy(prompt, params, constraint=None):
        seen.append(params)
        return generate(prompt, params, constraint)

    monkeypatch.setattr(backend, "generate", spy)
    with client.websocket_connect(f"/ws/{session(client)}") as ws:
        request(ws, "generate", {"message": "hi", "max_new_tokens": 9, "temperature": 0.3, "top_p": 0.5,
                                 "top_k": 7, "repetition_penalty": 1.2, "unknown_knob": True})
        ws.receive_json()
        until(ws)
        request(ws, "generate", {"message": "hi", "temperature": 0.9, "do_sample": False})
        ws.receive_json()
        until(ws)
    first, greedy = seen
    knobs = (first.max_tokens, first.temperature, first.top_p, first.top_k, first.repeat_penalty)
    assert knobs == (9, 0.3, 0.5, 7, 1.2)
    assert greedy.temperature == 0.0


def test_a_session_keeps_its_tools_across_a_restart(make):
    client, _, _ = make("x")
    sid = session(client, {"tools": [WEATHER]})
    # a second runtime over the same data dir, as a restarted daemon would be
    restarted, _, _ = make(call("get_weather", location="Lima"))
    with restarted.websocket_connect(f"/ws/{sid}") as ws:
        request(ws, "generate", {"message": "Weather in Lima?"})
        ws.receive_json()
        assert until(ws, "function_call_request")[-1]["params"]["tool_calls"][0]["tool"] == "get_weather"


def test_a_session_with_unreadable_tools_is_an_internal_error(make):
    client, runtime, _ = make("x")
    record = client.portal.call(lambda: runtime.sessions.create("general", None, None, {"tools": "oops"}))
    with client.websocket_connect(f"/ws/{record.id}") as ws:
        request(ws, "generate", {"message": "hi"}, id=4)
        reply = ws.receive_json()
    assert reply["id"] == 4 and reply["error"]["code"] == -32603 and "invalid tools" in reply["error"]["message"]


@pytest.mark.parametrize("in_session", [False, True])
async def test_closing_a_turn_between_events_stops_its_job_at_once(tmp_path, in_session):
    # a cancel can land while the socket sends a chunk, with the turn suspended at a yield, not an await
    from qwend.agents.turns import Turn, run_turn
    from qwend.types import Token

    backend = FakeBackend(LONG, delay=0.01, context_length=8192)
    runtime = fake_runtime(tmp_path, backend)
    session = await runtime.sessions.create("general") if in_session else None
    events = run_turn(runtime, Turn("talk", profile="general", session=session))
    async for event in events:
        if isinstance(event, Token):
            break
    await events.aclose()
    assert backend.active == 0 and backend.stopped_early == 1

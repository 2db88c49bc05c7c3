"""Seed 000's chat and sessions: the tool loop, its guards, the SSE progress stream, per-session order and
context folding, on a scripted backend."""

import asyncio
import json

import pytest

from qwend.sessions.context import SUMMARIZE
from tests.conftest import client_for, fake_runtime
from tests.fakes import FakeBackend
from tests.sse import named_events


def call(name: str, **arguments) -> str:
    return f'<tool_call>\n{json.dumps({"name": name, "arguments": arguments})}\n</tool_call>'


def runtime_for(tmp_path, *replies, context_length=8192, delay=0.0, **settings):
    backend = FakeBackend(replies=list(replies), context_length=context_length, delay=delay)
    return fake_runtime(tmp_path, backend, **settings), backend


def sse_events(text: str) -> list[tuple[str, dict]]:
    return named_events(text.splitlines())


async def test_stateless_chat_runs_tools_server_side(tmp_path):
    runtime, backend = runtime_for(tmp_path, call("calculator", expression="2**10"), "2 to the 10th is 1024.")
    async with client_for(runtime) as client:
        reply = await client.post("/v1/chat", json={"message": "What is 2**10?", "profile": "general"})
    assert reply.status_code == 200, reply.text
    body = reply.json()
    assert body["response"] == "2 to the 10th is 1024."
    assert body["profile"] == "general" and body["model"] == "fake.gguf" and body["session_id"] is None
    assert [(c["name"], c["arguments"], c["result"]) for c in body["tool_calls"]] == [
        ("calculator", '{"expression": "2**10"}', {"success": True, "result": "1024", "error": None})
    ]
    assert body["finish_reason"] == "stop" and body["usage"]["steps"] == 2
    assert "<tool>1024" in backend.prompts[-1]  # the result went back to the model as a tool message


async def test_tool_errors_are_fed_back_and_repeats_are_not_rerun(tmp_path):
    runtime, backend = runtime_for(
        tmp_path,
        call("calculator", expression="1/0"),  # a tool error: the model may try again
        call("calculator", expression="1/0"),  # the same call again: not run
        call("calculator", expression="1+1"),
        "It is 2.",
    )
    async with client_for(runtime) as client:
        body = (await client.post("/v1/chat", json={"message": "1+1?"})).json()
    results = [c["result"] for c in body["tool_calls"]]
    assert results[0] == {"success": False, "result": None, "error": "division by zero"}
    assert "<tool>Error: division by zero" in backend.prompts[1]
    assert results[1]["success"] is False and "already made" in results[1]["error"]
    assert results[2] == {"success": True, "result": "2", "error": None}
    assert body["response"] == "It is 2."


async def test_after_successful_results_the_model_answers(tmp_path):
    # without tool_chaining, the step after a successful round may not call: its call-shaped text is text
    runtime, _ = runtime_for(tmp_path, call("calculator", expression="2+2"), call("calculator", expression="4"))
    async with client_for(runtime) as client:
        body = (await client.post("/v1/chat", json={"message": "2+2?"})).json()
    assert len(body["tool_calls"]) == 1 and body["usage"]["steps"] == 2


async def test_max_tool_steps_then_an_answer_without_tools(tmp_path):
    profiles = tmp_path / "profiles"
    profiles.mkdir()
    (profiles / "chain.toml").write_text('name = "chain"\ntools = ["calculator"]\nmax_tool_steps = 3\ntool_chaining = true\n')
    runtime, _ = runtime_for(tmp_path, *[call("calculator", expression=str(i)) for i in range(5)], "Done.",
                             profiles_dir=profiles)
    async with client_for(runtime) as client:
        body = (await client.post("/v1/chat", json={"message": "loop", "profile": "chain"})).json()
    assert len(body["tool_calls"]) == 3  # then the 4th generation may not call: its call stays text
    assert body["usage"]["steps"] == 4


async def test_sse_progress_events(tmp_path):
    runtime, _ = runtime_for(tmp_path, call("calculator", expression="3*3"), "Nine.")
    async with client_for(runtime) as client:
        reply = await client.post("/v1/chat", json={"message": "3*3?", "stream": True})
    assert reply.headers["content-type"].startswith("text/event-stream")
    events = sse_events(reply.text)
    names = [name for name, _ in events]
    assert names[0] == "started" and names[-2:] == ["usage", "done"]
    assert names.index("tool_call") < names.index("tool_result") < names.index("token")
    assert dict(events)["tool_result"] == {"id": dict(events)["tool_call"]["id"], "name": "calculator",
                                           "success": True, "result": "9", "error": None}
    assert "".join(d["text"] for n, d in events if n == "token") == "Nine."
    assert events[-1][1] == {"finish_reason": "stop", "session_id": None, "response": "Nine."}


async def test_session_lifecycle_and_history(tmp_path):
    runtime, _ = runtime_for(tmp_path, call("calculator", expression="6*7"), "42.", "You asked about 6*7.")
    async with client_for(runtime) as client:
        created = (await client.post("/v1/sessions", json={"profile_name": "general", "title": "math"})).json()
        sid = created["session_id"]
        assert created["profile_name"] == "general" and created["title"] == "math"
        first = (await client.post(f"/v1/sessions/{sid}/chat", json={"message": "6*7?"})).json()
        assert first["response"] == "42." and first["session_id"] == sid
        second = (await client.post(f"/v1/sessions/{sid}/chat", json={"message": "What did I ask?"})).json()
        assert second["response"] == "You asked about 6*7."
        history = (await client.get(f"/v1/sessions/{sid}")).json()
        roles = [(m["turn"], m["role"]) for m in history["messages"]]
        assert roles == [(1, "user"), (1, "assistant"), (1, "tool"), (1, "assistant"), (2, "user"), (2, "assistant")]
        assert history["messages"][1]["tool_calls"][0]["name"] == "calculator"
        assert history["messages"][2]["content"] == "42" and history["messages"][3]["completion_tokens"] > 0
        assert [s["session_id"] for s in (await client.get("/v1/sessions")).json()["sessions"]] == [sid]
        assert (await client.delete(f"/v1/sessions/{sid}")).json() == {"deleted": True, "session_id": sid}
        missing = await client.get(f"/v1/sessions/{sid}")
        assert missing.status_code == 404 and "detail" in missing.json()


async def test_a_busy_session_queues_the_next_message_in_order(tmp_path):
    runtime, _ = runtime_for(tmp_path, "first answer is slow", "second answer", delay=0.05)
    async with client_for(runtime) as client:
        sid = (await client.post("/v1/sessions", json={"profile_name": "general"})).json()["session_id"]
        first = asyncio.create_task(client.post(f"/v1/sessions/{sid}/chat", json={"message": "one"}))
        await asyncio.sleep(0.05)
        second = await client.post(f"/v1/sessions/{sid}/chat", json={"message": "two", "stream": True})
        await first
        assert sse_events(second.text)[0] == ("queued", {"position": 1})
        history = (await client.get(f"/v1/sessions/{sid}")).json()["messages"]
    assert [(m["turn"], m["content"]) for m in history] == [
        (1, "one"), (1, "first answer is slow"), (2, "two"), (2, "second answer")
    ]


async def test_rename_a_session(tmp_path):
    runtime, _ = runtime_for(tmp_path, "x")
    async with client_for(runtime) as client:
        created = (await client.post("/v1/sessions", json={"profile_name": "general"})).json()
        sid = created["session_id"]
        renamed = await client.patch(f"/v1/sessions/{sid}", json={"title": "  Primes, again "})
        assert renamed.status_code == 200, renamed.text
        assert renamed.json()["title"] == "Primes, again" and renamed.json()["updated_at"] >= created["updated_at"]
        assert (await client.get(f"/v1/sessions/{sid}")).json()["title"] == "Primes, again"
        assert (await client.get("/v1/sessions")).json()["sessions"][0]["title"] == "Primes, again"
        for body in ({"title": " "}, {"title": "x" * 201}, {}):
            bad = await client.patch(f"/v1/sessions/{sid}", json=body)
            assert bad.status_code == 400 and "title" in bad.json()["detail"], bad.text
        missing = await client.patch("/v1/sessions/0123", json={"title": "t"})
        assert missing.status_code == 404 and "0123" in missing.json()["detail"]
        assert (await client.get(f"/v1/sessions/{sid}")).json()["title"] == "Primes, again"


@pytest.mark.parametrize(
    ("path", "body", "status", "words"),
    [
        ("/v1/chat", {"message": "hi", "profile": "nobody"}, 404, "no profile named 'nobody'"),
        ("/v1/chat", {"message": "hi", "model_size": "huge"}, 400, "model_size"),
        ("/v1/chat", {"message": "  "}, 400, "message is empty"),
        ("/v1/chat", {"message": "hi", "model": "nope:1b"}, 404, "nope:1b"),
        ("/v1/sessions", {"profile_name": "nobody"}, 404, "no profile named"),
        ("/v1/sessions/0123/chat", {"message": "hi"}, 404, "0123"),
    ],
)
async def test_bad_requests(tmp_path, path, body, status, words):
    runtime, _ = runtime_for(tmp_path, "x")
    async with client_for(runtime) as client:
        reply = await client.post(path, json=body)
    assert reply.status_code == status and words in reply.json()["detail"], reply.text


class Summarizing(FakeBackend):
    """Answers the summary request with a summary, and everything else with a long answer."""

    def render(self, messages, tools=(), thinking=None):
        prompt = super().render(messages, tools)
        summarizing = messages[0].content == SUMMARIZE
        self.reply = "SUMMARY: the user counted." if summarizing else "An answer: " + "words " * 40
        return prompt


@pytest.mark.parametrize("mode", ["summarize", "drop"])
async def test_old_turns_fold_when_the_window_fills(tmp_path, mode):
    # character tokens: a 900-token window with 100 kept for the reply holds about three turns
    backend = Summarizing(context_length=900)
    runtime = fake_runtime(tmp_path, backend, reply_reserve=100, context_overflow=mode)
    async with client_for(runtime) as client:
        sid = (await client.post("/v1/sessions", json={"profile_name": "code_runner"})).json()["session_id"]
        for i in range(6):
            reply = await client.post(f"/v1/sessions/{sid}/chat", json={"message": f"Message {i} " + "x" * 40})
            assert reply.status_code == 200, reply.text
        history = (await client.get(f"/v1/sessions/{sid}")).json()
    summaries = [m for m in history["messages"] if m["role"] == "summary"]
    expected = "SUMMARY: the user counted." if mode == "summarize" else "earlier messages were dropped"
    assert summaries and expected in summaries[-1]["content"] and not summaries[-1]["folded"]
    assert history["folded_messages"] > 0 and history["messages"][0]["folded"] is True
    assert history["messages"][-2]["content"].startswith("Message 5") and not history["messages"][-1]["folded"]
    assert len(history["messages"]) == 12 + len(summaries)  # nothing is deleted
    assert expected in backend.prompts[-1]  # the model sees the summary in its system prompt


async def test_profiles_endpoints_and_user_profiles(tmp_path):
    user_dir = tmp_path / "profiles"
    user_dir.mkdir()
    (user_dir / "pirate.toml").write_text('name = "pirate"\ndescription = "Arr."\nsystem_prompt = "Talk like a pirate."\n')
    (user_dir / "broken.toml").write_text("name = 'x'\nunknown_field = 1\n")
    runtime, _ = runtime_for(tmp_path, "Arr!", profiles_dir=user_dir)
    async with client_for(runtime) as client:
        names = [p["name"] for p in (await client.get("/v1/profiles")).json()["profiles"]]
        assert {"general", "mirror", "code_runner", "pirate"} <= set(names) and "x" not in names
        mirror = (await client.get("/v1/profiles/mirror")).json()
        assert mirror["tools"] == ["search_linear_issues", "get_current_datetime"] and mirror["source"] == "builtin"
        assert (await client.get("/v1/profiles/nobody")).status_code == 404
        assert "pirate" in (await client.get("/health")).json()["available_profiles"]
        assert (await client.post("/v1/chat", json={"message": "hi", "profile": "pirate"})).json()["response"] == "Arr!"

"""Seed 000's workflows, the SSE progress stream, a long session past the window and a crash mid-turn,
against real `qwend serve` processes and the real default model."""

import threading

import httpx
import pytest

from tests.conftest import Daemon
from tests.sse import named_events

CHATTY = 'name = "chatty"\ndescription = "No tools."\nsystem_prompt = "You are a friendly assistant. Answer in three sentences."\n'


def test_seed_000_stateless_chat(daemon):
    reply = httpx.post(f"{daemon}/v1/chat", json={"message": "What is 2 + 2?", "profile": "general"}, timeout=300)
    assert reply.status_code == 200, reply.text
    body = reply.json()
    assert body["response"].strip() and body["profile"] == "general" and body["model"] == "qwen2.5-coder:0.5b"
    for call in body["tool_calls"]:  # whatever the model chose to call ran and has its result
        assert set(call["result"]) == {"success", "result", "error"}


def test_seed_000_session_chat_with_the_mirror_profile(daemon):
    client = httpx.Client(base_url=daemon, timeout=300)
    session = client.post("/v1/sessions", json={"profile_name": "mirror"}).json()
    sid = session["session_id"]
    reply = client.post(f"/v1/sessions/{sid}/chat", json={"message": "What Linear issues are in progress?"})
    assert reply.status_code == 200, reply.text
    body = reply.json()
    assert body["response"].strip() and body["session_id"] == sid
    for call in body["tool_calls"]:  # no Linear key here: that tool cannot work, so it is not offered
        assert call["name"] == "get_current_datetime"
    history = client.get(f"/v1/sessions/{sid}").json()["messages"]
    assert history[0] == {**history[0], "role": "user", "content": "What Linear issues are in progress?", "turn": 1}
    assert history[-1]["role"] == "assistant" and history[-1]["content"] == body["response"]
    assert {m["turn"] for m in history} == {1}


def test_progress_stream_with_a_tool_run_by_the_code_runner(daemon):
    client = httpx.Client(base_url=daemon, timeout=300)
    question = {"message": "Use Python to compute the sum of the squares of 1 to 10.", "profile": "code_runner",
                "stream": True}
    with client.stream("POST", "/v1/chat", json=question) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        events = named_events(response.iter_lines())
    names = [name for name, _ in events]
    assert names[0] in ("queued", "started") and names[-2:] == ["usage", "done"]
    assert set(names) <= {"queued", "started", "progress", "reasoning", "token", "tool_call", "tool_result", "usage",
                          "done"}
    results = [data for name, data in events if name == "tool_result"]
    calls = [data for name, data in events if name == "tool_call"]
    assert [c["id"] for c in calls] == [r["id"] for r in results]
    print("code_runner calls:", calls, "results:", results, "answer:", events[-1][1]["response"])


def test_a_long_prompt_reports_how_far_it_is_read(daemon):
    """A long first turn streams `progress` (prompt tokens read of total, as llama-server's return_progress)
    while its prompt is read in chunks, before the first token."""
    client = httpx.Client(base_url=daemon, timeout=300)
    notes = "\n".join(f"Note {i}: the shipment of crate {i} left the harbour on day {i % 30 + 1}." for i in range(120))
    question = {"message": f"{notes}\n\nWhich day did crate 7 leave? Answer with the day only.",
                "profile": "general", "stream": True, "max_tokens": 8}
    with client.stream("POST", "/v1/chat", json=question) as response:
        events = named_events(response.iter_lines())
    names = [name for name, _ in events]
    progress = [data for name, data in events if name == "progress"]
    started = next(data for name, data in events if name == "started")
    assert progress, names
    first = [p for p in progress if p["total"] == started["prompt_tokens"]]  # the answer's own prompt
    assert len(first) >= 2 and [p["read"] for p in first] == sorted({p["read"] for p in first})  # it grows
    assert 0 < first[-1]["read"] < first[-1]["total"]
    assert names.index("progress") < min([names.index(n) for n in ("token", "tool_call") if n in names] or [99])


@pytest.fixture(scope="module")
def small_window_daemon(model_path, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("small-window")
    (workdir / "profiles").mkdir()
    (workdir / "profiles" / "chatty.toml").write_text(CHATTY)
    server = Daemon(workdir, QWEND_CONTEXT_LENGTH="1024", QWEND_REPLY_RESERVE="160",
                    QWEND_PROFILES_DIR=str(workdir / "profiles")).start()
    yield server
    server.stop()


def test_twenty_turns_past_the_window_with_a_visible_summary(small_window_daemon):
    client = httpx.Client(base_url=small_window_daemon.url, timeout=300)
    sid = client.post("/v1/sessions", json={"profile_name": "chatty"}).json()["session_id"]
    facts = ["My name is Ada.", "I live in Lisbon.", "I have a cat called Tux."]
    for turn in range(20):
        # long enough that the user's messages alone overflow the window, however short the replies are
        message = facts[turn] if turn < len(facts) else (
            f"Tell me three facts about the number {turn}. I collect facts about numbers for a quiz I am writing, "
            "so each fact should be short, true and surprising to most readers.")
        reply = client.post(f"/v1/sessions/{sid}/chat", json={"message": message, "max_tokens": 60})
        assert reply.status_code == 200, f"turn {turn}: {reply.text}"
    history = client.get(f"/v1/sessions/{sid}").json()
    summaries = [m for m in history["messages"] if m["role"] == "summary"]
    assert summaries, "a 1024-token window cannot hold 20 turns without folding"
    assert summaries[-1]["content"].strip() and not summaries[-1]["folded"]
    assert history["folded_messages"] > 0
    assert len([m for m in history["messages"] if m["role"] == "user"]) == 20  # nothing was lost
    recall = client.post(f"/v1/sessions/{sid}/chat", json={"message": "What is my name?", "max_tokens": 30}).json()
    print("summaries:", [s["content"] for s in summaries], "recall:", recall["response"])


def test_sigkill_mid_turn_keeps_every_completed_turn(model_path, tmp_path):
    server = Daemon(tmp_path).start()
    client = httpx.Client(base_url=server.url, timeout=300)
    sid = client.post("/v1/sessions", json={"profile_name": "general"}).json()["session_id"]
    for question in ("Say hello.", "Say goodbye."):
        assert client.post(f"/v1/sessions/{sid}/chat", json={"message": question, "max_tokens": 20}).status_code == 200
    long_turn = {"message": "Count from 1 to 500, one number per line.", "stream": True, "temperature": 0}
    tokens = threading.Event()

    def stream() -> None:
        try:
            with client.stream("POST", f"/v1/sessions/{sid}/chat", json=long_turn) as response:
                for line in response.iter_lines():
                    if line.startswith("event: token"):
                        tokens.set()
        except httpx.HTTPError:
            pass  # the daemon died under it

    reader = threading.Thread(target=stream)
    reader.start()
    assert tokens.wait(120), "the long turn never started generating"
    server.kill()
    reader.join(30)
    server.start()  # same data dir, a fresh process
    history = httpx.get(f"{server.url}/v1/sessions/{sid}", timeout=30).json()["messages"]
    server.stop()
    turns = {}
    for message in history:
        turns.setdefault(message["turn"], []).append(message)
    assert sorted(turns) == [1, 2]  # both completed turns, nothing of the third
    for number, question in ((1, "Say hello."), (2, "Say goodbye.")):
        turn = turns[number]
        assert turn[0]["role"] == "user" and turn[0]["content"] == question
        assert turn[-1]["role"] == "assistant" and not turn[-1]["tool_calls"]  # each ends with its answer

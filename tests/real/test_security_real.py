"""Access control, request ids, the log file and graceful shutdown on a real `qwend serve` with the real
default model: a daemon with an API key, reached as a hostile page would (another Host, another Origin, a
cross-origin WebSocket), and a daemon stopped with SIGTERM while it streams."""

import json
import signal
import threading
import time

import httpx
import openai
import pytest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from tests.conftest import Daemon

KEY = "qwend-test-key-for-the-security-suite"
CHAT = {"model": "qwen2.5-coder:0.5b", "messages": [{"role": "user", "content": "Say hello."}], "max_tokens": 8,
        "temperature": 0}
AUTH = {"Authorization": f"Bearer {KEY}"}


@pytest.fixture(scope="module")
def keyed(model_path, tmp_path_factory):
    server = Daemon(tmp_path_factory.mktemp("keyed"), QWEND_API_KEYS=KEY, QWEND_PARALLEL="2").start()
    yield server
    server.stop()


def test_a_key_is_required_and_the_sdk_works_with_it(keyed):
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=f"{keyed.url}/v1", api_key="wrong", max_retries=0).chat.completions.create(**CHAT)
    answer = openai.OpenAI(base_url=f"{keyed.url}/v1", api_key=KEY).chat.completions.create(**CHAT)
    assert answer.choices[0].message.content.strip()
    assert httpx.get(f"{keyed.url}/health").status_code == 200  # probes need no key


def test_another_sites_host_header_is_refused(keyed):
    # what a DNS-rebound page sends: the right address, the attacker's name, even with a key it stole
    reply = httpx.post(f"{keyed.url}/v1/chat/completions", json=CHAT, headers={**AUTH, "Host": "evil.example:80"})
    assert reply.status_code == 403 and reply.json()["error"]["code"] == "host_not_allowed"
    reply = httpx.post(f"{keyed.url}/api/chat", json={**CHAT, "stream": False}, headers={"Host": "evil.example"})
    assert reply.status_code == 403 and "Host header" in reply.json()["error"]


def test_a_cross_origin_websocket_is_refused_and_a_local_page_is_served(keyed):
    ws_url = keyed.url.replace("http://", "ws://")
    sid = httpx.post(f"{keyed.url}/create_session", json={}, headers=AUTH).json()["session_id"]
    for path in ("/api/chat/ws", f"/ws/{sid}"):
        with pytest.raises(InvalidStatus) as refused:
            connect(f"{ws_url}{path}?api_key={KEY}", origin="https://evil.example", open_timeout=30)
        assert refused.value.response.status_code == 403
    with pytest.raises(InvalidStatus) as refused:  # a local page without the key
        connect(f"{ws_url}/api/chat/ws", origin="http://localhost:3000", open_timeout=30)
    assert refused.value.response.status_code == 403
    with connect(f"{ws_url}/api/chat/ws?api_key={KEY}", origin="http://localhost:3000", open_timeout=30) as ws:
        ws.send(json.dumps({"type": "chat", "messages": CHAT["messages"], "max_tokens": 8, "temperature": 0}))
        frames = []
        while (frame := json.loads(ws.recv(timeout=120)))["type"] != "done":
            frames.append(frame)
    assert "".join(f["content"] for f in frames if f["type"] == "token").strip()


def test_request_ids_reach_the_answer_and_the_log_file(keyed):
    reply = httpx.post(f"{keyed.url}/v1/chat/completions", json=CHAT, headers={**AUTH, "X-Request-ID": "sec-77"},
                       timeout=120)
    assert reply.status_code == 200 and reply.headers["x-request-id"] == "sec-77"
    log = keyed.data_dir / "inference_server.log"
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and "sec-77" not in log.read_text():
        time.sleep(0.2)
    lines = [json.loads(line) for line in log.read_text().splitlines()]
    access = [line for line in lines if line["request_id"] == "sec-77" and line["logger"] == "qwend.access"]
    assert access and access[0]["status"] == 200 and access[0]["path"] == "/v1/chat/completions"
    assert KEY not in log.read_text()  # keys never reach the log


def _stream(url: str, body: dict, out: dict) -> None:
    """Read an SSE stream to its end (or until the server cuts it), keeping its data lines and event names."""
    out["lines"], out["events"] = [], []
    try:
        with httpx.stream("POST", url, json=body, timeout=120) as reply:
            for line in reply.iter_lines():
                if line.startswith("data:"):
                    out["lines"].append(line[5:].strip())
                elif line.startswith("event:"):
                    out["events"].append(line[6:].strip())
    except httpx.HTTPError as exc:
        out["error"] = exc


def test_sigterm_lets_short_answers_finish_cancels_long_ones_and_stores_them_as_far_as_they_came(model_path, tmp_path):
    (tmp_path / "profiles").mkdir()
    (tmp_path / "profiles" / "plain.toml").write_text('name = "plain"\ndescription = "No tools."\ntools = []\n'
                                                      'system_prompt = "You are a helpful assistant."\n')
    # the grace is shorter than the long answer: the model stops counting by itself (at 200, ~700 tokens, about
    # 20 s on 2 cores), and a 30 s grace let it finish on a fast run
    server = Daemon(tmp_path, QWEND_SHUTDOWN_TIMEOUT="5", QWEND_PARALLEL="2",
                    QWEND_PROFILES_DIR=str(tmp_path / "profiles")).start()
    try:
        sid = httpx.post(f"{server.url}/v1/sessions", json={"profile_name": "plain"}).json()["session_id"]
        first = httpx.post(f"{server.url}/v1/sessions/{sid}/chat", json={"message": "Say hi.", "max_tokens": 8},
                           timeout=300)
        assert first.status_code == 200
        short, long = {}, {}
        short_body = {**CHAT, "max_tokens": 8, "stream": True}
        long_body = {"message": "Count from 1 to 2000, one number per line.", "max_tokens": 3000, "stream": True,
                     "temperature": 0}
        readers = [threading.Thread(target=_stream, args=(f"{server.url}/v1/sessions/{sid}/chat", long_body, long)),
                   threading.Thread(target=_stream, args=(f"{server.url}/v1/chat/completions", short_body, short))]
        for reader, underway in zip(readers, (lambda: "token" in long.get("events", ()), lambda: short.get("lines"))):
            reader.start()  # the long answer generating, then the short one started: both in flight
            deadline = time.monotonic() + 180
            while time.monotonic() < deadline and not underway():
                time.sleep(0.05)
        server.process.send_signal(signal.SIGTERM)
        stopped = time.monotonic()
        time.sleep(0.5)
        with pytest.raises(httpx.ConnectError):  # no new requests once stopping
            httpx.get(f"{server.url}/health", timeout=5)
        assert server.process.wait(timeout=90) in (0, -signal.SIGTERM)  # uvicorn exits by the signal it got
        took = time.monotonic() - stopped
        for reader in readers:
            reader.join(timeout=30)
        assert short["lines"][-1] == "[DONE]"  # the short answer ran to its end
        finish = [json.loads(line)["choices"][0]["finish_reason"] for line in short["lines"][:-1]
                  if json.loads(line).get("choices")]
        assert finish[-1] == "length"
        assert took < 60, f"shutdown took {took:.1f} s with a 5 s grace"  # the long one was cancelled
        stopped_lines = (server.data_dir / "inference_server.log").read_text().splitlines()
        assert json.loads(stopped_lines[-1])["message"] == "stopped"  # the runtime closed after the cancel
        assert "token" in long["events"] and "done" not in long["events"]
    finally:
        server.stop()
    server.start()  # the same data dir: the completed turn, and the cancelled one as far as it came, marked stopped
    try:
        messages = httpx.get(f"{server.url}/v1/sessions/{sid}").json()["messages"]
        first_turn = [m for m in messages if m["turn"] == 1]
        assert [m["role"] for m in first_turn] == ["user", "assistant"] and not first_turn[-1]["stopped"]
        cancelled = [m for m in messages if m["turn"] == 2]
        assert cancelled[0]["content"] == long_body["message"]
        assert cancelled[-1]["role"] == "assistant" and cancelled[-1]["stopped"] and cancelled[-1]["content"]
        assert {m["turn"] for m in messages} == {1, 2}
        again = httpx.post(f"{server.url}/v1/sessions/{sid}/chat", json={"message": "Bye.", "max_tokens": 8},
                           timeout=120)
        assert again.status_code == 200
    finally:
        server.stop()

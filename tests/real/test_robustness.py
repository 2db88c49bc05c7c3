"""Robustness on a real `qwend serve` with the real default model (reliability.md section 4): a burst against
a small queue, a client leaving a session stream, SIGKILL while sessions are written, prompts past the
window on every protocol, invalid tool schemas, and tool arguments carrying code. All traffic is loopback.

One daemon serves the module: queue 8, 2 answers at once, a 2048-token window (so an overflowing prompt is
~5k tokens), file tools on, a no-tools profile for predictable session turns, and a secret in its environment.

Also part of the suite (not repeated here):
- stream and non-stream disconnects on /v1/chat/completions, a full queue's 429 with its exact counts, the
  32k-window overflow with both lengths named: tests/real/test_openai_real.py
- SIGKILL mid-generation of one session's long turn: tests/real/test_sessions_real.py
- SIGKILL of writer processes mid-transaction, integrity of the SQLite file: tests/unit/test_session_store.py
- python_repl escapes (network to 1.1.1.1 / the daemon / 169.254.169.254, the model store, /etc/passwd,
  environment names, fork bombs, memory, output caps, timeouts, leftover processes): tests/real/test_sandbox.py
- the calculator's grammar in depth: tests/unit/test_calculator.py; file tools' confinement:
  tests/unit/test_file_tools.py
- no eval/exec/pickle/unsandboxed templates in qwend/, request templates ignored, linear-time parsers on
  pathological model output: tests/unit/test_pathological_output.py
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import threading
import time

import httpx
import pytest

from tests.conftest import Daemon

QUEUE, PARALLEL, WINDOW = 8, 2, 2048
SECRET = "robustness-secret-3f9c1e"
PLAIN = 'name = "plain"\ndescription = "No tools."\nsystem_prompt = "You are a helpful assistant."\n'
HUGE = "hello " * 5000  # ~5,000 tokens against a 2,048-token window
OPENAI_KEYS = {"message", "type", "param", "code"}


@pytest.fixture(scope="module")
def server(model_path, tmp_path_factory):
    daemon = Daemon(tmp_path_factory.mktemp("robust"), QWEND_QUEUE_SIZE=str(QUEUE), QWEND_PARALLEL=str(PARALLEL),
                    QWEND_CONTEXT_LENGTH=str(WINDOW), QWEND_ENABLE_FILE_OPERATIONS="true", LINEAR_API_KEY=SECRET)
    (daemon.data_dir / "profiles").mkdir()
    (daemon.data_dir / "profiles" / "plain.toml").write_text(PLAIN)
    daemon.start()
    yield daemon
    daemon.stop()


@pytest.fixture
def client(server):
    with httpx.Client(base_url=server.url, timeout=120) as client:
        yield client


def health(client: httpx.Client) -> dict:
    reply = client.get("/health", timeout=10)
    assert reply.status_code == 200
    return reply.json()


def wait_idle(client: httpx.Client, seconds: float = 10.0) -> bool:
    """True once the model runs and queues nothing (polled, bounded)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        body = health(client)
        queue = body["queue"][body["model"]]
        if queue == {"running": 0, "waiting": 0} and not body["generation_in_progress"]:
            return True
        time.sleep(0.1)
    return False


def alive(client: httpx.Client) -> None:
    """The daemon still answers a chat (a short one)."""
    reply = client.post("/v1/chat/completions", json={
        "messages": [{"role": "user", "content": "Say hi."}], "max_tokens": 4, "temperature": 0})
    assert reply.status_code == 200, reply.text
    assert reply.json()["choices"][0]["message"]["content"]


def new_session(client: httpx.Client) -> str:
    reply = client.post("/v1/sessions", json={"profile_name": "plain"})
    assert reply.status_code == 200, reply.text
    return reply.json()["session_id"]


def turn(client: httpx.Client, sid: str, message: str, **extra) -> httpx.Response:
    return client.post(f"/v1/sessions/{sid}/chat", json={"message": message, "max_tokens": 4, "temperature": 0,
                                                          **extra})


def messages(client: httpx.Client, sid: str) -> list[dict]:
    reply = client.get(f"/v1/sessions/{sid}")
    assert reply.status_code == 200, reply.text
    return reply.json()["messages"]


# 1. a burst of 50 against a queue of 8


def test_fifty_concurrent_clients_against_a_queue_of_eight(server, client):
    """A request is refused only while PARALLEL run and QUEUE wait, and each of those is answered: so if any
    request is refused, at least QUEUE + PARALLEL were answered; if none is, all 50 were."""
    assert wait_idle(client)
    body = {"messages": [{"role": "user", "content": "Name a colour."}], "max_tokens": 4, "temperature": 0}

    async def burst() -> list[httpx.Response | Exception]:
        limits = httpx.Limits(max_connections=60, max_keepalive_connections=0)
        async with httpx.AsyncClient(base_url=server.url, timeout=120, limits=limits) as burst_client:
            return await asyncio.gather(
                *[burst_client.post("/v1/chat/completions", json=body) for _ in range(50)], return_exceptions=True)

    replies = asyncio.run(burst())
    failures = [r for r in replies if isinstance(r, Exception)]
    assert not failures, f"connection errors: {failures[:3]}"
    answered = [r for r in replies if r.status_code == 200]
    refused = [r for r in replies if r.status_code == 429]
    assert len(answered) + len(refused) == 50, sorted(r.status_code for r in replies)
    for reply in answered:
        assert reply.json()["choices"][0]["message"]["content"].strip()
    for reply in refused:
        assert int(reply.headers["retry-after"]) >= 1
        error = reply.json()["error"]
        assert set(error) == OPENAI_KEYS and error["code"] == "busy" and error["message"]
    assert len(answered) >= (QUEUE + PARALLEL if refused else 50)
    print(f"burst: {len(answered)} answered, {len(refused)} refused")
    assert wait_idle(client)
    alive(client)


# 2. a client leaving a session stream


def test_leaving_a_session_stream_cancels_the_turn_and_keeps_the_session(client):
    sid = new_session(client)
    assert turn(client, sid, "Say hello.").status_code == 200
    before = messages(client, sid)
    assert [m["role"] for m in before] == ["user", "assistant"]
    assert wait_idle(client)

    long_turn = {"message": "Count from 1 to 1000, one number per line.", "stream": True, "temperature": 0,
                 "max_tokens": 1500}
    tokens = 0
    with client.stream("POST", f"/v1/sessions/{sid}/chat", json=long_turn) as reply:
        assert reply.status_code == 200
        for line in reply.iter_lines():
            tokens += line.startswith("event: token")
            if tokens == 3:
                break
    assert tokens == 3
    assert wait_idle(client), "the turn went on generating after its client left"
    stopped = messages(client, sid)  # the aborted turn kept as far as it came: the question, the answer so far
    assert stopped[:2] == before and [(m["turn"], m["role"], m["stopped"]) for m in stopped[2:]] == [
        (2, "user", False), (2, "assistant", True)]
    assert stopped[2]["content"] == long_turn["message"] and stopped[3]["content"].strip()

    after = turn(client, sid, "Say goodbye.")
    assert after.status_code == 200 and after.json()["response"].strip()
    history = messages(client, sid)
    assert [(m["turn"], m["role"]) for m in history] == [(1, "user"), (1, "assistant"), (2, "user"),
                                                         (2, "assistant"), (3, "user"), (3, "assistant")]
    assert history[4]["content"] == "Say goodbye."


# 4. prompts past the window, on every protocol


def _openai_error(body: dict) -> str:
    assert set(body["error"]) == OPENAI_KEYS and body["error"]["code"] == "context_length_exceeded"
    return body["error"]["message"]


def _anthropic_error(body: dict) -> str:
    assert body["type"] == "error" and body["error"]["type"] == "invalid_request_error"
    return body["error"]["message"]


def _ollama_error(body: dict) -> str:
    assert set(body) == {"error"} and isinstance(body["error"], str)
    return body["error"]


def _detail_error(body: dict) -> str:
    assert set(body) == {"detail"} and isinstance(body["detail"], str)
    return body["detail"]


OPENAI_BODY = {"messages": [{"role": "user", "content": HUGE}], "max_tokens": 8}
OVERFLOWS = {
    "openai": ("/v1/chat/completions", OPENAI_BODY, _openai_error),
    "anthropic": ("/v1/messages", {"model": "qwen2.5-coder:0.5b", "max_tokens": 8,
                                   "messages": [{"role": "user", "content": HUGE}]}, _anthropic_error),
    "ollama": ("/api/chat", {"model": "qwen2.5-coder:0.5b", "messages": [{"role": "user", "content": HUGE}],
                             "options": {"num_predict": 8}}, _ollama_error),  # streams by default
    "native": ("/v1/chat", {"message": HUGE, "profile": "plain", "max_tokens": 8}, _detail_error),
    "seed-001": ("/api/chat/completions", OPENAI_BODY, _detail_error),
    "seed-002": ("/chat", {"messages": [{"role": "user", "content": HUGE}], "config": {"maxTokens": 8}},
                 _detail_error),
    "seed-004": ("/chat/completions", OPENAI_BODY, _openai_error),
}


@pytest.mark.parametrize("protocol", list(OVERFLOWS))
def test_a_prompt_past_the_window_is_a_400_in_the_protocols_shape(client, protocol):
    path, body, read_error = OVERFLOWS[protocol]
    reply = client.post(path, json=body)
    assert reply.status_code == 400, f"{protocol}: {reply.status_code} {reply.text[:300]}"
    message = read_error(reply.json())
    assert str(WINDOW) in message, message
    assert health(client)["status"] == "healthy"


def test_a_session_turn_past_the_window_is_a_400_and_stores_nothing(client):
    sid = new_session(client)
    reply = client.post(f"/v1/sessions/{sid}/chat", json={"message": HUGE, "max_tokens": 8})
    assert reply.status_code == 400, reply.text[:300]
    assert messages(client, sid) == []
    assert health(client)["status"] == "healthy"


# 5. invalid tool schemas


def _tool(name: str, parameters) -> dict:
    return {"type": "function", "function": {"name": name, "parameters": parameters}}


def _nested(depth: int) -> str:
    """A tool whose parameters nest `depth` objects deep, as raw JSON text (json.dumps recurses)."""
    inner = '{"type": "object", "properties": {"a": ' * depth + '{"type": "string"}' + "}}" * depth
    return '{"type": "function", "function": {"name": "deep", "parameters": ' + inner + "}}"


FINE = {"type": "object", "properties": {"city": {"type": "string"}}}
BAD_TOOLS = {
    "type is a number": {"tools": [_tool("f", {"type": 123})]},
    "pattern does not compile": {"tools": [_tool("f", {"type": "object", "properties": {
        "x": {"type": "string", "pattern": "("}}})]},
    "duplicate names": {"tools": [_tool("f", FINE), _tool("f", FINE)]},
    "tool_choice names a missing function": {"tools": [_tool("f", FINE)],
                                             "tool_choice": {"type": "function", "function": {"name": "g"}}},
    "required without tools": {"tools": [], "tool_choice": "required"},
    "recursive $ref": {"tools": [_tool("f", {"$defs": {"n": {"$ref": "#/$defs/n"}}, "$ref": "#/$defs/n"})]},
}


@pytest.mark.parametrize("case", list(BAD_TOOLS))
def test_an_invalid_tool_schema_is_a_400(client, case):
    body = {"messages": [{"role": "user", "content": "Weather in Oslo?"}], "max_tokens": 8, **BAD_TOOLS[case]}
    reply = client.post("/v1/chat/completions", json=body)
    assert reply.status_code == 400, f"{case}: {reply.status_code} {reply.text[:300]}"
    assert set(reply.json()["error"]) == OPENAI_KEYS
    assert health(client)["status"] == "healthy"


@pytest.mark.parametrize("depth", [100, 400, 5000])  # past the schema limit; past Python's JSON recursion
def test_a_deeply_nested_tool_schema_is_a_400(client, depth):
    text = '{"messages": [{"role": "user", "content": "hi"}], "max_tokens": 8, "tools": [' + _nested(depth) + "]}"
    reply = client.post("/v1/chat/completions", content=text, headers={"content-type": "application/json"})
    assert reply.status_code == 400, f"{depth}: {reply.status_code} {reply.text[:300]}"
    assert set(reply.json()["error"]) == OPENAI_KEYS
    assert health(client)["status"] == "healthy"


def test_daemon_answers_after_the_bad_schemas(client):
    alive(client)


# 6. tool arguments carrying code


def invoke(client: httpx.Client, name: str, **arguments) -> dict:
    reply = client.post(f"/v1/tools/{name}/invoke", json={"arguments": arguments})
    assert reply.status_code == 200, reply.text
    return reply.json()


def test_the_calculator_never_runs_code(client, tmp_path):
    marker = tmp_path / "pwned"
    payloads = [
        f"__import__('os').system('touch {marker}')",
        f"eval(\"__import__('os').system('touch {marker}')\")",
        f"().__class__.__base__.__subclasses__()[0]('touch {marker}')",
        f"[open('{marker}', 'w') for x in (1,)]",
        "lambda: 0",
        "x.__class__",
        "sqrt.__globals__",
        "(1).__class__.__mro__",
        "2**2**2**2**2**10",
        "factorial(10**9)",
        "(" * 500 + "1" + ")" * 500,
    ]
    for expression in payloads:
        result = invoke(client, "calculator", expression=expression)
        assert result["success"] is False and result["error"], (expression, result)
        assert not marker.exists(), f"{expression!r} ran"
    assert invoke(client, "calculator", expression="2**10 + sqrt(144)")["result"] == "1036"


def test_python_repl_sees_neither_the_data_dir_nor_the_secrets(server, client):
    """test_sandbox.py covers the network and the model store; this daemon's own data and secret value too."""
    database = server.data_dir / "qwend.db"
    assert database.exists()
    code = (
        "os = __import__('os')\n"  # past the import list, which is a convenience: the sandbox is the boundary
        "found = []\n"
        f"for path in ({str(database)!r}, {str(server.data_dir)!r}, '/proc/1/environ', '/proc/self/environ'):\n"
        "    try:\n"
        "        found.append(open(path, 'rb').read() if not os.path.isdir(path) else os.listdir(path))\n"
        "    except OSError as error:\n"
        "        found.append(type(error).__name__)\n"
        "print(found)\n"
        "print(dict(os.environ))\n"
    )
    result = invoke(client, "python_repl", code=code)
    assert result["success"] is True, result
    output = result["result"]
    assert SECRET not in output and "QWEND" not in output and "SQLite format" not in output
    assert output.startswith("['FileNotFoundError', 'FileNotFoundError', "), output


@pytest.mark.parametrize(("tool", "arguments"), [
    ("read_file", {"path": "../../etc/passwd"}),
    ("read_file", {"path": "/etc/passwd"}),
    ("read_file", {"path": "../qwend.db"}),
    ("read_file", {"path": "link/passwd"}),  # a link inside the workspace that points out
    ("list_files", {"path": ".."}),
    ("list_files", {"path": "/"}),
    ("write_file", {"path": "../../escape.txt", "content": "x"}),
    ("write_file", {"path": "/tmp/qwend-robustness-escape.txt", "content": "x"}),
])
def test_file_tools_refuse_paths_outside_the_workspace(server, client, tool, arguments):
    workspace = server.data_dir / "workspace"
    workspace.mkdir(exist_ok=True)
    if not (workspace / "link").is_symlink():
        (workspace / "link").symlink_to("/etc")
    result = invoke(client, tool, **arguments)
    assert result["success"] is False and "outside the workspace" in result["error"], result
    assert "root:" not in str(result)
    assert not (server.data_dir.parent / "escape.txt").exists()
    assert not (server.workdir.parent / "escape.txt").exists()
    assert not os.path.exists("/tmp/qwend-robustness-escape.txt")


# 3. SIGKILL while several sessions are being written, then a restart (last: it restarts the daemon)


def test_sigkill_while_sessions_are_written_keeps_only_whole_turns(server, client):
    sids = [new_session(client) for _ in range(4)]
    completed = {sid: 0 for sid in sids}
    stop = threading.Event()

    def talk(sid: str) -> None:
        with httpx.Client(base_url=server.url, timeout=60) as own:
            for n in range(100):
                if stop.is_set():
                    return
                try:
                    reply = turn(own, sid, f"Say the number {n}.")
                except httpx.HTTPError:
                    return  # the daemon died under it
                if reply.status_code == 200:
                    completed[sid] += 1

    writers = [threading.Thread(target=talk, args=(sid,)) for sid in sids]
    for writer in writers:
        writer.start()
    deadline = time.monotonic() + 90
    while sum(completed.values()) < 4 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert sum(completed.values()) >= 4, "the sessions' turns did not complete"
    server.kill()  # mid-stream: two turns generating, others queued or being stored
    stop.set()
    for writer in writers:
        writer.join(30)
    assert not any(w.is_alive() for w in writers)

    server.start()  # the same data dir, a fresh process
    with sqlite3.connect(f"file:{server.data_dir / 'qwend.db'}?mode=ro", uri=True) as db:
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    kept = {}
    for sid in sids:
        history = messages(client, sid)
        turns: dict[int, list[str]] = {}
        for message in history:
            turns.setdefault(message["turn"], []).append(message["role"])
        # every answered turn is there (its 200 came after its commit), at most one more that the kill cut
        # off between commit and answer, and each is whole: the question and its answer
        assert completed[sid] <= len(turns) <= completed[sid] + 1, (completed[sid], turns)
        assert sorted(turns) == list(range(1, len(turns) + 1))
        assert all(roles == ["user", "assistant"] for roles in turns.values()), turns
        assert all(m["content"].strip() for m in history if m["role"] == "assistant")
        kept[sid] = len(turns)
    reply = turn(client, sids[0], "Say done.")
    assert reply.status_code == 200 and reply.json()["response"].strip()
    history = messages(client, sids[0])
    assert history[-2]["turn"] == kept[sids[0]] + 1 and history[-2]["content"] == "Say done."

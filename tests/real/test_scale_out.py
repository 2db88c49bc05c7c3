"""Scale-out as docs/deploy.md lays it out, on loopback: two `qwend serve` processes share one PostgreSQL and one
real upstream server (llama-cpp-python's own, serving the real default model). A session's turns alternate
between them with its history intact, turns sent to both at once still run one after the other, tool
switches and profiles agree, and every answer names its daemon and the key to route it by."""

import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from qwend.cli.local_server import llama_cpp_server
from qwend.settings import DEFAULT_MODEL
from tests.conftest import Daemon

pytestmark = pytest.mark.real_model

TERSE = 'name = "terse"\ndescription = "No tools."\nsystem_prompt = "You are a helpful assistant. Answer briefly."\n'


@pytest.fixture(scope="module")
def two_daemons(model_path, tmp_path_factory):
    """Daemons a and b (base URLs) in front of one upstream, sharing a database and a profiles folder."""
    from qwend.cli.local_server import postgres_server

    workdir = tmp_path_factory.mktemp("scale-out")
    profiles = workdir / "profiles"
    profiles.mkdir()
    (profiles / "terse.toml").write_text(TERSE)
    with postgres_server() as database, llama_cpp_server(model_path, alias=DEFAULT_MODEL) as upstream:
        env = {"QWEND_BACKEND": "upstream", "QWEND_UPSTREAM_URL": f"{upstream}/v1", "QWEND_DATABASE_URL": database,
               "QWEND_PROFILES_DIR": str(profiles)}
        daemons = []
        try:
            for name in ("a", "b"):
                (workdir / name).mkdir()
                daemons.append(Daemon(workdir / name, QWEND_INSTANCE=name, **env).start())
            yield tuple(httpx.Client(base_url=d.url, timeout=300) for d in daemons)
        finally:
            for daemon in daemons:
                daemon.stop()


def turn(client: httpx.Client, sid: str, message: str) -> httpx.Response:
    reply = client.post(f"/v1/sessions/{sid}/chat", json={"message": message, "temperature": 0, "max_tokens": 40})
    assert reply.status_code == 200, reply.text
    return reply


def test_a_session_continues_across_daemons(two_daemons):
    a, b = two_daemons
    assert a.get("/v1/profiles").json() == b.get("/v1/profiles").json()
    sid = a.post("/v1/sessions", json={"profile_name": "terse"}).json()["session_id"]

    first = turn(a, sid, "My name is Zorblax. Say hello to me.")
    second = turn(b, sid, "What is my name?")
    assert "Zorblax" in second.json()["response"]  # b read what a stored
    assert [(r.headers["x-qwend-instance"], r.headers["x-qwend-affinity"]) for r in (first, second)] == [
        ("a", sid), ("b", sid)]
    third = turn(a, sid, "Say my name once more.")
    assert third.headers["x-qwend-instance"] == "a"

    history = b.get(f"/v1/sessions/{sid}").json()["messages"]
    assert history == a.get(f"/v1/sessions/{sid}").json()["messages"]
    assert [(m["role"], m["turn"]) for m in history] == [
        ("user", 1), ("assistant", 1), ("user", 2), ("assistant", 2), ("user", 3), ("assistant", 3)]
    assert [m["content"] for m in history[1::2]] == [r.json()["response"] for r in (first, second, third)]
    assert b.get("/v1/sessions").json()["sessions"][0]["session_id"] == sid


def test_turns_sent_to_both_daemons_at_once_run_one_after_the_other(two_daemons):
    a, b = two_daemons
    sid = b.post("/v1/sessions", json={"profile_name": "terse"}).json()["session_id"]
    with ThreadPoolExecutor(4) as pool:
        replies = list(pool.map(lambda args: turn(*args), [
            (a, sid, "Name a fruit."), (b, sid, "Name a colour."), (a, sid, "Name an animal."),
            (b, sid, "Name a country.")]))
    assert {r.headers["x-qwend-instance"] for r in replies} == {"a", "b"}
    history = a.get(f"/v1/sessions/{sid}").json()["messages"]
    assert [(m["role"], m["turn"]) for m in history] == [
        (role, n) for n in range(1, 5) for role in ("user", "assistant")]
    # each turn's prompt held every earlier turn, answer included: none ran beside another
    answers = history[1::2]
    for earlier, later in zip(answers, answers[1:]):
        assert later["prompt_tokens"] >= earlier["prompt_tokens"] + earlier["completion_tokens"]


def test_tool_switches_agree_between_daemons(two_daemons):
    a, b = two_daemons

    def calculator_on(client):
        return next(t["enabled"] for t in client.get("/api/tools").json()["tools"] if t["name"] == "calculator")

    def eventually(check):
        for _ in range(100):  # a notification through PostgreSQL: milliseconds, 5 s at most
            if check():
                return True
            time.sleep(0.05)
        return False

    try:
        assert a.post("/api/tools/calculator/disable").status_code == 200
        assert eventually(lambda: calculator_on(b) is False)
        run = b.post("/api/tools/execute", json={"tool_name": "calculator", "parameters": {"expression": "2+2"}})
        assert run.json() == {"success": False, "result": None, "error": "tool 'calculator' is disabled"}
        assert b.post("/api/tools/calculator/enable").status_code == 200
        assert eventually(lambda: calculator_on(a) is True)
    finally:
        a.post("/api/tools/calculator/enable")

"""The access guard (Host, Origin, body size, API keys, rate limits), CORS, request ids, the request limits,
and the rule for serving beyond loopback: wire handling, on a scripted backend."""

import json
import logging

import pytest
from starlette.testclient import TestClient
from starlette.websockets import WebSocketDisconnect
from typer.testing import CliRunner

from qwend.access import ApiKeys, create_key, digest, exposure_problem, read_key_file, remove_key
from qwend.api.guard import HostRule, RateLimit
from qwend.settings import Settings
from tests.conftest import client_for, fake_runtime
from tests.fakes import FakeBackend

HELLO = {"messages": [{"role": "user", "content": "hi"}]}
EVIL = "https://evil.example"


def make(tmp_path, **settings):
    backend = FakeBackend("one two three four five six", context_length=8192)
    return client_for(fake_runtime(tmp_path, backend, **settings))


# -- Host (DNS rebinding)


@pytest.mark.parametrize("host", ["localhost", "localhost:5997", "127.0.0.1:5997", "[::1]:5997", "app.localhost",
                                  "192.168.1.20:5997"])
def test_this_machines_names_and_addresses_are_accepted(host):
    assert HostRule(Settings(_env_file=None)).allows(host)


@pytest.mark.parametrize("host", ["evil.example", "evil.example:5997", "localhost.evil.example", "127.0.0.1.nip.io"])
def test_other_names_are_refused(host):
    rule = HostRule(Settings(_env_file=None))
    assert not rule.allows(host)
    assert HostRule(Settings(_env_file=None, allowed_hosts=[host.split(":")[0]])).allows(host)
    assert HostRule(Settings(_env_file=None, allowed_hosts=["*"])).allows(host)


@pytest.mark.parametrize("path, shape", [
    ("/v1/chat/completions", lambda b: b["error"]["code"] == "host_not_allowed"),
    ("/v1/messages", lambda b: b["type"] == "error" and b["error"]["type"] == "permission_error"),
    ("/api/chat", lambda b: "Host header" in b["error"]),
    ("/v1/chat", lambda b: "Host header" in b["detail"]),
])
async def test_a_rebound_host_gets_403_in_the_protocols_shape(tmp_path, path, shape):
    async with make(tmp_path) as client:
        body = {**HELLO, "max_tokens": 8, "model": "fake.gguf"}
        body = {"message": "hi", "max_tokens": 8} if path == "/v1/chat" else body
        reply = await client.post(path, json=body, headers={"Host": "evil.example:5997"})
        assert reply.status_code == 403 and shape(reply.json())
        assert (await client.post(path, json=body)).status_code == 200


# -- Origin and CORS


async def test_a_page_of_another_origin_is_refused_and_local_pages_get_cors_headers(tmp_path):
    async with make(tmp_path, cors_origins=["https://app.example"]) as client:
        refused = await client.post("/v1/chat/completions", json=HELLO, headers={"Origin": EVIL})
        assert refused.status_code == 403 and refused.json()["error"]["code"] == "origin_not_allowed"
        for origin in ("http://localhost:3000", "http://127.0.0.1:8080", "https://app.example"):
            reply = await client.post("/v1/chat/completions", json=HELLO, headers={"Origin": origin})
            assert reply.status_code == 200 and reply.headers["access-control-allow-origin"] == origin
        same = await client.post("/v1/chat/completions", json=HELLO, headers={"Origin": "http://localhost"})
        assert same.status_code == 200  # a page this daemon serves (the UI)
        preflight = {"Origin": "http://localhost:3000", "Access-Control-Request-Method": "POST",
                     "Access-Control-Request-Headers": "content-type,authorization"}
        reply = await client.options("/v1/chat/completions", headers=preflight)
        assert reply.status_code == 200 and reply.headers["access-control-allow-origin"] == "http://localhost:3000"
        reply = await client.options("/v1/chat/completions", headers={**preflight, "Origin": EVIL})
        assert reply.status_code == 400 and "access-control-allow-origin" not in reply.headers


async def test_cors_star_allows_any_page(tmp_path):
    async with make(tmp_path, cors_origins=["*"]) as client:
        assert (await client.post("/v1/chat/completions", json=HELLO, headers={"Origin": EVIL})).status_code == 200


def test_a_cross_origin_websocket_is_refused_at_the_upgrade(tmp_path):
    runtime = fake_runtime(tmp_path, FakeBackend("hi"))
    from qwend.app import create_app

    app = create_app(runtime.settings, runtime)
    app.state.runtime = runtime
    http = TestClient(app)
    with pytest.raises(WebSocketDisconnect) as refused:
        with http.websocket_connect("/api/chat/ws", headers={"Origin": EVIL}):
            pass
    assert refused.value.code == 1008
    with http.websocket_connect("/api/chat/ws", headers={"Origin": "http://localhost:3000"}) as ws:
        ws.send_json({"type": "ping"})
        assert ws.receive_json() == {"type": "pong"}


# -- body size


async def test_an_oversized_body_is_413_by_length_and_as_read(tmp_path):
    async with make(tmp_path, max_body_mb=0.01) as client:
        big = {"messages": [{"role": "user", "content": "x" * 20_000}]}
        reply = await client.post("/v1/chat/completions", json=big)
        assert reply.status_code == 413 and reply.json()["error"]["code"] == "request_too_large"

        async def chunks():  # no Content-Length: the body is counted as it arrives
            yield json.dumps(big).encode()

        reply = await client.post("/v1/messages", content=chunks(), headers={"content-type": "application/json"})
        assert reply.status_code == 413 and reply.json()["error"]["type"] == "request_too_large"
        assert (await client.post("/v1/chat/completions", json=HELLO)).status_code == 200


# -- API keys


async def test_keys_are_required_when_configured_and_health_stays_open(tmp_path):
    settings = {"api_keys": ["plain-key", "sha256:" + digest("hashed-key")]}
    async with make(tmp_path, **settings) as client:
        missing = await client.post("/v1/chat/completions", json=HELLO)
        assert missing.status_code == 401 and missing.headers["www-authenticate"] == "Bearer"
        assert missing.json()["error"]["code"] == "invalid_api_key"
        wrong = await client.post("/v1/messages", json={**HELLO, "max_tokens": 8}, headers={"x-api-key": "nope"})
        assert wrong.status_code == 401 and wrong.json()["error"]["type"] == "authentication_error"
        assert (await client.get("/v1/models", headers={"Authorization": "Bearer plain-key"})).status_code == 200
        assert (await client.get("/v1/models", headers={"x-api-key": "hashed-key"})).status_code == 200
        assert (await client.get("/health")).status_code == 200
        assert (await client.get("/metrics")).status_code == 401


def test_the_key_file_keeps_digests_only(tmp_path):
    path = tmp_path / "api-keys"
    key = create_key(path, "laptop")
    assert key.startswith("qwend-") and key not in path.read_text()
    assert path.stat().st_mode & 0o777 == 0o600
    with pytest.raises(ValueError):
        create_key(path, "laptop")
    keys = ApiKeys.load(Settings(_env_file=None, data_dir=tmp_path, api_keys=["other"]))
    assert keys.identify(key).name == "laptop" and keys.identify("other").name == "env-1"
    assert keys.identify("qwend-guess") is None and keys.identify(None) is None
    remove_key(path, "laptop")
    assert read_key_file(path) == []


def test_keys_cli_creates_lists_and_removes(tmp_path):
    from qwend.cli.main import app

    runner = CliRunner()
    created = runner.invoke(app, ["keys", "create", "ci", "--data-dir", str(tmp_path)])
    assert created.exit_code == 0 and created.stdout.strip().startswith("qwend-")
    assert "ci" in runner.invoke(app, ["keys", "list", "--data-dir", str(tmp_path)]).stdout
    assert runner.invoke(app, ["keys", "remove", "ci", "--data-dir", str(tmp_path)]).exit_code == 0
    assert runner.invoke(app, ["keys", "remove", "ci", "--data-dir", str(tmp_path)]).exit_code != 0


def test_serving_beyond_loopback_needs_a_key_or_the_insecure_flag(tmp_path):
    def problem(**settings):
        settings = Settings(_env_file=None, data_dir=tmp_path, **settings)
        return exposure_problem(settings, ApiKeys.load(settings))

    assert problem(host="127.0.0.1") is None and problem(host="::1") is None and problem(host="localhost") is None
    assert "without an API key" in problem(host="0.0.0.0")
    assert problem(host="0.0.0.0", api_keys=["k"]) is None
    assert problem(host="0.0.0.0", allow_insecure_bind=True) is None


def test_serve_refuses_before_loading_anything(tmp_path):
    from qwend.cli.main import app

    result = CliRunner().invoke(app, ["serve", "--host", "0.0.0.0", "--data-dir", str(tmp_path)])
    assert result.exit_code == 2 and "refusing to serve on 0.0.0.0" in result.output


# -- rate limits


def test_the_bucket_refills_over_the_minute():
    rate = RateLimit(2)
    assert rate.wait("a") == 0 and rate.wait("a") == 0
    assert 0 < rate.wait("a") <= 30
    assert rate.wait("b") == 0  # each caller has its own
    assert RateLimit(0).wait("a") == 0


async def test_a_key_past_its_rate_gets_429_with_retry_after(tmp_path):
    async with make(tmp_path, api_keys=["k1", "k2"], rate_limit_per_minute=2) as client:
        one, two = {"Authorization": "Bearer k1"}, {"Authorization": "Bearer k2"}
        assert [(await client.get("/v1/models", headers=one)).status_code for _ in range(2)] == [200, 200]
        limited = await client.post("/v1/chat/completions", json=HELLO, headers=one)
        assert limited.status_code == 429 and int(limited.headers["retry-after"]) >= 1
        assert limited.json()["error"]["type"] == "rate_limit_error"
        assert (await client.get("/v1/models", headers=two)).status_code == 200
        assert (await client.get("/health")).status_code == 200


# -- request ids and logs


async def test_every_answer_carries_a_request_id(tmp_path):
    async with make(tmp_path) as client:
        mine = await client.get("/v1/models", headers={"X-Request-ID": "client-42"})
        assert mine.headers["x-request-id"] == "client-42"
        forged = await client.get("/v1/models", headers={"X-Request-ID": "a\nfake log line"})
        assert forged.headers["x-request-id"] != "a\nfake log line" and len(forged.headers["x-request-id"]) == 32
        refused = await client.get("/v1/models", headers={"Host": "evil.example"})
        assert refused.headers["x-request-id"]


async def test_the_log_file_has_a_json_line_per_request(tmp_path):
    from qwend.logs import configure_logging

    root = logging.getLogger()
    saved = root.handlers[:], root.level
    settings = Settings(_env_file=None, data_dir=tmp_path / "logs")
    configure_logging(settings)
    try:
        async with make(tmp_path) as client:
            await client.post("/v1/chat/completions", json=HELLO, headers={"X-Request-ID": "req-1"})
        for handler in root.handlers:
            handler.flush()
        lines = [json.loads(line) for line in settings.log_path.read_text().splitlines()]
        access = next(line for line in lines if line["logger"] == "qwend.access")
        assert access["request_id"] == "req-1" and access["status"] == 200 and access["method"] == "POST"
        assert access["path"] == "/v1/chat/completions" and access["duration_ms"] >= 0
        assert settings.log_path.name == "inference_server.log"
        rotating = next(h for h in root.handlers if hasattr(h, "maxBytes"))
        assert rotating.maxBytes == 10 << 20 and rotating.backupCount == 5
    finally:
        for handler in root.handlers:
            handler.close()
        root.handlers = saved[0]
        root.setLevel(saved[1])


# -- request limits


async def test_too_many_messages_is_400_and_max_tokens_is_capped(tmp_path):
    async with make(tmp_path, max_messages=3, max_tokens_limit=2) as client:
        many = {"messages": [{"role": "user", "content": "hi"}] * 4}
        reply = await client.post("/v1/chat/completions", json=many)
        assert reply.status_code == 400 and reply.json()["error"]["param"] == "messages"
        body = (await client.post("/v1/chat/completions", json={**HELLO, "max_tokens": 1000})).json()
        assert body["usage"]["completion_tokens"] == 2 and body["choices"][0]["finish_reason"] == "length"


async def test_agent_runs_take_no_more_steps_than_the_operators_cap(tmp_path):
    async with make(tmp_path, max_tool_steps=2) as client:
        body = (await client.post("/api/agents/execute", json={"goal": "say hi", "max_iterations": 50})).json()
        assert body["metadata"]["max_iterations"] == 2 and len(body["steps"]) == 2

"""Sessions and stored responses belong to the API key that made them: with keys configured, another key gets
exactly what an unknown id gets (404 in the protocol's shape), on every route that reaches them; an
operator's key reaches all; sessions made before owners were recorded are the operators'; without keys
nothing changes. On a scripted backend; the store-level half is in test_session_store.py."""

from __future__ import annotations

import asyncio
import json

import pytest
from starlette.testclient import TestClient
from starlette.websockets import WebSocketDisconnect
from typer.testing import CliRunner

from qwend.access import ApiKeys, create_key, digest, read_key_file
from qwend.app import create_app
from qwend.settings import Settings
from tests.conftest import client_for, fake_runtime
from tests.fakes import FakeBackend

A = {"Authorization": "Bearer key-a"}
B = {"Authorization": "Bearer key-b"}
OPERATOR = {"x-api-key": "key-op"}
KEYS = {"api_keys": ["key-a", "sha256:" + digest("key-b")], "operator_keys": ["key-op"]}
UNKNOWN = "0" * 32


def keyed(tmp_path, *replies, delay=0.0, **settings):
    backend = FakeBackend(replies=list(replies) or ["Noted."], context_length=8192, delay=delay)
    return fake_runtime(tmp_path, backend, **{**KEYS, **settings})


def as_unknown(reply, unknown, real_id: str, unknown_id: str = UNKNOWN) -> None:
    """`reply` (about `real_id`) answers exactly as `unknown` (about an id that never existed) did."""
    assert reply.status_code == unknown.status_code == 404
    assert reply.text == unknown.text.replace(unknown_id, real_id)


# -- seed 000's /v1/sessions


async def test_a_keys_sessions_are_its_own_on_every_session_route(tmp_path):
    runtime = keyed(tmp_path)
    async with client_for(runtime) as client:
        mine = (await client.post("/v1/sessions", json={"title": "A's"}, headers=A)).json()["session_id"]
        assert (await client.post(f"/v1/sessions/{mine}/chat", json={"message": "hi"}, headers=A)).status_code == 200
        theirs = (await client.post("/v1/sessions", json={"title": "B's"}, headers=B)).json()["session_id"]

        async def listed(headers):
            return [s["session_id"] for s in (await client.get("/v1/sessions", headers=headers)).json()["sessions"]]

        assert await listed(A) == [mine] and await listed(B) == [theirs]
        assert set(await listed(OPERATOR)) == {mine, theirs}

        routes = [("GET", "", None), ("PATCH", "", {"title": "taken"}), ("DELETE", "", None),
                  ("POST", "/chat", {"message": "what did A say?"}),
                  ("POST", "/chat", {"message": "what did A say?", "stream": True})]
        for method, tail, body in routes:
            unknown = await client.request(method, f"/v1/sessions/{UNKNOWN}{tail}", json=body, headers=B)
            reply = await client.request(method, f"/v1/sessions/{mine}{tail}", json=body, headers=B)
            as_unknown(reply, unknown, mine)

        session = (await client.get(f"/v1/sessions/{mine}", headers=A)).json()
        assert session["title"] == "A's" and [m["content"] for m in session["messages"]] == ["hi", "Noted."]

        seen = await client.get(f"/v1/sessions/{mine}", headers=OPERATOR)
        assert seen.status_code == 200 and seen.json()["title"] == "A's"
        renamed = await client.patch(f"/v1/sessions/{theirs}", json={"title": "moved"}, headers=OPERATOR)
        assert renamed.status_code == 200
        turn = await client.post(f"/v1/sessions/{theirs}/chat", json={"message": "hello"}, headers=OPERATOR)
        assert turn.status_code == 200
        assert (await client.delete(f"/v1/sessions/{theirs}", headers=OPERATOR)).json()["deleted"] is True
        assert (await client.delete(f"/v1/sessions/{mine}", headers=A)).json()["deleted"] is True
        assert await listed(OPERATOR) == []


async def test_sessions_from_before_owners_are_the_operators_only(tmp_path):
    runtime = keyed(tmp_path)
    old = await runtime.sessions.create("general", title="before keys")  # as the migration leaves it: no owner
    async with client_for(runtime) as client:
        for key in (A, B):
            assert (await client.get("/v1/sessions", headers=key)).json()["sessions"] == []
            unknown = await client.get(f"/v1/sessions/{UNKNOWN}", headers=key)
            as_unknown(await client.get(f"/v1/sessions/{old.id}", headers=key), unknown, old.id)
        listed = (await client.get("/v1/sessions", headers=OPERATOR)).json()["sessions"]
        assert [s["session_id"] for s in listed] == [old.id]


async def test_without_keys_everyone_sees_every_session_as_before(tmp_path):
    runtime = fake_runtime(tmp_path, FakeBackend("Noted.", context_length=8192))
    async with client_for(runtime) as client:
        # without keys configured a bearer token is nobody's identity: these are one user's two clients
        made = (await client.post("/v1/sessions", json={}, headers=A)).json()["session_id"]
        assert (await runtime.sessions.get(made)).owner is None
        assert [s["session_id"] for s in (await client.get("/v1/sessions", headers=B)).json()["sessions"]] == [made]
        assert (await client.post(f"/v1/sessions/{made}/chat", json={"message": "hi"})).status_code == 200
        assert (await client.delete(f"/v1/sessions/{made}", headers=B)).status_code == 200


# -- seed 003's JSON-RPC


def refused_socket(client: TestClient, session_id: str, headers: dict) -> tuple[dict, int]:
    """What connecting to a session's socket answers when the session is not there: the notice, the close."""
    with client.websocket_connect(f"/ws/{session_id}", headers=headers) as ws:
        # a socket that was let in answers this with an error reply (nothing to cancel) and stays open
        ws.send_json({"jsonrpc": "2.0", "method": "cancel", "id": 1})
        notice = ws.receive_json()
        assert notice.get("method") == "error", notice
        with pytest.raises(WebSocketDisconnect) as closed:
            ws.receive_json()
    return notice, closed.value.code


def test_another_keys_jsonrpc_session_cannot_be_connected_to(tmp_path):
    runtime = keyed(tmp_path, "Only for A.")
    with TestClient(create_app(runtime.settings, runtime)) as client:
        made = client.post("/create_session", headers=A)
        assert made.status_code == 200
        sid = made.json()["session_id"]

        unknown_notice, unknown_code = refused_socket(client, UNKNOWN, B)
        notice, code = refused_socket(client, sid, B)
        assert code == unknown_code == 1008
        assert json.dumps(notice) == json.dumps(unknown_notice).replace(UNKNOWN, sid)
        notice, code = refused_socket(client, f"{sid}?api_key=key-b", {})  # a browser's key, in the URL
        assert code == 1008 and notice["params"]["error"]["code"] == unknown_notice["params"]["error"]["code"]

        for key in (A, OPERATOR):
            with client.websocket_connect(f"/ws/{sid}", headers=key) as ws:
                ws.send_json({"jsonrpc": "2.0", "method": "generate", "params": {"message": "hi"}, "id": 1})
                assert ws.receive_json()["result"] == {"status": "processing"}
                methods = []
                while not methods or methods[-1] != "end":
                    methods.append(ws.receive_json()["method"])
                assert "final_text" in methods and "error" not in methods


# -- the Responses API


async def test_a_keys_stored_responses_are_its_own(tmp_path):
    runtime = keyed(tmp_path, "Hello Ada.", "Your name is Ada.")
    async with client_for(runtime) as client:
        first = (await client.post("/v1/responses", json={"input": "I am Ada."}, headers=A)).json()
        rid, unknown_id = first["id"], "resp_" + UNKNOWN

        for method, path, body in [("GET", "/v1/responses/{}", None), ("DELETE", "/v1/responses/{}", None),
                                   ("POST", "/v1/responses/{}/cancel", None),
                                   ("POST", "/v1/responses", {"input": "Who am I?", "previous_response_id": "{}"})]:
            def ask(id_):
                sent = json.loads(json.dumps(body).replace("{}", id_)) if body else None
                return client.request(method, path.format(id_), json=sent, headers=B)

            as_unknown(await ask(rid), await ask(unknown_id), rid, unknown_id)

        assert (await client.get(f"/v1/responses/{rid}", headers=A)).json() == first
        assert (await client.get(f"/v1/responses/{rid}", headers=OPERATOR)).json() == first
        chained = await client.post("/v1/responses", json={"input": "Who am I?", "previous_response_id": rid},
                                    headers=OPERATOR)
        assert chained.status_code == 200 and "I am Ada." in runtime.models.loaded["fake.gguf"].backend.prompts[-1]
        second = chained.json()["id"]
        as_unknown(await client.get(f"/v1/responses/{second}", headers=A),  # the operator's own, continuing A's
                   await client.get(f"/v1/responses/{unknown_id}", headers=A), second, unknown_id)
        assert (await client.delete(f"/v1/responses/{rid}", headers=A)).json()["deleted"] is True


async def test_another_keys_running_response_cannot_be_read_or_cancelled(tmp_path):
    runtime = keyed(tmp_path, "word " * 200, delay=0.05)
    async with client_for(runtime) as client:
        started = (await client.post("/v1/responses", json={"input": "go", "background": True}, headers=A)).json()
        rid, unknown_id = started["id"], "resp_" + UNKNOWN
        await asyncio.sleep(0.1)
        for method, path in [("GET", "/v1/responses/{}"), ("POST", "/v1/responses/{}/cancel")]:
            reply = await client.request(method, path.format(rid), headers=B)
            unknown = await client.request(method, path.format(unknown_id), headers=B)
            as_unknown(reply, unknown, rid, unknown_id)
        assert (await client.get(f"/v1/responses/{rid}", headers=A)).json()["status"] == "in_progress"
        assert (await client.post(f"/v1/responses/{rid}/cancel", headers=OPERATOR)).json()["status"] == "cancelled"
    assert client._transport.app.state.response_jobs.running == {}


# -- operator keys


def test_operator_keys_come_from_the_key_file_or_the_environment(tmp_path):
    path = tmp_path / "api-keys"
    plain, ops = create_key(path, "laptop"), create_key(path, "ops", operator=True)
    entries = json.loads(path.read_text())["keys"]
    assert entries[0] == {"name": "laptop", "sha256": digest(plain)}  # the format older qwends read and wrote
    assert entries[1]["operator"] is True
    assert [k.operator for k in read_key_file(path)] == [False, True]

    settings = Settings(_env_file=None, data_dir=tmp_path, api_keys=["both", "env"], operator_keys=["both"])
    assert settings.api_keys_file == path
    keys = ApiKeys.load(settings)
    assert not keys.identify(plain).operator and keys.identify(ops).operator
    assert keys.identify("both").operator and not keys.identify("env").operator  # listed twice: an operator
    # the owner id follows the key itself, not its name or its place in a list
    assert keys.identify("env").owner == "sha256:" + digest("env")[:16] != keys.identify("both").owner
    assert "env" not in keys.identify("env").owner


def test_keys_cli_makes_and_lists_operator_keys(tmp_path):
    from qwend.cli.main import app

    runner = CliRunner()
    made = runner.invoke(app, ["keys", "create", "ops", "--operator", "--data-dir", str(tmp_path)])
    assert made.exit_code == 0 and made.stdout.strip().startswith("qwend-")
    assert runner.invoke(app, ["keys", "create", "ci", "--data-dir", str(tmp_path)]).exit_code == 0
    lines = runner.invoke(app, ["keys", "list", "--data-dir", str(tmp_path)]).stdout.splitlines()
    assert [line.split("\t")[0] for line in lines if line.endswith("operator")] == ["ops"]
    assert [k.operator for k in read_key_file(tmp_path / "api-keys")] == [True, False]


async def test_an_operator_key_from_the_key_file_sees_every_session(tmp_path):
    ops = create_key(tmp_path / "data" / "api-keys", "ops", operator=True)
    runtime = keyed(tmp_path, operator_keys=[])
    async with client_for(runtime) as client:
        made = (await client.post("/v1/sessions", json={}, headers=A)).json()["session_id"]
        listed = (await client.get("/v1/sessions", headers={"Authorization": f"Bearer {ops}"})).json()["sessions"]
        assert [s["session_id"] for s in listed] == [made]
        assert (await client.get("/v1/sessions", headers=OPERATOR)).status_code == 401  # no longer configured

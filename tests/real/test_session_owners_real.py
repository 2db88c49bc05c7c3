"""Session and response owners on a real `qwend serve` with the real default model, its keys given in the
environment (QWEND_API_KEYS, QWEND_OPERATOR_KEYS) as a deployment gives them: a session and a stored
response made with one key are an unknown id to another, and an operator's key reaches both."""

import httpx
import pytest

from tests.conftest import Daemon

A, B, OPERATOR = ({"Authorization": f"Bearer qwend-test-owner-{n}"} for n in ("a", "b", "op"))


@pytest.fixture(scope="module")
def owned(model_path, tmp_path_factory):
    server = Daemon(tmp_path_factory.mktemp("owners"), QWEND_API_KEYS="qwend-test-owner-a,qwend-test-owner-b",
                    QWEND_OPERATOR_KEYS="qwend-test-owner-op").start()
    yield server
    server.stop()


def test_another_key_gets_404_and_the_operator_sees_all(owned):
    with httpx.Client(base_url=owned.url, timeout=120) as http:
        sid = http.post("/v1/sessions", json={"title": "A's"}, headers=A).json()["session_id"]
        turn = http.post(f"/v1/sessions/{sid}/chat", json={"message": "Say hello.", "max_tokens": 8}, headers=A)
        assert turn.status_code == 200 and turn.json()["response"].strip()
        rid = http.post("/v1/responses", json={"input": "Say hi.", "max_output_tokens": 8}, headers=A).json()["id"]

        assert http.get("/v1/sessions", headers=B).json()["sessions"] == []
        for reply in (http.get(f"/v1/sessions/{sid}", headers=B),
                      http.post(f"/v1/sessions/{sid}/chat", json={"message": "What did they say?"}, headers=B),
                      http.get(f"/v1/responses/{rid}", headers=B),
                      http.post("/v1/responses", json={"input": "And?", "previous_response_id": rid}, headers=B)):
            assert reply.status_code == 404

        assert [s["session_id"] for s in http.get("/v1/sessions", headers=OPERATOR).json()["sessions"]] == [sid]
        assert len(http.get(f"/v1/sessions/{sid}", headers=OPERATOR).json()["messages"]) >= 2
        assert http.get(f"/v1/responses/{rid}", headers=OPERATOR).status_code == 200

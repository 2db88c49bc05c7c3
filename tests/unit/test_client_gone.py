"""A client that leaves before a full (non-streamed) answer is ready, on every protocol: the generation stops
and the one handler for ClientGone (qwend/api/errors.py) answers 499, never a 500 (seed 004's route had none)."""

from __future__ import annotations

import asyncio

import pytest

from tests.conftest import fake_runtime
from tests.fakes import FakeBackend
from tests.unit.test_bad_input import ENDPOINTS
from tests.unit.test_lmstudio_api import _request_then_leave


@pytest.mark.parametrize("endpoint", [e for e in ENDPOINTS if e.generates and "{session}" not in e.path],
                         ids=lambda e: e.path)
async def test_leaving_a_full_answer_stops_it_with_a_499(tmp_path, endpoint):
    from qwend.app import create_app

    backend = FakeBackend("w " * 200, delay=0.05)
    runtime = fake_runtime(tmp_path, backend)
    app = create_app(runtime.settings, runtime)
    app.state.runtime = runtime
    sent = await _request_then_leave(app, endpoint.path, endpoint.valid, lambda sent: backend.active)
    assert sent[0]["status"] == 499
    assert backend.stopped_early == 1 and backend.active == 0


@pytest.mark.parametrize("stream", [True, False], ids=["streamed", "whole"])
async def test_a_stopped_session_turn_keeps_the_question_and_the_answer_so_far(tmp_path, stream):
    """Stop in a chat UI, a closed tab, a dropped connection: the user's message stays in the session with the
    partial answer, marked stopped (and the next turn sees both)."""
    from qwend.app import create_app

    backend = FakeBackend("w " * 200, delay=0.02, context_length=4096)
    runtime = fake_runtime(tmp_path, backend)
    app = create_app(runtime.settings, runtime)
    app.state.runtime = runtime
    session = await runtime.sessions.create("general", None, None, {}, None)

    generating = []  # polls while the answer is generated (every 10 ms)

    def left(sent):  # after some text has gone out (streamed) or been generated (whole)
        if stream:
            return any(b"event: token" in m.get("body", b"") for m in sent)
        generating.extend([1] if backend.active else [])
        return len(generating) > 15

    sent = await _request_then_leave(app, f"/v1/sessions/{session.id}/chat",
                                     {"message": "Tell me a story.", "stream": stream}, left)
    for _ in range(200):  # a stream's generator is closed after its response ended: wait for the turn to be kept
        if kept := await runtime.sessions.messages(session.id):
            break
        await asyncio.sleep(0.01)
    assert backend.stopped_early == 1 and backend.active == 0
    assert [(m.role, m.stopped) for m in kept] == [("user", False), ("assistant", True)]
    assert kept[0].content == "Tell me a story." and kept[1].content and ("w " * 200).startswith(kept[1].content)

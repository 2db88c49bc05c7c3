"""A client that leaves before a full (non-streamed) answer is ready, on every protocol: the generation stops
and the one handler for ClientGone (qwend/api/errors.py) answers 499, never a 500 (seed 004's route had none)."""

from __future__ import annotations

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

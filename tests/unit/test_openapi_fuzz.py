"""Property-based requests generated from the app's own /openapi.json (schemathesis): no operation answers
with a server error, and every 4xx is in its protocol's error shape. In-process, on the fake backend, with
the network tools off; a few examples per operation, derandomized, so the run is the same every time."""

from __future__ import annotations

import atexit
import shutil
import tempfile
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import response_schema_conformance

from qwend.app import create_app
from qwend.engine import manager
from tests.conftest import fake_runtime
from tests.error_shapes import error_shape_problem, protocol_of
from tests.fakes import FakeBackend

BASE_URL = "http://localhost"  # a host the access guard lets in
# Routes that would reach the network (pulls from the hub) or delete the fixture's model file.
EXCLUDED_PATHS = ["/api/pull", "/api/delete"]


def _app():
    # schemathesis parametrizes at collection time, so the app (and its data dir) exists from import on
    data = Path(tempfile.mkdtemp(prefix="qwend-fuzz-"))
    atexit.register(shutil.rmtree, data, ignore_errors=True)
    runtime = fake_runtime(data, FakeBackend("Hello there, friend."), enable_web_search=False,
                           enable_code_execution=False, enable_file_operations=False)
    return create_app(runtime.settings, runtime)


APP = _app()
schema = schemathesis.openapi.from_dict(APP.openapi())  # what GET /openapi.json serves
schema.app = APP
schema = schema.exclude(path=EXCLUDED_PATHS)
# The coverage phase sends each field's wrong types and out-of-range values once per operation; its positive
# half (boundary values) is left to the generate phase, which draws valid and invalid bodies alike.
schema.config.phases.coverage.generation.update(modes=["negative"])


@pytest.fixture(autouse=True, scope="module")
def fake_loads():
    """A load (a load route, or a request after Ollama's keep_alive 0 unloaded the model) gets a new fake."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(manager, "backend_loader", lambda name: lambda model, settings: FakeBackend())
        yield


def no_server_error(ctx, response, case) -> bool | None:
    """not_a_server_error, but for seed 002's documented 503 for a chat model it does not have
    (docs/lmstudio.md: its proxy answered so when its upstream had no such model)."""
    if response.status_code == 503 and case.path.startswith("/chat") and "Chat service unavailable: model " in (
            response.text):
        return True
    return not_a_server_error(ctx, response, case)


def error_shape(ctx, response, case) -> bool | None:
    """A 4xx answers in the error shape of its protocol (seed 002's failed load has a body of its own)."""
    if not 400 <= response.status_code < 500 or case.path == "/models/load":
        return None
    problem = error_shape_problem(protocol_of(case.formatted_path), response.json())
    assert problem is None, f"{response.status_code} from {case.method} {case.formatted_path}: {problem}"
    return True


@schema.parametrize()
@settings(max_examples=5, deadline=None, derandomize=True, database=None, phases=[Phase.explicit, Phase.generate],
          suppress_health_check=list(HealthCheck))
def test_no_server_errors(case):
    case.call_and_validate(base_url=BASE_URL, checks=[no_server_error, response_schema_conformance, error_shape])

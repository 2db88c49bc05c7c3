"""Shared fixtures. Unit tests use FakeBackend in-process; tests under real/ use the real default model,
pulled by ./run-tests into the default data dir (or QWEND_DATA_DIR)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from qwend.cli.local_server import free_port
from qwend.engine.manager import LoadedModel
from qwend.engine.scheduler import Scheduler
from qwend.models.store import LocalModel
from qwend.runtime import Runtime
from qwend.settings import DEFAULT_MODEL, Settings
from tests.fakes import FakeBackend

ARTIFACTS = Path(__file__).parent.parent / "test-artifacts"


def fake_runtime(tmp_path: Path, backend: FakeBackend, *, queue_size: int = 4, **settings) -> Runtime:
    """A Runtime whose default model `fake.gguf` is already loaded with `backend`; `settings` override.
    Starlette's TestClient opens WebSockets as host `testserver`, which the Host guard is told to accept."""
    settings.setdefault("allowed_hosts", ["testserver"])
    models_dir = tmp_path / "models"
    models_dir.mkdir(exist_ok=True)
    (models_dir / "fake.gguf").write_bytes(b"GGUF")
    settings = Settings(_env_file=None, data_dir=tmp_path / "data", models_dir=models_dir, model="fake.gguf",
                        queue_size=queue_size, **settings)
    runtime = Runtime.create(settings)
    model = LocalModel("fake.gguf", models_dir / "fake.gguf")
    runtime.models.loaded[model.name] = LoadedModel(model, backend, Scheduler(backend, queue_size=queue_size))
    return runtime


def client_for(runtime: Runtime) -> httpx.AsyncClient:
    """An in-process HTTP client for the app around `runtime`."""
    from qwend.app import create_app

    app = create_app(runtime.settings, runtime)
    app.state.runtime = runtime  # the lifespan would set it; ASGITransport does not run lifespans
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://localhost")


@pytest.fixture(scope="session")
def model_path() -> Path:
    """The real default model, as ./run-tests pulled it."""
    from qwend.models.store import ModelStore

    settings = Settings(_env_file=None)
    model = ModelStore(settings.store_dir, settings.models_dir).resolve(DEFAULT_MODEL)
    if not model.present:
        pytest.fail(f"the default model is not at {model.path}; run `qwend pull {DEFAULT_MODEL}` (./run-tests does)")
    return model.path


@pytest.fixture(scope="session")
def hf_model_dir(model_path: Path) -> Path:
    """The default model as a Hugging Face folder (transformers, MLX), converted from its GGUF once by
    ./run-tests (`qwend pull --backend transformers`) and kept in the store."""
    from qwend.models.store import ModelStore

    settings = Settings(_env_file=None)
    model = ModelStore(settings.store_dir, settings.models_dir, folders=True).resolve(DEFAULT_MODEL)
    if not model.present:
        pytest.fail(f"no converted model at {model.path}; run `qwend pull --backend transformers` (./run-tests does)")
    return model.path


@pytest.fixture(scope="session")
def tiny_model_dir(hf_model_dir: Path) -> Path:
    """A tiny random Qwen2 with the default model's tokenizer (see tests/tiny_model.py), made once."""
    from tests.tiny_model import make_tiny_qwen2

    return make_tiny_qwen2(hf_model_dir, Settings(_env_file=None).store_dir / "test" / "tiny-random-qwen2")


@pytest.fixture(scope="session")
def tiny_vision_model_dir(hf_model_dir: Path) -> Path:
    """A tiny random Qwen2.5-VL folder laid out as a real one, with the default model's tokenizer (see
    tests/tiny_model.py), made once."""
    from tests.tiny_model import make_tiny_qwen2_5_vl

    return make_tiny_qwen2_5_vl(hf_model_dir, Settings(_env_file=None).store_dir / "test" / "tiny-random-qwen2.5-vl")


@pytest.fixture(scope="session")
def tiny_vision_gguf_dir(hf_model_dir: Path) -> Path:
    """A tiny random Qwen2.5-VL as a GGUF model with its mmproj beside it (tests/tiny_vision.py), made once."""
    from tests.tiny_vision import make_tiny_vl_gguf

    return make_tiny_vl_gguf(hf_model_dir, Settings(_env_file=None).store_dir / "test" / "tiny-random-qwen2.5-vl-gguf")


@pytest.fixture(scope="session")
def tiny_qwen3_dir() -> Path:
    """Tiny random Qwen3-generation GGUFs with the real Qwen3 tokenizer and template: a Qwen3, its twin whose
    template opens the <think> block, a hybrid Qwen3.5 (tests/tiny_qwen3.py), made once."""
    from tests.tiny_qwen3 import make_tiny_qwen3_ggufs

    return make_tiny_qwen3_ggufs(Settings(_env_file=None).store_dir / "test" / "tiny-random-qwen3-ggufs")


@pytest.fixture(scope="session")
def postgres_url() -> str:
    """A real PostgreSQL server (Debian's package, a cluster of its own on a loopback port) for the session."""
    from qwend.cli.local_server import postgres_server

    with postgres_server() as url:
        yield url


@pytest.fixture
def postgres_database(postgres_url: str) -> str:
    """A new, empty database on that server for one test; its URL. Dropped afterwards."""
    import uuid

    import psycopg

    name = f"test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(postgres_url, autocommit=True) as admin:
        admin.execute(f"CREATE DATABASE {name}")
    yield postgres_url.rsplit("/", 1)[0] + f"/{name}"
    with psycopg.connect(postgres_url, autocommit=True) as admin:
        admin.execute(f"DROP DATABASE {name} WITH (FORCE)")


class Daemon:
    """A real `qwend serve` process with the real default model. Its data dir (sessions, workspace) is its own;
    only the pulled models are shared, through a link to the default store."""

    def __init__(self, workdir: Path, **env: str) -> None:
        self.workdir = workdir
        self.data_dir = workdir / "data"
        self.data_dir.mkdir(exist_ok=True)
        if not (self.data_dir / "models").exists():
            (self.data_dir / "models").symlink_to(Settings(_env_file=None).store_dir)
        self.env = {**os.environ, "QWEND_PULL_MISSING": "false", "QWEND_DATA_DIR": str(self.data_dir), **env}
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen | None = None

    def start(self, *, with_model: bool = True, log_level: str = "warning") -> Daemon:
        """Start `qwend serve` and wait until it answers /health (with its model loaded, unless not asked)."""
        log = self.workdir / "daemon.log"
        with open(log, "a") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "qwend", "serve", "--port", str(self.port), "--log-level", log_level],
                stdout=out, stderr=subprocess.STDOUT, env=self.env, cwd=self.workdir,
            )
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                pytest.fail(f"qwend serve exited with {self.process.returncode}: {log.read_text()}")
            try:
                if httpx.get(f"{self.url}/health", timeout=1).json().get("model_loaded") or not with_model:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        self.process.kill()
        pytest.fail(f"qwend serve did not become healthy: {log.read_text()}")

    def kill(self) -> None:
        """SIGKILL: no shutdown code runs, as in a crash."""
        self.process.kill()
        self.process.wait(timeout=30)

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=30)


@pytest.fixture(scope="session")
def daemon(model_path: Path, tmp_path_factory) -> str:
    """A real `qwend serve` process with the real default model; yields its base URL."""
    server = Daemon(tmp_path_factory.mktemp("daemon"), QWEND_QUEUE_SIZE="2", QWEND_PARALLEL="2").start()
    yield server.url
    server.stop()

"""Serve qwend, or another OpenAI-compatible server, on a free loopback port for benchmarks and evals."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import uvicorn
from starlette.types import ASGIApp

from qwend.app import create_app
from qwend.runtime import Runtime

if TYPE_CHECKING:
    from rich.console import Console


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve_in_thread(runtime: Runtime, console: Console | None = None) -> AbstractContextManager[str]:
    """The daemon's app over `runtime` (its start model loaded) in this process; yields the base URL. With a
    `console`, a spinner shows while the start model loads."""
    return serve_app_in_thread(create_app(runtime.settings, runtime), ready=lambda: not runtime.models.loading,
                               waiting=_spinner(console, f"loading {runtime.settings.model}"))


@contextmanager
def serve_app_in_thread(app: ASGIApp, ready: Callable[[], bool] = lambda: True,
                        waiting: AbstractContextManager = nullcontext()) -> Iterator[str]:
    """`app` served by uvicorn in a background thread on a free loopback port; yields the base URL once it is
    up and `ready()` (inside `waiting`, e.g. a spinner), and stops the server (the app's shutdown runs) on exit."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", access_log=False,
                                           log_config=None))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    with waiting:
        while not server.started or not ready():  # (a start model loads once the server is up)
            if not thread.is_alive():
                raise RuntimeError("the in-process server failed to start")
            time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join()


@contextmanager
def llama_cpp_server(
    model_path: Path, *, context_length: int = 8192, alias: str | None = None, projector: Path | None = None,
    console: Console | None = None,
) -> Iterator[str]:
    """llama-cpp-python's own OpenAI server (`python -m llama_cpp.server`) on `model_path`, its model listed
    as `alias` (default: the path); with a multimodal `projector` (mmproj GGUF) it reads images. Requests
    queue rather than cut off the running one. With a `console`, a spinner shows while it loads the model."""
    port = free_port()
    log = tempfile.TemporaryFile("w+")  # a file, not a pipe: its verbose log would fill a pipe and block it
    proc = subprocess.Popen(
        [sys.executable, "-m", "llama_cpp.server", "--model", str(model_path), "--host", "127.0.0.1",
         "--port", str(port), "--n_ctx", str(context_length), "--interrupt_requests", "false",
         "--n_threads", "-1",  # every core, as qwend (its default is half of them)
         *(["--model_alias", alias] if alias else []),
         *(["--chat_format", "mtmd", "--clip_model_path", str(projector)] if projector else [])],
        stdout=log, stderr=subprocess.STDOUT, text=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        with _spinner(console, f"llama_cpp.server loading {model_path.name}"):
            while True:
                if proc.poll() is not None:
                    log.seek(0)
                    raise RuntimeError(f"llama_cpp.server exited: {log.read()[-2000:]}")
                try:
                    httpx.get(f"{base}/v1/models", timeout=1).raise_for_status()
                    break
                except httpx.HTTPError:
                    if time.monotonic() > deadline:
                        raise RuntimeError("llama_cpp.server did not start in 120 s") from None
                    time.sleep(0.3)
        yield base
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()


@contextmanager
def postgres_server() -> Iterator[str]:
    """A PostgreSQL server of its own (Debian's `postgresql` package: initdb in a temporary folder) on a free
    loopback port, trusting local connections; yields its URL and deletes everything on exit. As root, the
    server runs as the `postgres` user (it refuses to run as root)."""
    bin_dir = _postgres_bin_dir()
    as_user = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    with tempfile.TemporaryDirectory(prefix="qwend-pg-") as folder:
        data, sockets = Path(folder) / "data", Path(folder) / "sockets"
        sockets.mkdir()
        if as_user:
            shutil.chown(folder, "postgres")
            shutil.chown(sockets, "postgres")
        port = free_port()
        subprocess.run([*as_user, str(bin_dir / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust",
                        "--no-sync", "-E", "UTF8"], check=True, capture_output=True)
        options = f"-p {port} -k {sockets} -c listen_addresses=127.0.0.1 -c fsync=off"
        subprocess.run([*as_user, str(bin_dir / "pg_ctl"), "-D", str(data), "-o", options, "-l",
                        str(Path(folder) / "server.log"), "-w", "start"], check=True, capture_output=True)
        try:
            yield f"postgresql://postgres@127.0.0.1:{port}/postgres"
        finally:
            subprocess.run([*as_user, str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop"],
                           capture_output=True)


def _postgres_bin_dir() -> Path:
    """Where initdb and pg_ctl are: on PATH, or Debian's /usr/lib/postgresql/<version>/bin (the newest)."""
    if found := shutil.which("initdb"):
        return Path(found).parent
    versions = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda p: int(p.parts[-3]))
    if not versions:
        raise RuntimeError("PostgreSQL is not installed (Debian: apt-get install postgresql)")
    return versions[-1].parent


def _spinner(console: Console | None, text: str):
    """A rich status spinner on `console` while a model loads (nothing without a console)."""
    return console.status(text) if console is not None else nullcontext()

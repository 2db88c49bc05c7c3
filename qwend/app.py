"""The ASGI app: the Runtime is built in the lifespan, protocol routers are mounted, errors mapped once."""

from __future__ import annotations

import logging
from contextlib import asynccontextmanager

from fastapi import FastAPI

from qwend import __version__
from qwend.api import anthropic, cortex, daemon, jsonrpc, llama_server, lmstudio, ollama, openai, sessions
from qwend.api.errors import install_error_handlers
from qwend.errors import InsufficientMemory, ModelNotFound, UpstreamError
from qwend.runtime import Runtime
from qwend.settings import Settings

log = logging.getLogger(__name__)


def create_app(settings: Settings, runtime: Runtime | None = None) -> FastAPI:
    """Build the app. A prebuilt `runtime` (tests, benchmarks) is used as is and not closed on shutdown."""

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        owned = runtime is None
        app.state.runtime = Runtime.create(settings) if owned else runtime
        if owned:
            await app.state.runtime.start()
        try:  # the start model loads while the daemon already answers (/health says `loading`); it stays
            await app.state.runtime.models.request(None, keep_alive=-1)
        except (ModelNotFound, UpstreamError, InsufficientMemory) as exc:
            log.warning("starting without a model: %s", exc.message)
        try:
            yield
        finally:
            if owned:
                await app.state.runtime.close()

    app = FastAPI(
        title="qwend",
        version=__version__,
        description="A local daemon for Qwen models.",
        lifespan=lifespan,
    )
    install_error_handlers(app)
    app.include_router(daemon.router)
    app.include_router(sessions.router)
    app.include_router(openai.router)
    app.include_router(cortex.router)
    app.include_router(lmstudio.router)
    app.include_router(jsonrpc.router)
    app.include_router(llama_server.router)
    app.include_router(ollama.router)
    app.include_router(anthropic.router)
    return app

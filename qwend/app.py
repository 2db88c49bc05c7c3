"""The ASGI app: the Runtime is built in the lifespan, protocol routers are mounted, errors mapped once."""

from __future__ import annotations

import logging
from contextlib import asynccontextmanager

from fastapi import FastAPI
from starlette.middleware.cors import CORSMiddleware

from qwend import __version__
from qwend.access import ApiKeys
from qwend.api import (
    anthropic, completions, cortex, daemon, jsonrpc, llama_server, lmstudio, ollama, openai, responses, sessions, ui,
)
from qwend.api.affinity import AFFINITY_HEADER, INSTANCE_HEADER, Affinity
from qwend.api.errors import install_error_handlers
from qwend.api.guard import LOCAL_ORIGIN, AccessGuard
from qwend.api.observe import RequestLog
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
            await app.state.response_jobs.stop()  # running responses: stopped, then stored as cancelled
            if owned:  # after uvicorn let running requests finish (or cancelled them): sessions are stored per turn
                log.info("shutting down: unloading models, saving KV states, closing the session store")
                await app.state.runtime.close()
                log.info("stopped")

    app = FastAPI(
        title="qwend",
        version=__version__,
        description="A local daemon for Qwen models.",
        lifespan=lifespan,
    )
    app.state.response_jobs = responses.ResponseJobs()  # the API's own jobs, not the Runtime's
    install_error_handlers(app)
    # the last added runs first: every answer is labelled with this daemon's name (refusals too), a request is
    # logged (and given its id), then CORS answers preflights and labels answers, then the guard decides
    # whether it reaches a route at all
    app.add_middleware(AccessGuard, settings=settings, keys=ApiKeys.load(settings))
    app.add_middleware(CORSMiddleware, allow_origins=settings.cors_origins, allow_origin_regex=LOCAL_ORIGIN,
                       allow_methods=["*"], allow_headers=["*"],
                       expose_headers=["X-Request-ID", "Retry-After", INSTANCE_HEADER, AFFINITY_HEADER])
    app.add_middleware(RequestLog)
    app.add_middleware(Affinity, instance=settings.instance_name)
    app.include_router(daemon.router)
    app.include_router(sessions.router)
    app.include_router(openai.router)
    app.include_router(completions.router)
    app.include_router(responses.router)
    app.include_router(cortex.router)
    app.include_router(lmstudio.router)
    app.include_router(jsonrpc.router)
    app.include_router(llama_server.router)
    app.include_router(ollama.router)
    app.include_router(anthropic.router)
    ui.mount_ui(app)  # last: a mount matches every path under it
    return app

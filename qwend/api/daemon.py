"""qwend's own routes (seed 000): `GET /health`, `GET /metrics`, `GET /`, tools and profiles (chat and sessions:
api/sessions.py)."""

from __future__ import annotations

from fastapi import APIRouter, Response
from prometheus_client import CONTENT_TYPE_LATEST

from qwend import __version__
from qwend.api.deps import RuntimeDep
from qwend.api.jsonbody import JsonRoute
from qwend.api.wire.tools import InvokeBody, native_tool

router = APIRouter(route_class=JsonRoute, tags=["qwend"])


@router.get("/health", summary="Daemon health (seeds 000 and 002)")
@router.get("/api/health", summary="Daemon health (seed 001; the same body as /health)")
async def health(runtime: RuntimeDep):
    default = runtime.models.loaded.get(runtime.models.default_name())
    return {
        "status": "healthy",
        "model_loaded": default is not None,
        "model_size": default.model.size_class.upper() if default else None,
        "model": default.name if default else runtime.models.default_name(),
        "generation_in_progress": runtime.models.generating,
        "backend": runtime.settings.backend,  # the engine every model runs on
        "memory": {"budget_bytes": runtime.models.budget, "used_bytes": runtime.models.memory_used},  # estimated
        "loading": [  # loads under way; requests for these models wait for them
            {"model": m.name, "started_at": m.started_at, "memory_bytes": m.memory.total}
            for m in runtime.models.loading.values()
        ],
        "queue": {
            name: {"running": m.scheduler.running, "waiting": m.scheduler.waiting}
            for name, m in runtime.models.loaded.items()
        },
        "tool_parse_outcomes": runtime.metrics.tool_parse_outcomes(),
        "available_profiles": runtime.profiles.names(),
        "available_tools": runtime.tools.names(),
        "version": __version__,
    }


@router.get("/metrics", include_in_schema=False)
async def metrics(runtime: RuntimeDep):
    """Prometheus text format; the families are listed in docs/operations.md."""
    sessions = await runtime.sessions.count()
    return Response(runtime.metrics.render(runtime.models, sessions), media_type=CONTENT_TYPE_LATEST)


@router.head("/", include_in_schema=False)
async def alive() -> Response:
    return Response()  # Ollama's client asks this before anything else


@router.get("/", summary="Name, version and status (seeds 000, 001 and 004)")
async def root(runtime: RuntimeDep):
    return {
        "name": "qwend",
        "version": __version__,
        "status": "running",
        "message": "qwend is running",
        "default_model": runtime.models.default_name(),
        "models_loaded": sorted(runtime.models.loaded),
        "docs": "/docs",
        "redoc": "/redoc",
        "openapi": "/openapi.json",
        "help": "/help",
    }


@router.get("/v1/tools", summary="Every tool, with its JSON schema and whether it is enabled")
async def list_tools(runtime: RuntimeDep):
    return {"tools": [native_tool(t) for t in runtime.tools.all()]}


@router.post("/v1/tools/{name}/invoke", summary="Run one tool directly, without the model")
async def invoke_tool(name: str, body: InvokeBody, runtime: RuntimeDep):
    return (await runtime.tools.invoke(name, body.arguments)).to_dict()


@router.get("/v1/profiles", summary="Agent profiles: system prompt, tools, model and sampling defaults")
async def list_profiles(runtime: RuntimeDep):
    return {"profiles": [p.public() for p in runtime.profiles.all()]}


@router.get("/v1/profiles/{name}", summary="One agent profile")
async def get_profile(name: str, runtime: RuntimeDep):
    return runtime.profiles.get(name).public()


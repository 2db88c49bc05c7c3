"""Seed 002 (the LM Studio proxy): /help, /models/load, /models/unload and the /chat routes. A translator.

(Its `GET /health` and `GET /models` are shared with other seeds and live with them.)
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import JSONResponse

from qwend.api.answer import answer
from qwend.api.deps import Requester, RequesterDep, RuntimeDep
from qwend.api.jsonbody import JsonRoute
from qwend.api.wire import lmstudio as wire
from qwend.chat.service import chat, complete
from qwend.errors import BackendError, ModelNotFound, QwendError, UpstreamError
from qwend.runtime import Runtime
from qwend.types import ChatEvent, Done, Started, Token

router = APIRouter(route_class=JsonRoute.answering(wire.LMSTUDIO), tags=["LM Studio proxy (seed 002)"])


@router.get("/help", summary="API documentation: every route of this daemon, grouped by protocol")
async def api_help(request: Request):
    app = request.app
    return wire.help_body(app.routes, name=app.title, version=app.version, description=app.description)


@router.post("/models/load", summary="Load a model by model_key; exclusive unloads every other model")
async def load_model(body: wire.LoadBody, runtime: RuntimeDep):
    before = set(runtime.models.loaded)
    try:
        loaded = await runtime.models.load(body.model_key, exclusive=body.exclusive)
    except QwendError as exc:
        # the seed answers a failed load with its own body, {"loaded": false, "error"}, as a 200: its clients
        # (PowerShell's Invoke-RestMethod) throw on any other status before they can read the body
        return JSONResponse(wire.load_failure_body(body.model_key, exc.message))
    unloaded = sorted(before - set(runtime.models.loaded))
    return wire.load_body(body, loaded.name, already_loaded=loaded.name in before, unloaded=unloaded)


@router.post("/models/unload", summary="Unload one model (model_key) or all of them (unload_all: true)")
async def unload_model(body: wire.UnloadBody, runtime: RuntimeDep):
    target = wire.unload_target(body)
    if target is None:
        return wire.unload_body(None, sorted(await runtime.models.unload_all()))
    before = set(runtime.models.loaded)
    await runtime.models.unload(target)
    return wire.unload_body(target, sorted(before - set(runtime.models.loaded)))


# path, summary, the setting naming its default model (None: the daemon's), whether images may be sent
CHAT_ROUTES = (
    ("/chat", "Chat with any model (model_key; default: the daemon's model)", None, True),
    ("/chat/regular", "Text-only chat with the default regular model", "default_regular_model", False),
    ("/chat/vision", "Chat with images, with the default vision model", "default_vision_model", True),
)


def _chat_route(default_setting: str | None, images_allowed: bool, stream: bool):
    async def route(body: wire.ChatBody, request: Request, runtime: RuntimeDep, who: RequesterDep):
        model = getattr(runtime.settings, default_setting) if default_setting else None
        return await _answer(runtime, request, who, body, default_model=model, images_allowed=images_allowed,
                             stream=stream)

    return route


def _add_chat_routes() -> None:
    for path, summary, setting, images in CHAT_ROUTES:
        router.add_api_route(path, _chat_route(setting, images, False), methods=["POST"], summary=summary)
        router.add_api_route(f"{path}/stream", _chat_route(setting, images, True), methods=["POST"],
                             summary=f"{summary}, streamed as NDJSON fragments")


_add_chat_routes()


async def _answer(
    runtime: Runtime, request: Request, who: Requester, body: wire.ChatBody, *, default_model: str | None,
    images_allowed: bool, stream: bool,
):
    chat_request = who.attach(wire.to_chat_request(body, default_model=default_model, images_allowed=images_allowed))
    try:
        return await answer(request, wire.LMSTUDIO, chat(runtime, chat_request), stream=stream, frames=_fragments,
                            fold=_answered)
    except UpstreamError:
        raise  # the seed's own words for an upstream that is not there: {"detail": "Could not connect to …"}
    except (ModelNotFound, BackendError) as exc:
        # the seed's answer when its upstream has no such model or cannot run it
        raise HTTPException(503, f"Chat service unavailable: {exc.message}") from exc


async def _answered(events: AsyncIterator[ChatEvent]) -> dict[str, Any]:
    return wire.response_body(await complete(events))


async def _fragments(events: AsyncIterator[ChatEvent]) -> AsyncIterator[dict[str, Any]]:
    model = ""
    async for event in events:
        match event:
            case Started(name, _):
                model = name
            case Token(text) if text:
                yield wire.fragment(text)
            case Done(reason, usage):
                yield wire.done(model, reason, usage)

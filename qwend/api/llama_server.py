"""Seed 004 (the llama-cpp-python server): `GET /models`, `POST /setModel`, `POST /chat/completions` (the
OpenAI route without `/v1`) and `POST /restore_cache`. `GET /models` is also seed 002's list of loaded models."""

from __future__ import annotations

from dataclasses import replace

from fastapi import APIRouter, Request

from qwend.api import openai
from qwend.api.deps import RequesterDep, RuntimeDep
from qwend.api.jsonbody import JsonRoute
from qwend.api.streaming import unless_disconnected
from qwend.api.wire import llama_server as wire
from qwend.api.wire.openai import to_chat_request
from qwend.chat.service import chat, complete

router = APIRouter(route_class=JsonRoute, tags=["llama.cpp server (seed 004)"])

router.add_api_route(
    "/chat/completions", openai.create_chat_completion, methods=["POST"],
    summary="Create a chat completion (OpenAI, as at /v1/chat/completions)",
    route_class_override=openai.router.route_class,  # OpenAI's errors, as at /v1
)


@router.get("/models", summary="The models loaded now (seed 002), and the GGUF files on disk (seed 004)")
async def list_models(runtime: RuntimeDep):
    return wire.models_body(await runtime.models.available(), runtime.models.loaded, runtime.models.default_name())


@router.post("/setModel", summary="Load a model and make it the default for requests that name none")
async def set_model(body: wire.SetModelBody, runtime: RuntimeDep):
    loaded = await runtime.models.load(body.modelName)
    runtime.models.default = loaded.name
    return {"message": f"Model set to {loaded.name}", "model": loaded.name, "file": loaded.model.path.name}


@router.post("/restore_cache", summary="Pre-warm the prompt cache with messages and tools, and maybe pin it")
async def restore_cache(body: wire.RestoreCacheBody, request: Request, runtime: RuntimeDep, who: RequesterDep):
    # One generated token makes the backend evaluate the whole prompt; the next request that starts with
    # the same messages and tools then reuses that KV state (its usage reports the cached tokens).
    chat_request = who.attach(to_chat_request(body))
    chat_request = replace(chat_request, sampling=replace(chat_request.sampling, max_tokens=1, temperature=0),
                           pin_prompt=body.pin)
    result = await unless_disconnected(request, complete(chat(runtime, chat_request)))
    loaded = runtime.models.loaded.get(result.model)
    return {
        "status": "ok",
        "model": result.model,
        "prompt_tokens": result.usage.prompt_tokens,
        "cached_tokens": result.usage.cached_tokens,  # already warm before this call
        "pinned": body.pin and loaded is not None and loaded.backend.info.pins_prompts,
    }

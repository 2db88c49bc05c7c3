"""Ollama: /api/chat, /api/generate, /api/embed (and the older /api/embeddings), /api/tags, /api/ps, /api/show,
/api/pull, /api/delete, /api/version. A translator, nothing more.

Answers stream as NDJSON by default (`"stream": false` for one object); errors are `{"error": message}`, in
the body before the stream starts and as the last line after (its codec, replies.OLLAMA). What Ollama reports
about a model (family, quantization, template, model_info) comes from the GGUF header, read here.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from qwend.api.answer import answer, streamed
from qwend.api.deps import RequesterDep, RuntimeDep
from qwend.api.jsonbody import JsonRoute
from qwend.api.wire import ollama as wire
from qwend.api.wire import ollama_replies as replies
from qwend.api.wire.embeddings import OllamaEmbedBody, texts_of
from qwend.chat.embeddings import EmbeddingRequest, embed
from qwend.api.wire.ollama_models import ps_body, show_body, tag_body
from qwend.chat.service import CompletionBuilder, chat
from qwend.engine.manager import LoadedModel
from qwend.errors import InvalidRequest, ModelFetchError, ModelNotFound
from qwend.models.facts import read_all_facts, read_facts
from qwend.models.store import LocalModel
from qwend.runtime import Runtime
from qwend.types import ChatEvent, ChatRequest, Done, Requester

log = logging.getLogger(__name__)
router = APIRouter(route_class=JsonRoute.answering(replies.OLLAMA), prefix="/api", tags=["Ollama"])


@router.post("/chat", summary="Chat with a model (Ollama; NDJSON stream unless stream is false)")
async def chat_with_model(body: wire.ChatBody, request: Request, runtime: RuntimeDep, who: RequesterDep):
    return await _answer(body, wire.chat_request, request, runtime, who, generate=False)


@router.post("/generate", summary="Answer one prompt (Ollama; NDJSON stream unless stream is false)")
async def generate(body: wire.GenerateBody, request: Request, runtime: RuntimeDep, who: RequesterDep):
    return await _answer(body, wire.generate_request, request, runtime, who, generate=True)


async def _answer(
    body: wire.ChatBody | wire.GenerateBody, translate: Callable[[Any, str], ChatRequest], request: Request,
    runtime: Runtime, who: Requester, *, generate: bool,
):
    started = time.perf_counter_ns()
    name = _local_model(runtime, body.model).name
    chat_request = None if wire.only_loads(body) else translate(body, name)  # a bad body is refused before loading
    keep_alive = wire.keep_alive_seconds(body.keep_alive)
    if chat_request is None and keep_alive == 0:  # Ollama's way to unload a model
        await runtime.models.unload(name)
        return JSONResponse(_final_chunk(name, generate, {"done_reason": "unload"}))
    loaded, load_ns = await _load(runtime, name, keep_alive)
    if chat_request is None:
        final = {"done_reason": "load", "total_duration": time.perf_counter_ns() - started, "load_duration": load_ns}
        return JSONResponse(_final_chunk(loaded.name, generate, final))
    timings = replies.Timings(load_ns, started)
    think = body.think is not False  # the model may still reason; `think: false` leaves it out of the answer
    events = chat(runtime, who.attach(chat_request), loaded=loaded)
    return await answer(request, replies.OLLAMA, events, stream=body.stream,
                        frames=lambda opened: _chunks(opened, timings, loaded.name, generate, think),
                        fold=lambda opened: _answered(opened, timings, generate, think))


async def _chunks(
    events: AsyncIterator[ChatEvent], timings: replies.Timings, model: str, generate: bool, think: bool
) -> AsyncIterator[dict[str, Any]]:
    async for event in events:
        timings.observe(event)
        if isinstance(event, Done):
            final = {"done_reason": replies.done_reason(event.finish_reason), **timings.metrics(event.usage)}
            yield _final_chunk(model, generate, final)
        elif (chunk := replies.event_chunk(event, model, generate, think)) is not None:
            yield chunk


async def _answered(events: AsyncIterator[ChatEvent], timings: replies.Timings, generate: bool, think: bool
                    ) -> dict[str, Any]:
    builder = CompletionBuilder()
    async for event in events:
        timings.observe(event)
        builder.add(event)
    result = builder.completion()
    final = {"done_reason": replies.done_reason(result.finish_reason), **timings.metrics(result.usage)}
    thinking = result.reasoning if think else ""
    if generate:
        return replies.generate_chunk(result.model, result.text, thinking, **final)
    return replies.chat_chunk(result.model, replies.message_body(result.text, thinking, result.tool_calls), **final)


def _final_chunk(model: str, generate: bool, final: dict[str, Any]) -> dict[str, Any]:
    return replies.generate_chunk(model, "", **final) if generate else replies.chat_chunk(model, replies.message_body(), **final)


def _local_model(runtime: Runtime, name: str | None) -> LocalModel:
    """The model a request names (the default when it names none); Ollama clients may add a `:latest` tag."""
    name = name or runtime.models.default
    try:
        return runtime.store.resolve(name)
    except (ModelNotFound, InvalidRequest):  # `hf:OWNER/REPO:latest` is no valid hub name, but means hf:OWNER/REPO
        if name.endswith(":latest"):
            try:
                return runtime.store.resolve(name.removesuffix(":latest"))
            except (ModelNotFound, InvalidRequest):
                pass
        raise


async def _load(runtime: Runtime, name: str, keep_alive: float | None = None) -> tuple[LoadedModel, int]:
    started = time.perf_counter_ns()
    loaded = await runtime.models.get(name, keep_alive=keep_alive)
    return loaded, time.perf_counter_ns() - started


@router.post("/embed", summary="Embeddings of one text or several (Ollama)")
async def embed_texts(body: OllamaEmbedBody, runtime: RuntimeDep, who: RequesterDep):
    started = time.perf_counter_ns()
    request = EmbeddingRequest(texts_of(body.input), model=body.model, dimensions=body.dimensions,
                               keep_alive=wire.keep_alive_seconds(body.keep_alive))
    result = await embed(runtime, who.attach(request))
    return {"model": result.model, "embeddings": result.vectors, "total_duration": time.perf_counter_ns() - started,
            "load_duration": 0, "prompt_eval_count": result.tokens}


@router.post("/embeddings", summary="The embedding of one prompt (Ollama's older route; /api/embed is the current one)")
async def embed_prompt(body: wire.LegacyEmbeddingsBody, runtime: RuntimeDep, who: RequesterDep):
    keep_alive = wire.keep_alive_seconds(body.keep_alive)
    if not body.prompt:  # Ollama's way to load the model
        await _load(runtime, _local_model(runtime, body.model).name, keep_alive)
        return {"embedding": []}
    request = EmbeddingRequest((body.prompt,), model=body.model, keep_alive=keep_alive)
    return {"embedding": (await embed(runtime, who.attach(request))).vectors[0]}


@router.get("/version", summary="The Ollama API version qwend answers as (Ollama)")
async def version():
    return {"version": replies.OLLAMA_VERSION}


@router.get("/tags", summary="Models on disk (Ollama)")
async def tags(runtime: RuntimeDep):
    facts = await asyncio.to_thread(read_all_facts, await runtime.models.available())
    loaded = runtime.models.loaded
    return {"models": [tag_body(f, loaded[f.name].backend.info.parameters if f.name in loaded else None)
                       for f in facts]}


@router.get("/ps", summary="Loaded models (Ollama)")
async def running(runtime: RuntimeDep):
    loaded = list(runtime.models.loaded.values())
    facts = {f.name: f for f in await asyncio.to_thread(read_all_facts, [m.model for m in loaded])}
    return {"models": [ps_body(facts[m.name], m) for m in loaded if m.name in facts]}


@router.post("/show", summary="A model's details, template, parameters and capabilities (Ollama; loads it)")
async def show(body: wire.ShowBody, runtime: RuntimeDep):
    model = runtime.store.find(_local_model(runtime, body.model or body.name).name)
    facts = await asyncio.to_thread(read_facts, model)
    if facts.error is not None and model.name not in runtime.models.loaded:
        # described before loading: a damaged file is refused, not handed to the engine (one the engine
        # already loaded, it could read)
        raise InvalidRequest(f"model {model.name!r} cannot be shown: {facts.error}", param="model")
    loaded = await runtime.models.get(model.name)
    return show_body(facts, loaded.backend.info)


# ---- pull ----


class _Progress:
    """Bytes fetched by a pull in a worker thread, handed to the event loop."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop, self.done, self.total, self.changed = loop, 0, None, asyncio.Event()

    def update(self, done: int, total: int | None) -> None:  # runs in the pulling thread
        self.done, self.total = done, total or self.total
        self.loop.call_soon_threadsafe(self.changed.set)


@router.post("/pull", summary="Fetch a model (Ollama; NDJSON progress unless stream is false)")
async def pull(body: wire.PullBody, runtime: RuntimeDep):
    name = body.model or body.name
    if not name:
        raise InvalidRequest("model is required", param="model")
    model = _local_model(runtime, name)
    if model.present:
        return JSONResponse({"status": "success"})
    if not body.stream:
        await asyncio.to_thread(runtime.store.pull, model.name if model.entry else name)
        return {"status": "success"}
    return streamed(replies.OLLAMA, _pull_progress(runtime, model, name))


async def _pull_progress(runtime: Runtime, model: LocalModel, name: str) -> AsyncIterator[dict[str, Any]]:
    entry = model.entry
    label, digest = (entry.sha256[:12], f"sha256:{entry.sha256}") if entry else (model.name, model.name)
    progress = _Progress(asyncio.get_running_loop())
    yield {"status": "pulling manifest"}
    # the pull runs on in its thread if the client goes: a finished file is still worth having (and an
    # unfinished download is kept, for the next pull to resume)
    task = asyncio.ensure_future(asyncio.to_thread(runtime.store.pull, entry.name if entry else name,
                                                   progress.update))
    task.add_done_callback(_log_failure)
    yield replies.pull_progress(label, digest, None, 0)  # the total comes with the first bytes
    reported = 0
    while not task.done():
        changed = asyncio.ensure_future(progress.changed.wait())
        await asyncio.wait({changed, task}, return_when=asyncio.FIRST_COMPLETED)
        changed.cancel()
        progress.changed.clear()
        if progress.done != reported:
            reported = progress.done
            yield replies.pull_progress(label, digest, progress.total, reported)
    try:
        task.result()  # a QwendError is the stream's last line
    except OSError as exc:  # a full disk, a store that cannot be written
        raise ModelFetchError(f"could not write {model.name}: {exc}") from exc
    if entry:  # the file was checked against the catalog's sha256 as it was written
        yield {"status": "verifying sha256 digest"}
    yield {"status": "success"}


@router.delete("/delete", summary="Delete a model from disk (Ollama)")
async def delete(body: wire.DeleteBody, runtime: RuntimeDep):
    name = body.model or body.name
    if not name:
        raise InvalidRequest("model is required", param="model")
    await asyncio.to_thread(runtime.store.remove, _local_model(runtime, name).name)
    return JSONResponse(None)


def _log_failure(task: asyncio.Future) -> None:
    if not task.cancelled() and (exc := task.exception()) is not None:
        log.warning("pull failed: %s", exc)

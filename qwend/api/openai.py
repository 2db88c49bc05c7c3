"""OpenAI: `POST /v1/chat/completions` (JSON and SSE), `POST /v1/embeddings`, `GET /v1/models` and
`GET /v1/models/{id}` (which the Anthropic SDK asks too: answered in its shape). A translator, nothing more."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Request

from qwend.api.answer import answer
from qwend.api.deps import RequesterDep, RuntimeDep
from qwend.api.jsonbody import JsonRoute
from qwend.api.streaming import fold_choices, merged, open_streams
from qwend.api.wire import openai as wire
from qwend.api.wire.embeddings import EmbeddingsBody, embeddings_body, to_embedding_request
from qwend.chat.embeddings import embed
from qwend.api.wire import anthropic as anthropic_wire
from qwend.errors import ModelNotFound
from qwend.models.facts import ModelFacts, read_all_facts
from qwend.runtime import Runtime
from qwend.types import ChatEvent, Done, Reasoning, Speculated, Started, Token, ToolCallDelta, ToolCallStart, Usage

log = logging.getLogger(__name__)
ANTHROPIC_VERSION = "anthropic-version"  # the header every Anthropic SDK request carries
router = APIRouter(route_class=JsonRoute.answering(wire.OPENAI), prefix="/v1", tags=["OpenAI"])


@router.post("/chat/completions", summary="Create a chat completion (OpenAI)")
async def create_chat_completion(
    body: wire.ChatCompletionRequest, request: Request, runtime: RuntimeDep, who: RequesterDep
):
    choices = [who.attach(r) for r in wire.choice_requests(body, runtime.settings.max_choices)]
    streams = await open_streams(runtime, choices)  # every choice, so that one that fails closes the others
    include_usage = bool(body.stream_options and body.stream_options.include_usage)
    return await answer(request, wire.OPENAI, merged(streams), stream=body.stream,
                        frames=lambda pairs: _chunks(pairs, len(streams), include_usage, body.logprobs),
                        fold=lambda pairs: _completion(pairs, len(streams), body.logprobs))


async def _completion(pairs: AsyncIterator[tuple[int, ChatEvent]], n: int, logprobs: bool) -> dict[str, Any]:
    results = await fold_choices(pairs, n)
    bodies = [wire.choice_body(i, r.text, wire.finish_reason(r.finish_reason), r.tool_calls, r.reasoning,
                               r.logprobs if logprobs else None) for i, r in enumerate(results)]
    return wire.choices_body(wire.completion_id(), results[0].model, bodies, _usage([r.usage for r in results]))


def _usage(usages: list[Usage]) -> Usage:
    """Choices of one request share its prompt: counted once; every choice's answer counted."""
    return Usage(usages[0].prompt_tokens, sum(u.completion_tokens for u in usages), usages[0].cached_tokens,
                 sum((u.speculated for u in usages), Speculated()))


async def _chunks(pairs: AsyncIterator[tuple[int, ChatEvent]], n: int, include_usage: bool, logprobs: bool
                  ) -> AsyncIterator[dict[str, Any]]:
    cid, created, model = wire.completion_id(), int(time.time()), ""
    usages: list[Usage] = []

    def chunk(index: int, delta, finish=None, usage=None, token_logprobs=None) -> dict[str, Any]:
        return wire.chunk_body(cid, created, model, delta, finish, usage, include_usage, index, token_logprobs)

    async for index, event in pairs:
        match event:
            case Started(name, _):
                model = name
                yield chunk(index, {"role": "assistant", "content": ""})
            case Token(text, token_logprobs):
                yield chunk(index, {"content": text}, token_logprobs=token_logprobs if logprobs else None)
            case Reasoning(text):
                yield chunk(index, wire.reasoning_fields(text))
            case ToolCallStart(call_index, call_id, name):
                call = {"index": call_index, "id": call_id, "type": "function",
                        "function": {"name": name, "arguments": ""}}
                yield chunk(index, {"tool_calls": [call]})
            case ToolCallDelta(call_index, arguments):
                delta = {"index": call_index, "function": {"arguments": arguments}}
                yield chunk(index, {"tool_calls": [delta]})
            case Done(reason, usage):
                usages.append(usage)
                yield chunk(index, {}, wire.finish_reason(reason))
    if include_usage and len(usages) == n:
        yield chunk(0, None, usage=_usage(usages))


@router.post("/embeddings", summary="Create embeddings (OpenAI): unit-length vectors, float or base64")
async def create_embeddings(body: EmbeddingsBody, runtime: RuntimeDep, who: RequesterDep):
    result = await embed(runtime, who.attach(to_embedding_request(body)))
    return embeddings_body(result, body.encoding_format)


@router.get("/models", summary="Every model qwend can serve (OpenAI; Anthropic's shape when the request carries "
            "anthropic-version), with what it can do")
async def list_models(request: Request, runtime: RuntimeDep):
    listed = await asyncio.to_thread(read_all_facts, await runtime.models.available())
    if ANTHROPIC_VERSION in request.headers:  # the Anthropic SDK's models.list() asks the same path
        return anthropic_wire.models_body(listed)
    return {"object": "list", "data": [_model_body(facts, runtime) for facts in listed]}


@router.get("/models/{model_id:path}", summary="One model (OpenAI's models.retrieve; Anthropic's with "
            "anthropic-version)")
async def retrieve_model(model_id: str, request: Request, runtime: RuntimeDep):
    for facts in await asyncio.to_thread(read_all_facts, await runtime.models.available()):
        if model_id == facts.name or model_id in facts.aliases:
            if ANTHROPIC_VERSION in request.headers:
                return anthropic_wire.model_body(facts)
            return _model_body(facts, runtime)
    raise ModelNotFound(f"model {model_id!r} is not among this daemon's models (GET /v1/models lists them); "
                        f"`qwend pull {model_id}` fetches a catalog model", param="model")


def _model_body(facts: ModelFacts, runtime: Runtime) -> dict[str, Any]:
    return {
        "id": facts.name,
        "object": "model",
        "created": int(facts.modified_at),
        "owned_by": "qwend",
        "loaded": facts.name in runtime.models.loaded,
        # beyond OpenAI's fields, as LM Studio's /api/v0/models gives them
        "engine": runtime.settings.backend,
        "capabilities": list(facts.capabilities),
        "context_length": facts.context_length,
        "quantization": facts.quantization,
        "size_bytes": facts.size or None,
        "aliases": list(facts.aliases),
    } | ({"error": facts.error} if facts.error else {})  # a damaged file: listed, with why it cannot load

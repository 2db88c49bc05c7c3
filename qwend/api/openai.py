"""OpenAI: `POST /v1/chat/completions` (JSON and SSE) and `GET /v1/models`. A translator, nothing more."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator

from fastapi import APIRouter, Request, Response
from sse_starlette import EventSourceResponse

from qwend.api.deps import RequesterDep, RuntimeDep
from qwend.api.streaming import ClientGone, open_stream, unless_disconnected
from qwend.api.wire import openai as wire
from qwend.chat.service import chat, complete
from qwend.errors import QwendError
from qwend.models.facts import read_all_facts
from qwend.types import ChatEvent, Done, Reasoning, Started, Token, ToolCallDelta, ToolCallStart

log = logging.getLogger(__name__)
router = APIRouter(prefix="/v1", tags=["OpenAI"])


@router.post("/chat/completions", summary="Create a chat completion (OpenAI)")
async def create_chat_completion(
    body: wire.ChatCompletionRequest, request: Request, runtime: RuntimeDep, who: RequesterDep
):
    chat_request = who.attach(wire.to_chat_request(body))
    events = await open_stream(chat(runtime, chat_request))
    if body.stream:
        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        return EventSourceResponse(_sse(events, include_usage), sep="\n", ping=15)
    try:
        result = await unless_disconnected(request, complete(events))
    except ClientGone:
        return Response(status_code=499)
    finish = "stop" if result.finish_reason == "cancelled" else result.finish_reason
    return wire.completion_body(
        wire.completion_id(), result.model, result.text, finish, result.usage, result.tool_calls, result.reasoning
    )


async def _sse(events: AsyncIterator[ChatEvent], include_usage: bool) -> AsyncIterator[str]:
    cid, created, model = wire.completion_id(), int(time.time()), ""

    def chunk(delta, finish=None, usage=None) -> str:
        return json.dumps(wire.chunk_body(cid, created, model, delta, finish, usage, include_usage))

    try:
        async for event in events:
            match event:
                case Started(name, _):
                    model = name
                    yield chunk({"role": "assistant", "content": ""})
                case Token(text):
                    yield chunk({"content": text})
                case Reasoning(text):
                    yield chunk({"reasoning_content": text})
                case ToolCallStart(index, call_id, name):
                    call = {"index": index, "id": call_id, "type": "function",
                            "function": {"name": name, "arguments": ""}}
                    yield chunk({"tool_calls": [call]})
                case ToolCallDelta(index, arguments):
                    yield chunk({"tool_calls": [{"index": index, "function": {"arguments": arguments}}]})
                case Done(reason, usage):
                    yield chunk({}, "stop" if reason == "cancelled" else reason)
                    if include_usage:
                        yield chunk(None, usage=usage)
    except QwendError as exc:  # after the 200 has gone out, errors travel in the stream, as OpenAI does
        yield json.dumps(wire.error_body(exc.message, exc.type, exc.code, exc.param))
    yield "[DONE]"


@router.get("/models", summary="Every model qwend can serve (OpenAI), with what it can do")
async def list_models(runtime: RuntimeDep):
    data = []
    for facts in await asyncio.to_thread(read_all_facts, await runtime.models.available()):
        data.append(
            {
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
            }
        )
    return {"object": "list", "data": data}

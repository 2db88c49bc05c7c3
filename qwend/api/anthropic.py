"""Anthropic: POST /v1/messages (text, tools, streaming events). A translator, nothing more."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Request
from sse_starlette import EventSourceResponse, ServerSentEvent

from qwend.api.deps import RequesterDep, RuntimeDep
from qwend.api.errors import ANTHROPIC_TYPES
from qwend.api.jsonbody import JsonRoute
from qwend.api.streaming import open_stream, unless_disconnected
from qwend.api.wire import anthropic as wire
from qwend.chat.service import chat, complete
from qwend.errors import QwendError
from qwend.types import ChatEvent, Done, Reasoning, Started, Token, ToolCallDelta, ToolCallEnd, ToolCallStart, Usage

router = APIRouter(route_class=JsonRoute, prefix="/v1", tags=["Anthropic"])


@router.post("/messages", summary="Create a message (Anthropic)")
async def create_message(body: wire.MessagesRequest, request: Request, runtime: RuntimeDep, who: RequesterDep):
    chat_request = who.attach(wire.to_chat_request(body))
    events = await open_stream(chat(runtime, chat_request))
    if body.stream:
        return EventSourceResponse(_sse(events), sep="\n", ping=15, ping_message_factory=_ping)
    result = await unless_disconnected(request, complete(events))
    content = wire.content_blocks(result.text, result.tool_calls, result.reasoning)
    return wire.message_body(
        wire.message_id(), result.model, content, wire.STOP_REASONS[result.finish_reason], result.usage
    )


def _ping() -> ServerSentEvent:
    return ServerSentEvent(event="ping", data=json.dumps({"type": "ping"}))  # keep-alives as Anthropic sends them


def _event(name: str, payload: dict[str, Any]) -> dict[str, str]:
    return {"event": name, "data": json.dumps({"type": name, **payload})}


class _Blocks:
    """The open content block of a stream: Anthropic numbers blocks in order and has one open at a time."""

    def __init__(self) -> None:
        self.count = 0
        self.open_kind: str | None = None  # "text", "thinking" or "tool_use"
        self.call_index: int | None = None  # qwend's index of the call in the open tool_use block

    def start(self, block: dict[str, Any], call_index: int | None = None) -> list[dict[str, str]]:
        frames = self.stop()
        self.open_kind, self.call_index = block["type"], call_index
        frames.append(_event("content_block_start", {"index": self.count, "content_block": block}))
        return frames

    def delta(self, kind: str, delta: dict[str, Any]) -> list[dict[str, str]]:
        """A delta for the open block of `kind`, opening one (closing the other) when it is not open."""
        frames = [] if self.open_kind == kind else self.start(_EMPTY[kind]())
        frames.append(_event("content_block_delta", {"index": self.count, "delta": delta}))
        return frames

    def stop(self) -> list[dict[str, str]]:
        if self.open_kind is None:
            return []
        frame = _event("content_block_stop", {"index": self.count})
        self.count, self.open_kind, self.call_index = self.count + 1, None, None
        return [frame]


_EMPTY = {"text": lambda: {"type": "text", "text": ""}, "thinking": wire.thinking_block}


async def _sse(events: AsyncIterator[ChatEvent]) -> AsyncIterator[dict[str, str]]:
    mid, blocks = wire.message_id(), _Blocks()
    try:
        async for event in events:
            match event:
                case Started(name, prompt_tokens):
                    # the cached share of the prompt is known only at the end: message_delta corrects it
                    message = wire.message_body(mid, name, [], None, Usage(prompt_tokens, 0))
                    yield _event("message_start", {"message": message})
                    yield _event("ping", {})
                case Reasoning(text):
                    for frame in blocks.delta("thinking", {"type": "thinking_delta", "thinking": text}):
                        yield frame
                case Token(text):
                    for frame in blocks.delta("text", {"type": "text_delta", "text": text}):
                        yield frame
                case ToolCallStart(index, call_id, name):
                    for frame in blocks.start(wire.tool_use_block(call_id, name, {}), call_index=index):
                        yield frame
                case ToolCallDelta(index, arguments) if blocks.call_index == index:
                    for frame in blocks.delta("tool_use", {"type": "input_json_delta", "partial_json": arguments}):
                        yield frame
                case ToolCallEnd(index) if blocks.call_index == index:
                    for frame in blocks.stop():
                        yield frame
                case Done(reason, usage):
                    for frame in blocks.stop():
                        yield frame
                    delta = {"stop_reason": wire.STOP_REASONS[reason], "stop_sequence": None}
                    yield _event("message_delta", {"delta": delta, "usage": wire.usage_body(usage)})
                    yield _event("message_stop", {})
    except QwendError as exc:  # after the 200 has gone out, errors travel in the stream, as Anthropic does
        error = wire.error_body(exc.message, ANTHROPIC_TYPES.get(exc.status, "api_error"))
        yield {"event": "error", "data": json.dumps(error)}
    finally:
        await events.aclose()  # a client that left cancels the generation here

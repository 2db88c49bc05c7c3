"""Anthropic: POST /v1/messages (text, tools, streaming events) and POST /v1/messages/count_tokens. A
translator, nothing more. (Its models list is GET /v1/models, shared with OpenAI: api/openai.py.)"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Request

from qwend.api.answer import answer
from qwend.api.deps import RequesterDep, RuntimeDep
from qwend.api.jsonbody import JsonRoute
from qwend.api.wire import anthropic as wire
from qwend.chat.service import chat, complete, prompt_tokens
from qwend.types import ChatEvent, Done, Reasoning, Started, Token, ToolCallDelta, ToolCallEnd, ToolCallStart, Usage

router = APIRouter(route_class=JsonRoute.answering(wire.ANTHROPIC), prefix="/v1", tags=["Anthropic"])


@router.post("/messages/count_tokens", summary="Count the tokens a message request's prompt takes (Anthropic)")
async def count_message_tokens(body: wire.CountTokensRequest, runtime: RuntimeDep):
    return {"input_tokens": await prompt_tokens(runtime, wire.to_chat_request(body))}


@router.post("/messages", summary="Create a message (Anthropic)")
async def create_message(body: wire.MessagesRequest, request: Request, runtime: RuntimeDep, who: RequesterDep):
    events = chat(runtime, who.attach(wire.to_chat_request(body)))
    return await answer(request, wire.ANTHROPIC, events, stream=body.stream, frames=_events, fold=_message)


async def _message(events: AsyncIterator[ChatEvent]) -> dict[str, Any]:
    result = await complete(events)
    content = wire.content_blocks(result.text, result.tool_calls, result.reasoning)
    return wire.message_body(wire.message_id(), result.model, content,
                             wire.stop_reason(result.finish_reason, result.stop_sequence), result.usage,
                             result.stop_sequence)


def _event(name: str, payload: dict[str, Any]) -> dict[str, Any]:
    return {"type": name, **payload}


class _Blocks:
    """The open content block of a stream: Anthropic numbers blocks in order and has one open at a time."""

    def __init__(self) -> None:
        self.count = 0
        self.open_kind: str | None = None  # "text", "thinking" or "tool_use"
        self.call_index: int | None = None  # qwend's index of the call in the open tool_use block

    def start(self, block: dict[str, Any], call_index: int | None = None) -> list[dict[str, Any]]:
        frames = self.stop()
        self.open_kind, self.call_index = block["type"], call_index
        frames.append(_event("content_block_start", {"index": self.count, "content_block": block}))
        return frames

    def delta(self, kind: str, delta: dict[str, Any]) -> list[dict[str, Any]]:
        """A delta for the open block of `kind`, opening one (closing the other) when it is not open."""
        frames = [] if self.open_kind == kind else self.start(_EMPTY[kind]())
        frames.append(_event("content_block_delta", {"index": self.count, "delta": delta}))
        return frames

    def stop(self) -> list[dict[str, Any]]:
        if self.open_kind is None:
            return []
        frame = _event("content_block_stop", {"index": self.count})
        self.count, self.open_kind, self.call_index = self.count + 1, None, None
        return [frame]


_EMPTY = {"text": lambda: {"type": "text", "text": ""}, "thinking": wire.thinking_block}


async def _events(events: AsyncIterator[ChatEvent]) -> AsyncIterator[dict[str, Any]]:
    mid, blocks = wire.message_id(), _Blocks()
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
            case Done(reason, usage, stop_sequence):
                for frame in blocks.stop():
                    yield frame
                delta = {"stop_reason": wire.stop_reason(reason, stop_sequence), "stop_sequence": stop_sequence}
                yield _event("message_delta", {"delta": delta, "usage": wire.usage_body(usage)})
                yield _event("message_stop", {})

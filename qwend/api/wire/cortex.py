"""Seed 001 (Cortex) wire shapes: chat answers that carry `message.content`, the frames its SSE and WebSocket
streams share, and model entries with its `owner__repo` ids."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from qwend.api.wire.codec import DETAIL, Codec, sse, sse_event
from qwend.api.wire.openai import (
    ChatCompletionRequest, completion_body, finish_reason, to_chat_request, tool_call_body, usage_body,
)
from qwend.chat.service import Completion
from qwend.models.facts import ModelFacts
from qwend.models.store import LocalModel
from qwend.settings import Settings
from qwend.types import ChatRequest, ChatEvent, Done, Reasoning, Started, Token, ToolCallEnd


class CortexChatRequest(ChatCompletionRequest):
    """Cortex's chat body is OpenAI's (`messages`, `max_tokens`, `temperature`, `top_p`, `model`, ...); a
    `model` may also be a Cortex id such as `Qwen__Qwen2.5-Coder-0.5B-Instruct-GGUF`."""


def to_cortex_request(body: CortexChatRequest, settings: Settings) -> ChatRequest:
    """The request, with seed 001's `.env` generation defaults (DEFAULT_MAX_TOKENS, DEFAULT_TEMPERATURE,
    DEFAULT_TOP_P) for what the body leaves unset."""
    defaults = {"max_tokens": settings.default_max_tokens, "temperature": settings.default_temperature,
                "top_p": settings.default_top_p}
    unset = {field: value for field, value in defaults.items() if value is not None and getattr(body, field) is None}
    return to_chat_request(body.model_copy(update=unset) if unset else body)


class WsChat(CortexChatRequest):
    """`{"type": "chat", ...}` on `WS /api/chat/ws`."""

    type: str = Field(description="chat, cancel or ping")


def chat_body(cid: str, result: Completion) -> dict[str, Any]:
    """OpenAI's chat.completion, plus the `message` and `finish_reason` Cortex clients read at the top."""
    body = completion_body(cid, result.model, result.text, finish_reason(result.finish_reason), result.usage,
                           result.tool_calls, result.reasoning)
    choice = body["choices"][0]
    return {**body, "message": choice["message"], "finish_reason": choice["finish_reason"]}


def frame(event: ChatEvent) -> dict[str, Any] | None:
    """The frame of one chat event, shared by the SSE and WebSocket streams (None: nothing to send)."""
    match event:
        case Started(model, prompt_tokens):
            return {"type": "start", "model": model, "prompt_tokens": prompt_tokens}
        case Token(text):
            return {"type": "token", "content": text}
        case Reasoning(text):
            return {"type": "reasoning", "content": text}
        case ToolCallEnd(_, call):
            return {"type": "tool_call", "tool_call": tool_call_body(call)}
        case Done(reason, usage):
            return {"type": "done", "finish_reason": reason, "usage": usage_body(usage)}
    return None


def error_frame(message: str) -> dict[str, Any]:
    return {"type": "error", "error": message}


# SSE frames named by their type; an error in a started stream is an error frame (written in ASCII, as it
# always was), before it FastAPI's `{"detail": ...}`
CORTEX: Codec[dict[str, Any]] = Codec(
    response=sse, encode=lambda frame: sse_event(frame["type"], frame, ensure_ascii=False),
    error_body=DETAIL.error_body, stream_error=lambda failure: sse_event("error", error_frame(failure.message)),
)


def model_id(model: LocalModel) -> str:
    """Seed 001's id: the hub repository with `/` written `__` (a file's own name when it has no catalog entry)."""
    return model.entry.repo.replace("/", "__") if model.entry else model.name


def model_body(model: LocalModel, facts: ModelFacts | None, loaded: bool) -> dict[str, Any]:
    return {
        "id": model_id(model),
        "name": model.name,
        "loaded": loaded,
        "size_bytes": model.size or None,
        "description": model.entry.description if model.entry else "",
        "capabilities": list(facts.capabilities) if facts else [],
        "context_length": facts.context_length if facts else None,
        "quantization": facts.quantization if facts else None,
    } | ({"error": facts.error} if facts and facts.error else {})  # a damaged file, and why


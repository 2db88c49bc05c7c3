"""OpenAI chat-completions wire models and pure translators to and from the internal types."""

from __future__ import annotations

import time
import uuid
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from qwend.errors import InvalidRequest
from qwend.types import ChatRequest, Message, SamplingParams, Usage


class _Wire(BaseModel):
    model_config = ConfigDict(extra="allow")  # clients send fields we do not use; they are not errors


class ContentPart(_Wire):
    type: str
    text: str | None = None


class ChatMessage(_Wire):
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[ContentPart] | None = None
    name: str | None = None


class StreamOptions(_Wire):
    include_usage: bool = False


class ChatCompletionRequest(_Wire):
    model: str | None = None
    messages: list[ChatMessage] = Field(min_length=1)
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, ge=0, le=1)
    top_k: int | None = Field(None, ge=0, description="llama.cpp extension")
    min_p: float | None = Field(None, ge=0, le=1, description="llama.cpp extension")
    presence_penalty: float | None = Field(None, ge=-2, le=2)
    frequency_penalty: float | None = Field(None, ge=-2, le=2)
    repeat_penalty: float | None = Field(None, gt=0, description="llama.cpp extension")
    seed: int | None = None
    stop: str | list[str] | None = None
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    n: int = Field(1, ge=1)
    stream: bool = False
    stream_options: StreamOptions | None = None


def to_chat_request(body: ChatCompletionRequest) -> ChatRequest:
    if body.n != 1:
        raise InvalidRequest("n > 1 is not supported yet; send one request per choice", param="n")
    stops = [body.stop] if isinstance(body.stop, str) else list(body.stop or [])
    if len(stops) > 16:
        raise InvalidRequest("at most 16 stop strings are allowed", param="stop")
    defaults = SamplingParams()
    sampling = SamplingParams(
        temperature=_pick(body.temperature, defaults.temperature),
        top_p=_pick(body.top_p, defaults.top_p),
        top_k=_pick(body.top_k, defaults.top_k),
        min_p=_pick(body.min_p, defaults.min_p),
        presence_penalty=_pick(body.presence_penalty, defaults.presence_penalty),
        frequency_penalty=_pick(body.frequency_penalty, defaults.frequency_penalty),
        repeat_penalty=_pick(body.repeat_penalty, defaults.repeat_penalty),
        seed=body.seed,
        stop=tuple(stops),
        max_tokens=body.max_completion_tokens or body.max_tokens,
    )
    messages = tuple(_to_message(m, i) for i, m in enumerate(body.messages))
    return ChatRequest(messages=messages, model=body.model, sampling=sampling)


def _pick(value, default):
    return default if value is None else value


def _to_message(message: ChatMessage, index: int) -> Message:
    role = "system" if message.role == "developer" else message.role
    content = message.content
    if isinstance(content, list):
        texts = []
        for part in content:
            if part.type != "text" or part.text is None:
                raise InvalidRequest(
                    f"content part type {part.type!r} is not supported by this model (text only)",
                    param=f"messages[{index}].content",
                )
            texts.append(part.text)
        content = "".join(texts)
    return Message(role=role, content=content or "", name=message.name)


def completion_id() -> str:
    return f"chatcmpl-{uuid.uuid4().hex[:24]}"


def usage_body(usage: Usage) -> dict[str, Any]:
    return {
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "total_tokens": usage.total_tokens,
        "prompt_tokens_details": {"cached_tokens": usage.cached_tokens},
    }


def completion_body(cid: str, model: str, text: str, finish_reason: str, usage: Usage) -> dict[str, Any]:
    return {
        "id": cid,
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": text},
                "logprobs": None,
                "finish_reason": finish_reason,
            }
        ],
        "usage": usage_body(usage),
    }


def chunk_body(
    cid: str, created: int, model: str, delta: dict[str, Any] | None, finish_reason: str | None = None,
    usage: Usage | None = None, include_usage: bool = False,
) -> dict[str, Any]:
    """One `chat.completion.chunk`; delta None makes the usage-only chunk (`choices: []`)."""
    body: dict[str, Any] = {"id": cid, "object": "chat.completion.chunk", "created": created, "model": model}
    body["choices"] = [] if delta is None else [
        {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
    ]
    if include_usage:
        body["usage"] = usage_body(usage) if usage is not None else None
    return body


def error_body(message: str, type_: str, code: str | None, param: str | None) -> dict[str, Any]:
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}

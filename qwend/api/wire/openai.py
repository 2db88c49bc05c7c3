"""OpenAI chat-completions wire models and pure translators to and from the internal types."""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import replace
from typing import Any, Literal

from pydantic import AliasChoices, BaseModel, ConfigDict, Field

from qwend import __version__
from qwend.api.wire.codec import Codec, Failure, sse
from qwend.api.wire.images import from_data_url
from qwend.api.wire.thinking import template_switch, thinking_of
from qwend.chat.schemas import prepare_schema
from qwend.errors import InvalidRequest
from qwend.types import ChatRequest, Message, SamplingParams, TokenLogprob, ToolCall, ToolSpec, Usage

# what OpenAI's answers carry to tell the serving configuration apart (clients log it, some require it)
SYSTEM_FINGERPRINT = f"fp_qwend_{__version__}"


class _Wire(BaseModel):
    # clients send fields we do not use; they are not errors. NaN and Infinity are not JSON numbers: refused
    model_config = ConfigDict(extra="allow", allow_inf_nan=False)


class ImageUrl(_Wire):
    url: str


class ContentPart(_Wire):
    type: str
    text: str | None = None
    image_url: ImageUrl | None = None


class FunctionCall(_Wire):
    name: str
    arguments: str = "{}"


class ToolCallIn(_Wire):
    id: str
    type: Literal["function"] = "function"
    function: FunctionCall


class ChatMessage(_Wire):
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[ContentPart] | None = None
    name: str | None = None
    tool_calls: list[ToolCallIn] | None = None
    tool_call_id: str | None = None
    reasoning_content: str | None = None  # llama-server's and SGLang's name for it
    reasoning: str | None = None  # vLLM's, Ollama's OpenAI layer's, LM Studio's


class FunctionDefinition(_Wire):
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    description: str = ""
    parameters: dict[str, Any] = Field(default_factory=lambda: {"type": "object", "properties": {}})


class ToolDefinition(_Wire):
    type: Literal["function"]
    function: FunctionDefinition


class NamedToolChoice(_Wire):
    type: Literal["function"]
    function: dict[str, str]


class JsonSchemaFormat(_Wire):
    name: str = "response"
    schema_: dict[str, Any] = Field(default_factory=dict, alias="schema")
    strict: bool | None = None


class ResponseFormat(_Wire):
    type: Literal["text", "json_object", "json_schema"]
    json_schema: JsonSchemaFormat | None = None


class StreamOptions(_Wire):
    include_usage: bool = False


class SamplingFields(_Wire):
    """The sampling fields of chat and text completions (read by `sampling_of`)."""

    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, ge=0, le=1)
    top_k: int | None = Field(None, ge=0, description="llama.cpp extension")
    min_p: float | None = Field(None, ge=0, le=1, description="llama.cpp extension")
    presence_penalty: float | None = Field(None, ge=-2, le=2)
    frequency_penalty: float | None = Field(None, ge=-2, le=2)
    repeat_penalty: float | None = Field(None, gt=0, description="llama.cpp extension")
    draft_max: int | None = Field(None, ge=0, le=256, validation_alias=AliasChoices("draft_max", "speculative.n_max"),
                                  description="tokens drafted at most per step by speculation, 0: off (qwend "
                                  "extension; llama-server's speculative.n_max is read too)")
    seed: int | None = None
    stop: str | list[str] | None = None


class ChatCompletionRequest(SamplingFields):
    model: str | None = None
    messages: list[ChatMessage] = Field(min_length=1)
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    n: int = Field(1, ge=1)
    logprobs: bool = False
    top_logprobs: int | None = Field(None, ge=0, le=20)
    stream: bool = False
    stream_options: StreamOptions | None = None
    tools: list[ToolDefinition] | None = None
    tool_choice: Literal["none", "auto", "required"] | NamedToolChoice | None = None
    parallel_tool_calls: bool = True
    response_format: ResponseFormat | None = None
    constrained_decoding: bool = Field(True, description="qwend extension: enforce tools and JSON by grammar")
    service_tier: str | None = Field(
        None, description="flex: batch priority (queued behind interactive requests); other values: interactive"
    )
    reasoning_effort: str | None = Field(None, description="none (no reasoning), minimal, low, medium, high")
    chat_template_kwargs: dict[str, Any] | None = Field(None, description="only enable_thinking is read")
    enable_thinking: bool | None = Field(None, description="Qwen's reasoning switch (Alibaba Cloud's API)")
    thinking_budget: int | None = Field(None, ge=0, description="reasoning tokens at most, then the answer")


def choice_requests(body: ChatCompletionRequest, max_choices: int) -> list[ChatRequest]:
    """One request per choice (`n`, up to `max_choices`). Under a seed, choice j gets seed + j, so that the
    choices differ as unseeded ones do."""
    if body.n > max_choices:
        raise InvalidRequest(f"n={body.n} is more than the {max_choices} choices one request may ask for "
                             "(QWEND_MAX_CHOICES)", param="n")
    first = to_chat_request(body.model_copy(update={"n": 1}))
    seed = first.sampling.seed
    return [first if seed is None else replace(first, sampling=replace(first.sampling, seed=seed + j))
            for j in range(body.n)]


def to_chat_request(body: ChatCompletionRequest) -> ChatRequest:
    """One choice's request (`n` must be 1 here: routes that offer several use choice_requests)."""
    if body.n != 1:
        raise InvalidRequest("n > 1 is not supported on this route; send one request per choice", param="n")
    sampling = sampling_of(body)
    if body.top_logprobs is not None and not body.logprobs:
        raise InvalidRequest("top_logprobs needs logprobs: true", param="top_logprobs")
    if body.logprobs:
        sampling = replace(sampling, logprobs=body.top_logprobs or 0)
    messages = tuple(_to_message(m, i) for i, m in enumerate(body.messages))
    tools = tuple(
        ToolSpec(t.function.name, t.function.description,
                 prepare_schema(t.function.parameters, param=f"tools[{i}].function.parameters"))
        for i, t in enumerate(body.tools or ())
    )
    if len({t.name for t in tools}) != len(tools):
        raise InvalidRequest("tool names must be unique", param="tools")
    choice, name = body.tool_choice or "auto", None
    if isinstance(choice, NamedToolChoice):
        if "name" not in choice.function:
            raise InvalidRequest("tool_choice.function.name is required", param="tool_choice")
        choice, name = "required", choice.function["name"]
    if choice == "required" and not tools:
        raise InvalidRequest("tool_choice 'required' needs at least one tool", param="tool_choice")
    return ChatRequest(
        messages=messages, model=body.model, sampling=sampling, tools=tools, tool_choice=choice, tool_name=name,
        parallel_tool_calls=body.parallel_tool_calls, json_schema=_json_schema(body.response_format),
        constrained=body.constrained_decoding, priority="batch" if body.service_tier == "flex" else "interactive",
        thinking=thinking_of(enabled=_first(template_switch(body.chat_template_kwargs), body.enable_thinking),
                             budget=body.thinking_budget, effort=body.reasoning_effort),
    )


def _first(*values):
    return next((v for v in values if v is not None), None)


def sampling_of(body: SamplingFields) -> SamplingParams:
    """The sampling fields chat and text completions share (unset ones keep qwend's defaults)."""
    stops = [body.stop] if isinstance(body.stop, str) else list(body.stop or [])
    if len(stops) > 16:
        raise InvalidRequest("at most 16 stop strings are allowed", param="stop")
    defaults = SamplingParams()
    return SamplingParams(
        temperature=_pick(body.temperature, defaults.temperature),
        top_p=_pick(body.top_p, defaults.top_p),
        top_k=_pick(body.top_k, defaults.top_k),
        min_p=_pick(body.min_p, defaults.min_p),
        presence_penalty=_pick(body.presence_penalty, defaults.presence_penalty),
        frequency_penalty=_pick(body.frequency_penalty, defaults.frequency_penalty),
        repeat_penalty=_pick(body.repeat_penalty, defaults.repeat_penalty),
        draft_max=body.draft_max,
        seed=body.seed,
        stop=tuple(stops),
        max_tokens=getattr(body, "max_completion_tokens", None) or body.max_tokens,
    )


def _json_schema(response_format: ResponseFormat | None) -> dict[str, Any] | None:
    if response_format is None or response_format.type == "text":
        return None
    if response_format.type == "json_object":
        return {}
    if response_format.json_schema is None or not response_format.json_schema.schema_:
        raise InvalidRequest("response_format json_schema needs a schema", param="response_format.json_schema")
    return prepare_schema(response_format.json_schema.schema_, param="response_format.json_schema.schema")


def _pick(value, default):
    return default if value is None else value


def _to_message(message: ChatMessage, index: int) -> Message:
    role = "system" if message.role == "developer" else message.role
    content, images = message.content, []
    if isinstance(content, list):
        texts = []
        for part in content:
            where = f"messages[{index}].content"
            if part.type == "text" and part.text is not None:
                texts.append(part.text)
            elif part.type == "image_url" and part.image_url is not None:
                images.append(from_data_url(part.image_url.url, param=where))
            else:
                raise InvalidRequest(f"content part type {part.type!r} is not supported", param=where)
        content = "".join(texts)
    calls = tuple(ToolCall(c.id, c.function.name, c.function.arguments) for c in message.tool_calls or ())
    return Message(
        role=role, content=content or "", name=message.name, tool_calls=calls,
        tool_call_id=message.tool_call_id, reasoning=message.reasoning_content or message.reasoning,
        images=tuple(images),
    )


def finish_reason(reason: str) -> str:
    """OpenAI's name for how an answer ended: a cancelled one (a stop string matched) simply stopped."""
    return "stop" if reason == "cancelled" else reason


def completion_id() -> str:
    return f"chatcmpl-{uuid.uuid4().hex[:24]}"


def usage_body(usage: Usage) -> dict[str, Any]:
    return {
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "total_tokens": usage.total_tokens,
        "prompt_tokens_details": {"cached_tokens": usage.cached_tokens},
        # OpenAI's fields for tokens of a predicted output: here, those drafted by speculation
        "completion_tokens_details": {
            "accepted_prediction_tokens": usage.speculated.accepted,
            "rejected_prediction_tokens": usage.speculated.drafted - usage.speculated.accepted,
        },
    }


def tool_call_body(call: ToolCall) -> dict[str, Any]:
    return {"id": call.id, "type": "function", "function": {"name": call.name, "arguments": call.arguments}}


def logprobs_body(logprobs: tuple[TokenLogprob, ...]) -> dict[str, Any]:
    """OpenAI's chat logprobs: each token with its log probability, bytes and top alternatives."""
    return {"content": [
        {"token": t.token, "logprob": t.logprob, "bytes": list(t.bytes),
         "top_logprobs": [{"token": token, "logprob": logprob, "bytes": list(raw)} for token, logprob, raw in t.top]}
        for t in logprobs], "refusal": None}


def choice_body(
    index: int, text: str, finish_reason: str, tool_calls: tuple[ToolCall, ...] = (), reasoning: str = "",
    logprobs: tuple[TokenLogprob, ...] | None = None,
) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": text or (None if tool_calls else "")}
    if tool_calls:
        message["tool_calls"] = [tool_call_body(c) for c in tool_calls]
    if reasoning:
        message |= reasoning_fields(reasoning)
    return {"index": index, "message": message, "finish_reason": finish_reason,
            "logprobs": None if logprobs is None else logprobs_body(logprobs)}


def completion_body(
    cid: str, model: str, text: str, finish_reason: str, usage: Usage,
    tool_calls: tuple[ToolCall, ...] = (), reasoning: str = "",
) -> dict[str, Any]:
    """A `chat.completion` of one choice."""
    return choices_body(cid, model, [choice_body(0, text, finish_reason, tool_calls, reasoning)], usage)


def reasoning_fields(text: str) -> dict[str, str]:
    """Reasoning under both names clients read: `reasoning_content` (llama-server, SGLang, DeepSeek) and
    `reasoning` (vLLM, Ollama's and LM Studio's OpenAI layers)."""
    return {"reasoning_content": text, "reasoning": text}


def choices_body(cid: str, model: str, choices: list[dict[str, Any]], usage: Usage) -> dict[str, Any]:
    return {"id": cid, "object": "chat.completion", "created": int(time.time()), "model": model,
            "system_fingerprint": SYSTEM_FINGERPRINT, "choices": choices, "usage": usage_body(usage)}


def chunk_body(
    cid: str, created: int, model: str, delta: dict[str, Any] | None, finish_reason: str | None = None,
    usage: Usage | None = None, include_usage: bool = False, index: int = 0,
    logprobs: tuple[TokenLogprob, ...] | None = None,
) -> dict[str, Any]:
    """One `chat.completion.chunk` of choice `index`; delta None makes the usage-only chunk (`choices: []`)."""
    body: dict[str, Any] = {"id": cid, "object": "chat.completion.chunk", "created": created, "model": model,
                            "system_fingerprint": SYSTEM_FINGERPRINT}
    body["choices"] = [] if delta is None else [
        {"index": index, "delta": delta, "finish_reason": finish_reason,
         "logprobs": None if logprobs is None else logprobs_body(logprobs)}
    ]
    if include_usage:
        body["usage"] = usage_body(usage) if usage is not None else None
    return body


def error_body(message: str, type_: str, code: str | None, param: str | None) -> dict[str, Any]:
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


def failure_body(failure: Failure) -> dict[str, Any]:
    return error_body(failure.message, failure.type, failure.code, failure.param)


# data-only events of JSON chunks; after the 200, an error is one more chunk, as OpenAI sends it
OPENAI: Codec[dict[str, Any]] = Codec(
    response=sse, encode=json.dumps, error_body=failure_body,
    stream_error=lambda failure: json.dumps(failure_body(failure)), last=("[DONE]",),
)

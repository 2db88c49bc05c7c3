"""Anthropic Messages wire models and pure translators to and from the internal types."""

from __future__ import annotations

import json
import uuid
from datetime import datetime, timezone
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from sse_starlette import ServerSentEvent

from qwend.api.wire.codec import Codec, Failure, sse, sse_event
from qwend.api.wire.images import from_base64
from qwend.chat.schemas import prepare_schema
from qwend.errors import InvalidRequest
from qwend.models.facts import ModelFacts
from qwend.types import ChatRequest, FinishReason, Message, SamplingParams, Thinking, ToolCall, ToolSpec, Usage

MAX_STOP_SEQUENCES = 16


class _Wire(BaseModel):
    # clients send fields we do not use (cache_control, citations, ...); NaN and Infinity are not JSON numbers
    model_config = ConfigDict(extra="allow", allow_inf_nan=False)


class ImageSource(_Wire):
    type: str  # "base64"; "url" and "file" are refused
    media_type: str | None = None
    data: str | None = None
    url: str | None = None


class ContentBlock(_Wire):
    """One block of any type; which fields it needs is checked per type in the translator, so an unsupported
    or malformed block gets a message that names it rather than a union error."""

    type: str
    text: str | None = None
    source: ImageSource | None = None
    id: str | None = None  # tool_use
    name: str | None = None  # tool_use
    input: dict[str, Any] | None = None  # tool_use
    tool_use_id: str | None = None  # tool_result
    content: str | list[ContentBlock] | None = None  # tool_result
    is_error: bool = False  # tool_result
    thinking: str | None = None  # thinking


class InputMessage(_Wire):
    role: Literal["user", "assistant"]
    content: str | list[ContentBlock]


class Tool(_Wire):
    name: str = Field(pattern=r"^[A-Za-z0-9_-]{1,128}$")
    description: str = ""
    input_schema: dict[str, Any] | None = None  # required for custom tools; server tools have none
    type: str | None = None  # absent or "custom"; Anthropic's server tools (web_search_..., bash_...) are refused


class ToolChoice(_Wire):
    type: Literal["auto", "any", "tool", "none"]
    name: str | None = None
    disable_parallel_tool_use: bool = False


class OutputFormat(_Wire):
    type: Literal["json_schema"]
    schema_: dict[str, Any] = Field(alias="schema")


class OutputConfig(_Wire):
    format: OutputFormat | None = None


class MessagesRequest(_Wire):
    model: str = Field(min_length=1)
    max_tokens: int = Field(ge=1)
    messages: list[InputMessage] = Field(min_length=1)
    system: str | list[ContentBlock] | None = None
    temperature: float | None = Field(None, ge=0, le=1)
    top_p: float | None = Field(None, ge=0, le=1)
    top_k: int | None = Field(None, ge=0)
    stop_sequences: list[str] | None = None
    stream: bool = False
    tools: list[Tool] | None = None
    tool_choice: ToolChoice | None = None
    output_config: OutputConfig | None = None
    metadata: dict[str, Any] | None = Field(None, description="accepted and ignored")
    thinking: dict[str, Any] | None = Field(
        None, description='{"type": "enabled", "budget_tokens": N} bounds a reasoning model\'s thinking; '
        '{"type": "disabled"} switches it off')


class CountTokensRequest(MessagesRequest):
    max_tokens: int | None = Field(None, ge=1)  # not asked for: nothing is generated


def to_chat_request(body: MessagesRequest) -> ChatRequest:
    stops = body.stop_sequences or []
    if len(stops) > MAX_STOP_SEQUENCES:
        raise InvalidRequest(f"at most {MAX_STOP_SEQUENCES} stop_sequences are allowed", param="stop_sequences")
    if body.messages[-1].role == "assistant":
        # the core renders every assistant turn as finished; continuing one would need template support
        raise InvalidRequest("a final assistant turn (prefill) is not supported: end with a user turn",
                             param=f"messages[{len(body.messages) - 1}]")
    defaults = SamplingParams()
    sampling = SamplingParams(
        temperature=_pick(body.temperature, defaults.temperature),
        top_p=_pick(body.top_p, defaults.top_p),
        top_k=_pick(body.top_k, defaults.top_k),
        stop=tuple(stops),
        max_tokens=body.max_tokens,
    )
    messages: list[Message] = []
    if system := _system_text(body.system):
        messages.append(Message("system", system))
    for i, message in enumerate(body.messages):
        messages.extend(_to_messages(message, f"messages[{i}]"))
    tools = tuple(_to_tool(t, f"tools[{i}]") for i, t in enumerate(body.tools or ()))
    if len({t.name for t in tools}) != len(tools):
        raise InvalidRequest("tool names must be unique", param="tools")
    choice = body.tool_choice or ToolChoice(type="auto")
    if choice.type in ("any", "tool") and not tools:
        raise InvalidRequest(f"tool_choice {choice.type!r} needs at least one tool", param="tool_choice")
    if choice.type == "tool" and not choice.name:
        raise InvalidRequest("tool_choice of type 'tool' needs a name", param="tool_choice.name")
    json_schema = _json_schema(body.output_config)  # beside tools: the shape of the text answer, if text it is
    return ChatRequest(
        messages=tuple(messages), model=body.model, sampling=sampling, tools=tools,
        # "none" leaves the tools out of the prompt, as the OpenAI adapter does: shown but not callable ("text"),
        # they made the default model write call-shaped text instead of answering from the tool results
        tool_choice={"auto": "auto", "any": "required", "tool": "required", "none": "none"}[choice.type],
        tool_name=choice.name if choice.type == "tool" else None,
        parallel_tool_calls=not choice.disable_parallel_tool_use, json_schema=json_schema,
        thinking=_thinking(body.thinking),
    )


def _thinking(asked: dict[str, Any] | None) -> Thinking:
    kind = (asked or {}).get("type")
    if kind == "disabled":
        return Thinking(enabled=False)
    if kind == "enabled":
        budget = asked.get("budget_tokens")
        if budget is not None and (not isinstance(budget, int) or isinstance(budget, bool) or budget < 0):
            raise InvalidRequest("thinking.budget_tokens must be a number of tokens", param="thinking.budget_tokens")
        return Thinking(enabled=True, budget=budget)
    return Thinking()  # none given, or "adaptive": the model's own way


def _pick(value, default):
    return default if value is None else value


def _system_text(system: str | list[ContentBlock] | None) -> str:
    if not isinstance(system, list):
        return system or ""
    return "\n".join(_text(block, f"system[{j}]") for j, block in enumerate(system))


def _text(block: ContentBlock, where: str) -> str:
    if block.type != "text":
        raise InvalidRequest(f"only text blocks are allowed here, not {block.type!r}", param=where)
    if block.text is None:
        raise InvalidRequest("a text block needs text", param=where)
    return block.text


def _to_messages(message: InputMessage, where: str) -> list[Message]:
    """One Anthropic turn as qwend messages: a user turn's tool_result blocks become `tool` messages (before
    the turn's own text, as Anthropic requires results first); an assistant turn stays one message."""
    if isinstance(message.content, str):
        return [Message(message.role, message.content)]
    if message.role == "assistant":
        return [_assistant_message(message.content, where)]
    results, texts, images = [], [], []
    for j, block in enumerate(message.content):
        at = f"{where}.content[{j}]"
        if block.type == "text":
            texts.append(_text(block, at))
        elif block.type == "image":
            images.append(_image(block, at))
        elif block.type == "tool_result":
            results.append(_tool_result(block, at))
        elif block.type in ("tool_use", "thinking", "redacted_thinking"):
            raise InvalidRequest(f"{block.type} blocks belong in assistant turns", param=at)
        else:
            raise InvalidRequest(f"content block type {block.type!r} is not supported", param=at)
    if texts or images or not results:
        results.append(Message("user", "\n".join(texts), images=tuple(images)))
    return results


def _assistant_message(blocks: list[ContentBlock], where: str) -> Message:
    texts, calls, thoughts = [], [], []
    for j, block in enumerate(blocks):
        at = f"{where}.content[{j}]"
        if block.type == "text":
            texts.append(_text(block, at))
        elif block.type == "tool_use":
            if not block.id or not block.name or block.input is None:
                raise InvalidRequest("a tool_use block needs id, name and input", param=at)
            calls.append(ToolCall(block.id, block.name, json.dumps(block.input, ensure_ascii=False)))
        elif block.type == "thinking":
            thoughts.append(block.thinking or "")
        elif block.type == "redacted_thinking":
            pass  # opaque to anyone but Anthropic
        elif block.type in ("image", "tool_result"):
            raise InvalidRequest(f"{block.type} blocks belong in user turns", param=at)
        else:
            raise InvalidRequest(f"content block type {block.type!r} is not supported", param=at)
    return Message("assistant", "\n".join(texts), tool_calls=tuple(calls), reasoning="".join(thoughts) or None)


def _image(block: ContentBlock, where: str):
    source = block.source
    if source is None:
        raise InvalidRequest("an image block needs a source", param=where)
    if source.type != "base64":
        # fetching a URL would let requests reach the network; files live on Anthropic's servers
        raise InvalidRequest(f"image source type {source.type!r} is not supported: send the image as base64",
                             param=f"{where}.source")
    if not source.data or not source.media_type:
        raise InvalidRequest("a base64 image source needs media_type and data", param=f"{where}.source")
    return from_base64(source.data, source.media_type, param=f"{where}.source")


def _tool_result(block: ContentBlock, where: str) -> Message:
    if not block.tool_use_id:
        raise InvalidRequest("a tool_result block needs tool_use_id", param=where)
    content = block.content
    if isinstance(content, list):
        content = "\n".join(_text(part, f"{where}.content[{k}]") for k, part in enumerate(content))
    text = content or ""
    if block.is_error:
        text = f"Error: {text}"  # the template has no error flag; the model reads it in the text
    return Message("tool", text, tool_call_id=block.tool_use_id)


def _to_tool(tool: Tool, where: str) -> ToolSpec:
    if tool.type not in (None, "custom"):
        raise InvalidRequest(f"tool type {tool.type!r} is not supported: only custom tools with an input_schema",
                             param=f"{where}.type")
    if tool.input_schema is None:
        raise InvalidRequest("a tool needs an input_schema", param=f"{where}.input_schema")
    return ToolSpec(tool.name, tool.description, prepare_schema(tool.input_schema, param=f"{where}.input_schema"))


def _json_schema(output_config: OutputConfig | None) -> dict[str, Any] | None:
    if output_config is None or output_config.format is None:
        return None
    return prepare_schema(output_config.format.schema_, param="output_config.format.schema")


def message_id() -> str:
    return f"msg_{uuid.uuid4().hex[:24]}"


def tool_use_id(call_id: str) -> str:
    """qwend's call ids in Anthropic's spelling; ids sent back in tool_result are used as they come."""
    return "toolu_" + call_id.removeprefix("call_")


# qwend does not report which stop string matched, so a stop sequence reads as "end_turn" (see docs)
STOP_REASONS: dict[FinishReason, str] = {
    "stop": "end_turn", "length": "max_tokens", "tool_calls": "tool_use", "cancelled": "end_turn"}


def stop_reason(finish: FinishReason, stop_sequence: str | None) -> str:
    return "stop_sequence" if stop_sequence is not None else STOP_REASONS[finish]


def usage_body(usage: Usage) -> dict[str, int]:
    """Anthropic counts cache reads apart from input_tokens: their sum is the prompt."""
    return {
        "input_tokens": usage.prompt_tokens - usage.cached_tokens,
        "output_tokens": usage.completion_tokens,
        "cache_read_input_tokens": usage.cached_tokens,
        "cache_creation_input_tokens": 0,
    }


def tool_input(arguments: str) -> dict[str, Any]:
    """The call's arguments as an object; {} when max_tokens cut them short."""
    try:
        value = json.loads(arguments)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def content_blocks(text: str, calls: tuple[ToolCall, ...] = (), reasoning: str = "") -> list[dict[str, Any]]:
    blocks: list[dict[str, Any]] = []
    if reasoning:
        blocks.append(thinking_block(reasoning))
    if text:
        blocks.append({"type": "text", "text": text})
    blocks.extend(tool_use_block(c.id, c.name, tool_input(c.arguments)) for c in calls)
    return blocks


def thinking_block(thinking: str = "") -> dict[str, Any]:
    return {"type": "thinking", "thinking": thinking, "signature": ""}  # nothing to sign: not Claude's thinking


def tool_use_block(call_id: str, name: str, arguments: dict[str, Any]) -> dict[str, Any]:
    return {"type": "tool_use", "id": tool_use_id(call_id), "name": name, "input": arguments}


def message_body(
    mid: str, model: str, content: list[dict[str, Any]], stop_reason: str | None, usage: Usage,
    stop_sequence: str | None = None,
) -> dict[str, Any]:
    return {
        "id": mid, "type": "message", "role": "assistant", "model": model, "content": content,
        "stop_reason": stop_reason, "stop_sequence": stop_sequence, "usage": usage_body(usage),
    }


def error_body(message: str, type_: str = "api_error") -> dict[str, Any]:
    return {"type": "error", "error": {"type": type_, "message": message}}


ERROR_TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
               404: "not_found_error", 413: "request_too_large", 415: "invalid_request_error",
               429: "rate_limit_error", 503: "overloaded_error"}


def failure_body(failure: Failure) -> dict[str, Any]:
    """Anthropic names an error's type by its HTTP status."""
    return error_body(failure.message, ERROR_TYPES.get(failure.status, "api_error"))


def event(payload: dict[str, Any]) -> dict[str, str]:
    """A stream event, named by its payload's `type` as Anthropic names them."""
    return sse_event(payload["type"], payload)


def _ping() -> ServerSentEvent:
    return ServerSentEvent(event="ping", data=json.dumps({"type": "ping"}))  # keep-alives as Anthropic sends them


ANTHROPIC: Codec[dict[str, Any]] = Codec(
    response=lambda items: sse(items, ping=_ping), encode=event, error_body=failure_body,
    stream_error=lambda failure: event(failure_body(failure)),
)


def model_body(facts: ModelFacts) -> dict[str, Any]:
    """A model as Anthropic's Models API describes one."""
    created = datetime.fromtimestamp(facts.modified_at, tz=timezone.utc).isoformat().replace("+00:00", "Z")
    return {"type": "model", "id": facts.name, "display_name": facts.name, "created_at": created}


def models_body(listed: list[ModelFacts]) -> dict[str, Any]:
    """Anthropic's model list: one page holding them all."""
    data = [model_body(facts) for facts in listed]
    return {"data": data, "has_more": False, "first_id": data[0]["id"] if data else None,
            "last_id": data[-1]["id"] if data else None}

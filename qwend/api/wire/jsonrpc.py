"""Seed 003's wire: JSON-RPC 2.0 envelopes, the `generate` / `tool_result` params, `POST /create_session`'s
body, and pure translators to and from the internal types."""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from qwend.agents.loop import ToolExecutor
from qwend.agents.turns import Turn
from qwend.api.jsonbody import loads
from qwend.chat.schemas import prepare_schema
from qwend.errors import Busy, InvalidRequest, ModelNotFound, QwendError, SessionNotFound
from qwend.sessions.store import SessionRecord
from qwend.tools.base import ToolResult
from qwend.types import Message, Requester, SamplingOverrides, Thinking, ToolCall, ToolSpec

# The standard codes, then the server-defined ones (JSON-RPC reserves -32000..-32099 for servers).
PARSE_ERROR = -32700
INVALID_REQUEST = -32600
METHOD_NOT_FOUND = -32601
INVALID_PARAMS = -32602
INTERNAL_ERROR = -32603
SESSION_NOT_FOUND = -32000  # the seed's own server answered an unknown session with -32000
GENERATION_RUNNING = -32001  # a `generate` while this socket's previous one is still running
UNKNOWN_TASK = -32002  # a `tool_result` for a task that is not waiting for one
NOTHING_TO_CANCEL = -32003  # the seed's own server's code for a `cancel` with nothing running
MODEL_NOT_FOUND = -32004
BUSY = -32005  # the model's queue is full
# Sent when the socket's session does not exist (4000-4999 are the application's close codes).
CLOSE_SESSION_NOT_FOUND = 1008  # policy violation, as the seed closes a socket for a session it does not know

RequestId = str | int | None


class RpcError(Exception):
    """A JSON-RPC error response; `request_id` is None where the request's id could not be read."""

    def __init__(self, code: int, message: str, request_id: RequestId = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.request_id = request_id


@dataclass(frozen=True)
class Call:
    """One JSON-RPC request as received. A notification (no `id` member) gets no response."""

    method: str
    params: dict[str, Any] | list[Any] | None
    id: RequestId
    notification: bool


def parse_call(raw: str | bytes) -> Call:
    """Read one WebSocket message as a JSON-RPC 2.0 request; raises RpcError (-32700, -32600)."""
    try:
        data = loads(raw)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:  # RecursionError: nested thousands deep
        raise RpcError(PARSE_ERROR, f"parse error: the message is not valid JSON ({exc})") from None
    if isinstance(data, list):
        raise RpcError(INVALID_REQUEST, "invalid request: batches are not supported; send one request per message")
    if not isinstance(data, dict):
        raise RpcError(INVALID_REQUEST, "invalid request: a request must be a JSON object")
    request_id = data.get("id")
    if isinstance(request_id, bool) or not isinstance(request_id, str | int | None):
        raise RpcError(INVALID_REQUEST, "invalid request: id must be a string, an integer or null")
    if data.get("jsonrpc") != "2.0":
        raise RpcError(INVALID_REQUEST, 'invalid request: jsonrpc must be "2.0"', request_id)
    method = data.get("method")
    if not isinstance(method, str) or not method:
        raise RpcError(INVALID_REQUEST, "invalid request: method must be a non-empty string", request_id)
    params = data.get("params")
    if not isinstance(params, dict | list | None):
        raise RpcError(INVALID_REQUEST, "invalid request: params must be an object or an array", request_id)
    return Call(method, params, request_id, notification="id" not in data)


def result_message(request_id: RequestId, result: dict[str, Any]) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "result": result, "id": request_id}


def error_message(request_id: RequestId, code: int, message: str) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "error": {"code": code, "message": message}, "id": request_id}


def notification(method: str, params: dict[str, Any]) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "method": method, "params": params}


def error_code(exc: QwendError) -> int:
    """The JSON-RPC code for a qwend error."""
    if isinstance(exc, InvalidRequest):
        return INVALID_PARAMS
    if isinstance(exc, SessionNotFound):
        return SESSION_NOT_FOUND
    if isinstance(exc, ModelNotFound):
        return MODEL_NOT_FOUND
    if isinstance(exc, Busy):
        return BUSY
    return INTERNAL_ERROR


def validation_message(exc: ValidationError) -> str:
    first = exc.errors()[0]
    where = ".".join(str(p) for p in first.get("loc", ()))
    return f"invalid params{f' ({where})' if where else ''}: {first.get('msg')}"


def params_of(call: Call, model: type[BaseModel]) -> Any:
    """The call's params validated as `model`; raises RpcError -32602 with pydantic's message."""
    if isinstance(call.params, list):
        raise RpcError(INVALID_PARAMS, f"invalid params: {call.method} takes named params (an object)", call.id)
    try:
        return model.model_validate(call.params or {})
    except ValidationError as exc:
        raise RpcError(INVALID_PARAMS, validation_message(exc), call.id) from None


class _Wire(BaseModel):
    # clients send fields we do not use; they are not errors. NaN and Infinity are not JSON numbers: refused
    model_config = ConfigDict(extra="allow", allow_inf_nan=False)


class ToolDefinition(_Wire):
    """`{name, description, parameters}`, or the same wrapped OpenAI-style in `{"type": "function", "function"}`."""

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    description: str = ""
    parameters: dict[str, Any] = Field(default_factory=lambda: {"type": "object", "properties": {}})

    @model_validator(mode="before")
    @classmethod
    def _unwrap_openai_form(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("type") == "function" and isinstance(data.get("function"), dict):
            return data["function"]
        return data


class CreateSessionBody(_Wire):
    tools: list[ToolDefinition] | None = None
    system_prompt: str | None = Field(None, description="qwend extension: the session's system prompt")
    model: str | None = Field(None, description="qwend extension: the session's model (default: the daemon's)")
    persistent: bool = Field(False, description="qwend extension: a generate with `message` alone continues the "
                             "conversation stored in the session (default: each generate starts from its own "
                             "message or history, as the seed's)")


class CallIn(_Wire):
    tool: str
    parameters: dict[str, Any] = Field(default_factory=dict)
    id: str | None = None


class HistoryMessage(_Wire):
    role: Literal["system", "user", "assistant", "tool"]
    content: str | None = None
    tool_calls: list[CallIn] | None = None  # assistant messages that called tools
    tool_name: str | None = None  # tool messages: the tool, and its result or error when content is empty
    tool_result: Any = None
    tool_error: str | None = None
    tool_call_id: str | None = None


class GenerateParams(_Wire):
    message: str | None = None
    history: list[HistoryMessage] | None = None
    tools: list[ToolDefinition] | None = None  # replaces the session's tools for this request
    max_new_tokens: int | None = Field(None, ge=1)
    do_sample: bool = True  # false: greedy
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    top_k: int | None = Field(None, ge=0)
    repetition_penalty: float | None = Field(None, gt=0)
    seed: int | None = None
    enable_thinking: bool | None = None  # qwend extension: a reasoning model reasons first (default: its own way)
    thinking_budget: int | None = Field(None, ge=0)  # qwend extension: reasoning tokens at most


class ToolResultItem(_Wire):
    tool_name: str
    result: Any = None
    isError: bool = False
    error_message: str | None = None
    tool_call_id: str | None = None  # matches the `id` of the requested call, when the client sends it


class ToolResultParams(_Wire):
    task_id: str
    results: list[ToolResultItem] = Field(min_length=1)
    session_id: str | None = None


def tool_specs(definitions: list[ToolDefinition], *, param: str) -> tuple[ToolSpec, ...]:
    specs = tuple(
        ToolSpec(d.name, d.description, prepare_schema(d.parameters, param=f"{param}[{i}].parameters"))
        for i, d in enumerate(definitions)
    )
    if len({s.name for s in specs}) != len(specs):
        raise InvalidRequest("tool names must be unique", param=param)
    return specs


def session_metadata(body: CreateSessionBody) -> dict[str, Any]:
    """What a seed 003 session keeps in its metadata, so it survives a restart of the daemon."""
    specs = tool_specs(body.tools or [], param="tools")
    metadata: dict[str, Any] = {
        "protocol": "jsonrpc",
        "tools": [{"name": s.name, "description": s.description, "parameters": s.parameters} for s in specs],
    }
    if body.system_prompt:
        metadata["system_prompt"] = body.system_prompt
    if body.persistent:
        metadata["persistent"] = True
    return metadata


def session_tools(session: SessionRecord) -> tuple[ToolSpec, ...]:
    try:
        return tool_specs([ToolDefinition.model_validate(t) for t in session.metadata.get("tools") or []],
                          param="tools")
    except (ValidationError, InvalidRequest) as exc:
        raise QwendError(f"session {session.id!r} holds invalid tools: {exc}") from None


def to_turn(params: GenerateParams, session: SessionRecord, execute: ToolExecutor, who: Requester) -> Turn:
    """`history` is answered as sent, with `message`, when given too, appended as the user's last message; so is
    `message` alone, from nothing before it, as the seed's generate is, unless the session was created
    `persistent`: then `message` alone continues the conversation stored in it (and the turn is stored)."""
    message = params.message or ""
    if not message.strip() and not params.history:
        raise InvalidRequest("generate needs a non-empty message or history", param="message")
    tools = tool_specs(params.tools, param="tools") if params.tools is not None else session_tools(session)
    sampling = SamplingOverrides(
        temperature=0.0 if not params.do_sample else params.temperature, top_p=params.top_p, top_k=params.top_k,
        repeat_penalty=params.repetition_penalty, seed=params.seed, max_tokens=params.max_new_tokens,
    )
    turn = Turn(message, who, model=session.model, sampling=sampling, tools=tools, execute=execute,
                system_prompt=session.metadata.get("system_prompt") or "",
                thinking=Thinking(params.enable_thinking, params.thinking_budget))
    if params.history is not None or not session.metadata.get("persistent"):
        return replace(turn, profile=session.profile, history=to_messages(params.history or []))
    return replace(turn, session=session)


def to_messages(history: list[HistoryMessage]) -> tuple[Message, ...]:
    messages = []
    for i, m in enumerate(history):
        calls = tuple(
            ToolCall(c.id or f"call_{i}_{j}", c.tool, json.dumps(c.parameters, ensure_ascii=False))
            for j, c in enumerate(m.tool_calls or ())
        )
        content = m.content or ""
        if m.role == "tool" and not content:
            content = f"Error: {m.tool_error}" if m.tool_error else _as_text(m.tool_result)
        messages.append(Message(m.role, content, name=m.tool_name if m.role == "tool" else None,
                                tool_calls=calls, tool_call_id=m.tool_call_id))
    return tuple(messages)


def _as_text(value: Any) -> str:
    return value if isinstance(value, str) else "" if value is None else json.dumps(value, ensure_ascii=False)


def pick_result(results: list[ToolResultItem], call: ToolCall) -> ToolResultItem | None:
    """The result for `call`: the one naming its id, else the first naming its tool."""
    by_id = [r for r in results if r.tool_call_id == call.id]
    by_name = [r for r in results if r.tool_name == call.name]
    return (by_id or by_name or [None])[0]


def to_tool_result(item: ToolResultItem) -> ToolResult:
    if item.isError:
        return ToolResult(False, error=item.error_message or _as_text(item.result) or "the tool failed")
    return ToolResult(True, result=item.result)


def call_body(call: ToolCall, arguments: dict[str, Any]) -> dict[str, Any]:
    """One entry of `function_call_request.tool_calls` (`id` is a qwend addition a result may echo)."""
    return {"tool": call.name, "parameters": arguments, "id": call.id}

"""OpenAI's Responses API on the one tool loop (agents/loop.py), with its state kept for real: a response's items (its input,
what it produced, the built-in tools it ran) are stored, and a later response naming it as
`previous_response_id` continues that conversation, across requests and restarts, on any daemon sharing the
database. Function-call items and their outputs are part of the chain like any other item.

Items are kept in the Responses API's own shapes (what clients send as input is what a chain replays):
`message`, `function_call` (the client runs it; `namespace` set for a tool of a namespace), `custom_tool_call`
(a free-text tool of the client's: its `input` is the one string the model wrote), their `..._output`s, and
`mcp_call` (a qwend tool that ran here, with its output: server-side, as OpenAI's MCP calls are). `respond`
tells the loop's events as those items; a call to one of the client's tools is the loop's hand-off, which
ends the response.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import aclosing
from dataclasses import dataclass, field
from typing import Any, Literal

from qwend.agents.loop import StepDone, ToolCalls, ToolResultEvent, TurnEnd, run_tool_loop, tool_result_text
from qwend.errors import InvalidRequest, ToolNotFound
from qwend.runtime import Runtime
from qwend.sessions.responses import ResponseStore, response_for
from qwend.sessions.store import Caller
from qwend.tools.base import ToolResult
from qwend.types import (
    ChatEvent, Message, Priority, Requester, SamplingParams, Thinking, Token, ToolCall, ToolCallStart, ToolSpec, Usage,
)

MAX_CHAIN = 10_000  # responses one chain may hold (a loop of ids cannot hang a request)
SERVER_LABEL = "qwend"  # the server_label of mcp_call items: qwend's own tools


@dataclass(frozen=True)
class ClientTool:
    """A tool the client runs: a `function`, or a `custom` one (free text in: to the model, a function of one
    string argument, CUSTOM_INPUT), either of them perhaps inside a `namespace`."""

    spec: ToolSpec
    custom: bool = False
    namespace: str | None = None


CUSTOM_INPUT = "input"  # the argument a custom tool's text travels in, between the model and its item


@dataclass(frozen=True)
class ResponseRequest:
    items: tuple[dict[str, Any], ...]  # the input, as items
    model: str | None = None
    instructions: str | None = None  # a system message for this response only (not carried down a chain)
    client_tools: tuple[ClientTool, ...] = ()  # their calls end the response as function or custom call items
    builtin_tools: tuple[str, ...] = ()  # qwend's tools by name: run here, and the model answers from them
    tool_choice: Literal["none", "auto", "required"] = "auto"
    tool_name: str | None = None  # required to call this one
    parallel_tool_calls: bool = True
    sampling: SamplingParams = field(default_factory=SamplingParams)
    json_schema: dict[str, Any] | None = None  # `text.format`: the shape of the text answer ({}: any object)
    previous_response_id: str | None = None
    thinking: Thinking = Thinking()  # `reasoning.effort`
    client: str | None = None
    priority: Priority = "interactive"
    affinity: str | None = None


@dataclass(frozen=True)
class ItemStarted:
    """An output item begins (a message at its first text, a function call for the client at its name): the
    chat events that follow, up to its ItemDone, are its content. `index` is its place in the output."""

    index: int
    item: dict[str, Any]


@dataclass(frozen=True)
class ItemDone:
    """An output item is complete: a message, a function call for the client, or a built-in tool's run."""

    index: int
    item: dict[str, Any]


@dataclass(frozen=True)
class ResponseEnd:
    output: list[dict[str, Any]]
    usage: Usage
    finish_reason: str


ResponseEvent = ChatEvent | ItemStarted | ItemDone | ResponseEnd


async def chain_items(store: ResponseStore, previous_id: str | None, caller: Caller) -> list[dict[str, Any]]:
    """Every item of the conversation a response continues, oldest first; a response of the chain that
    `caller` may not reach is answered as an unknown one."""
    chain: list[list[dict[str, Any]]] = []
    while previous_id is not None:
        if len(chain) >= MAX_CHAIN:
            raise InvalidRequest(f"the chain of responses is longer than {MAX_CHAIN}", param="previous_response_id")
        stored = await response_for(store, previous_id, caller)
        chain.append(stored.items)
        previous_id = stored.previous_id
    return [item for items in reversed(chain) for item in items]


def to_messages(items: Sequence[dict[str, Any]]) -> list[Message]:
    """Items as the pipeline's messages: consecutive calls become one assistant message with several calls."""
    messages: list[Message] = []
    names: dict[str, str] = {}  # call_id -> tool name, for the tool messages

    def call(call_id: str, name: str, arguments: str) -> None:
        names[call_id] = name
        last = messages[-1] if messages else None
        if last is not None and last.role == "assistant" and last.tool_calls and not last.content:
            messages[-1] = Message("assistant", "", tool_calls=(*last.tool_calls, ToolCall(call_id, name, arguments)))
        else:
            messages.append(Message("assistant", "", tool_calls=(ToolCall(call_id, name, arguments),)))

    for index, item in enumerate(items):
        kind = item.get("type", "message")
        if kind == "message":
            role = {"developer": "system"}.get(item["role"], item["role"])
            messages.append(Message(role, content_text(item["content"], f"input[{index}].content")))
        elif kind == "function_call":
            call(item["call_id"], item["name"], item.get("arguments") or "{}")
        elif kind == "custom_tool_call":
            call(item["call_id"], item["name"], json.dumps({CUSTOM_INPUT: item["input"]}))
        elif kind in ("function_call_output", "custom_tool_call_output"):
            output = item["output"] if isinstance(item["output"], str) else json.dumps(item["output"])
            messages.append(Message("tool", output, tool_call_id=item["call_id"], name=names.get(item["call_id"])))
        elif kind == "mcp_call":  # a qwend tool that ran: its call, then its result as the model read it
            call(item["id"], item["name"], item.get("arguments") or "{}")
            error = item.get("error")
            result = ToolResult(error is None, result=item.get("output") or "", error=error)
            messages.append(Message("tool", tool_result_text(result), tool_call_id=item["id"], name=item["name"]))
        elif kind != "reasoning":
            raise InvalidRequest(f"input item type {kind!r} is not supported", param=f"input[{index}]")
    return messages


def content_text(content: Any, where: str) -> str:
    """A message item's text: a string, or its text parts joined."""
    if isinstance(content, str):
        return content
    texts = []
    for part in content:
        if part.get("type") not in ("input_text", "output_text", "text"):
            raise InvalidRequest(f"content part type {part.get('type')!r} is not supported here", param=where)
        texts.append(part.get("text") or "")
    return "".join(texts)


async def respond(runtime: Runtime, request: ResponseRequest, history: Sequence[dict[str, Any]]
                  ) -> AsyncIterator[ResponseEvent]:
    """One response after `history`: the tool loop's chat events, told as output items. Built-in tool calls
    run here (ItemDone with an mcp_call each) and the model goes on from their results; a call to one of the
    client's functions ends the response as a hand-off (its function_call items); ResponseEnd comes last."""
    messages = to_messages([*history, *request.items])
    if request.instructions:
        messages.insert(0, Message("system", request.instructions))
    builtin = {_served(runtime, name) for name in request.builtin_tools}
    clients = {tool.spec.name: tool for tool in request.client_tools}
    tools = (*(tool.spec for tool in request.client_tools), *runtime.tools.specs(sorted(builtin)))
    asking = ToolCalls(notes=False, tool_choice=request.tool_choice, tool_name=request.tool_name,
                       parallel_tool_calls=request.parallel_tool_calls)
    loop = run_tool_loop(runtime, messages, tools=tools, model=request.model, sampling=request.sampling,
                         max_steps=runtime.settings.max_tool_steps, chain=True, dialect=asking, server_tools=builtin,
                         json_schema=request.json_schema, thinking=request.thinking,
                         who=Requester(request.client, request.priority, request.affinity))
    output: list[dict[str, Any]] = []
    message: dict[str, Any] | None = None  # this step's text, once it starts
    calls: dict[str, dict[str, Any]] = {}  # this step's calls for the client, by call id

    def start(item: dict[str, Any]) -> ItemStarted:
        output.append(item)
        return ItemStarted(len(output) - 1, item)

    async with aclosing(loop) as events:
        async for event in events:
            match event:
                case Token() if message is None:
                    message = message_item("", status="in_progress")
                    yield start(message)
                case ToolCallStart(_, call_id, name) if name not in builtin:
                    calls[call_id] = client_call_item(call_id, clients.get(name), name)
                    yield start(calls[call_id])
                case StepDone(_, _, reading):
                    if message is not None:
                        message.update(message_item(reading.reply.content, item_id=message["id"]))
                        yield ItemDone(output.index(message), message)
                    for call in reading.calls:
                        if call.name not in builtin:
                            if call.id not in calls:  # a call the parser found only at the end has no start yet
                                calls[call.id] = client_call_item(call.id, clients.get(call.name), call.name)
                                yield start(calls[call.id])
                            calls[call.id].update(_called_with(calls[call.id], call.arguments), status="completed")
                            yield ItemDone(output.index(calls[call.id]), calls[call.id])
                    message, calls = None, {}
                    continue
                case ToolResultEvent(call, result):
                    output.append(mcp_call_item(call, result))  # ran here: no deltas, so done without a start
                    yield ItemDone(len(output) - 1, output[-1])
                    continue
                case TurnEnd(_, finish, usage):
                    yield ResponseEnd(output, usage, finish)
                    continue
            yield event


def _served(runtime: Runtime, kind: str) -> str:
    """The qwend tool a built-in tool type names; a type qwend cannot serve is refused by name."""
    try:
        return runtime.tools.get(kind).name
    except ToolNotFound as exc:
        raise InvalidRequest(
            f"tool type {kind!r} is not served here ({exc.message}): qwend serves function, custom and namespace "
            f"tools, and its own tools by name ({', '.join(runtime.tools.names()) or 'none enabled'})",
            param="tools") from None


def client_call_item(call_id: str, tool: ClientTool | None, name: str) -> dict[str, Any]:
    """The item of a call to one of the client's tools, its arguments (or input) to come."""
    if tool is not None and tool.custom:
        item = {"id": f"ctc_{uuid.uuid4().hex[:24]}", "type": "custom_tool_call", "call_id": call_id, "name": name,
                "input": "", "status": "in_progress"}
    else:
        item = {"id": f"fc_{uuid.uuid4().hex[:24]}", "type": "function_call", "call_id": call_id, "name": name,
                "arguments": "", "status": "in_progress"}
    return item | ({"namespace": tool.namespace} if tool is not None and tool.namespace else {})


def _called_with(item: dict[str, Any], arguments: str) -> dict[str, Any]:
    if item["type"] != "custom_tool_call":
        return {"arguments": arguments}
    try:
        text = json.loads(arguments).get(CUSTOM_INPUT, "")
    except (ValueError, AttributeError):
        text = arguments
    return {"input": text if isinstance(text, str) else json.dumps(text)}


def message_item(text: str, *, status: str = "completed", item_id: str | None = None) -> dict[str, Any]:
    return {"id": item_id or f"msg_{uuid.uuid4().hex[:24]}", "type": "message", "role": "assistant",
            "status": status, "content": [{"type": "output_text", "text": text, "annotations": [], "logprobs": []}]}


def mcp_call_item(call: ToolCall, result: ToolResult) -> dict[str, Any]:
    """A qwend tool that ran here, with its whole output (the model read it bounded)."""
    output = None if not result.success else (
        result.result if isinstance(result.result, str) else json.dumps(result.result))
    return {"id": call.id, "type": "mcp_call", "server_label": SERVER_LABEL, "name": call.name,
            "arguments": call.arguments, "output": output, "error": None if result.success else result.error,
            "status": "completed"}

"""OpenAI's Responses API (`/v1/responses`): the request body, its translation, and the response object."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from qwend.api.wire.codec import Codec, sse, sse_event
from qwend.api.wire.openai import _Wire, failure_body
from qwend.api.wire.thinking import thinking_of
from qwend.agents.responses import CUSTOM_INPUT, ClientTool, ResponseRequest, to_messages
from qwend.chat.schemas import prepare_schema
from qwend.errors import InvalidRequest
from qwend.sessions.responses import StoredResponse
from qwend.types import SamplingParams, ToolSpec, Usage

# OpenAI's names for tools qwend has under its own
BUILTIN_ALIASES = {"web_search_preview": "web_search", "code_interpreter": "python_repl"}


class ResponsesBody(_Wire):
    model: str | None = None
    input: str | list[dict[str, Any]]
    instructions: str | None = None
    tools: list[dict[str, Any]] = Field(default_factory=list)
    tool_choice: str | dict[str, Any] = "auto"
    parallel_tool_calls: bool = True
    stream: bool = False
    store: bool = True
    background: bool = False
    previous_response_id: str | None = None
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, ge=0, le=1)
    max_output_tokens: int | None = Field(None, ge=1)
    metadata: dict[str, str] | None = None
    user: str | None = None
    text: dict[str, Any] | None = None  # {"format": {"type": "text" | "json_object" | "json_schema", ...}}
    reasoning: dict[str, Any] | None = None  # {"effort": "none" | "minimal" | "low" | "medium" | "high"}


def to_response_request(body: ResponsesBody) -> ResponseRequest:
    """The request, its input checked item by item (a bad item is a 400 before anything runs)."""
    items = (({"type": "message", "role": "user", "content": body.input},) if isinstance(body.input, str)
             else tuple(body.input))
    try:
        to_messages(items)
    except (KeyError, TypeError, AttributeError) as exc:
        raise InvalidRequest(f"an input item lacks a field or has a wrong one: {exc}", param="input") from None
    clients: list[ClientTool] = []
    builtin: list[str] = []
    for i, tool in enumerate(body.tools):
        kind = tool.get("type")
        if kind == "namespace":  # a group of the client's tools: each is offered, its calls name the namespace
            if not isinstance(tool.get("name"), str) or not isinstance(tool.get("tools"), list):
                raise InvalidRequest("a namespace tool needs a name and its tools", param=f"tools[{i}]")
            clients += (_client_tool(inner, f"tools[{i}].tools[{j}]", tool["name"])
                        for j, inner in enumerate(tool["tools"]))
        elif kind in ("function", "custom"):
            clients.append(_client_tool(tool, f"tools[{i}]"))
        elif isinstance(kind, str):
            builtin.append(BUILTIN_ALIASES.get(kind, kind))  # one of qwend's tools (GET /v1/tools), or refused
        else:
            raise InvalidRequest("a tool needs a type", param=f"tools[{i}].type")
    choice, name = body.tool_choice, None
    if isinstance(choice, dict):
        choice, name = "required", choice.get("name")
    if choice not in ("auto", "none", "required"):
        raise InvalidRequest("tool_choice must be auto, none, required or a named function", param="tool_choice")
    if choice == "required" and not body.tools:
        raise InvalidRequest("tool_choice 'required' needs at least one tool", param="tool_choice")
    defaults = SamplingParams()
    sampling = SamplingParams(
        temperature=defaults.temperature if body.temperature is None else body.temperature,
        top_p=defaults.top_p if body.top_p is None else body.top_p, max_tokens=body.max_output_tokens)
    return ResponseRequest(items, model=body.model, instructions=body.instructions, client_tools=tuple(clients),
                           builtin_tools=tuple(builtin), json_schema=_json_schema(text_format(body)),
                           tool_choice=choice, tool_name=name,
                           parallel_tool_calls=body.parallel_tool_calls, sampling=sampling,
                           previous_response_id=body.previous_response_id,
                           thinking=thinking_of(effort=(body.reasoning or {}).get("effort"), param="reasoning.effort"))


def _client_tool(tool: dict[str, Any], where: str, namespace: str | None = None) -> ClientTool:
    kind = tool.get("type")
    if kind not in ("function", "custom"):
        raise InvalidRequest(f"a namespace holds function and custom tools, not {kind!r}", param=f"{where}.type")
    if not isinstance(tool.get("name"), str):
        raise InvalidRequest(f"a {kind} tool needs a name", param=f"{where}.name")
    if kind == "custom":  # free text in (a grammar in its `format` is not enforced: the text is the model's)
        parameters = {"type": "object", "properties": {CUSTOM_INPUT: {"type": "string"}}, "required": [CUSTOM_INPUT]}
    else:
        parameters = prepare_schema(tool.get("parameters") or {"type": "object", "properties": {}},
                                    param=f"{where}.parameters")
    return ClientTool(ToolSpec(tool["name"], tool.get("description") or "", parameters), kind == "custom", namespace)


def text_format(body: ResponsesBody) -> dict[str, Any]:
    """`text.format`, as asked (plain text when not)."""
    asked = (body.text or {}).get("format")
    return asked if isinstance(asked, dict) else {"type": "text"}


def _json_schema(format_: dict[str, Any]) -> dict[str, Any] | None:
    kind = format_.get("type")
    if kind == "text":
        return None
    if kind == "json_object":
        return {}
    if kind == "json_schema":  # the Responses API puts name, schema and strict beside the type
        if not isinstance(format_.get("schema"), dict) or not format_["schema"]:
            raise InvalidRequest("text.format json_schema needs a schema", param="text.format.schema")
        return prepare_schema(format_["schema"], param="text.format.schema")
    raise InvalidRequest(f"text.format type {kind!r} is not one of text, json_object, json_schema",
                         param="text.format.type")


def input_items_body(stored: StoredResponse, order: str, limit: int) -> dict[str, Any]:
    """The response's input items as the API lists them (one page of `limit`; newest first for `desc`). They
    are its stored items less the output it produced, which come after them."""
    produced = sum(1 for item in stored.body.get("output") or () if item.get("status") == "completed")
    items = stored.items[:len(stored.items) - produced]
    page = (items[::-1] if order == "desc" else items)[:limit]
    return {"object": "list", "data": page, "first_id": page[0].get("id") if page else None,
            "last_id": page[-1].get("id") if page else None, "has_more": len(items) > limit}


def usage_body(usage: Usage) -> dict[str, Any]:
    return {"input_tokens": usage.prompt_tokens, "input_tokens_details": {"cached_tokens": usage.cached_tokens},
            "output_tokens": usage.completion_tokens, "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": usage.total_tokens}


def response_body(response_id: str, created_at: float, body: ResponsesBody, *, model: str, status: str,
                  output: list[dict[str, Any]], usage: Usage | None, error: dict[str, str] | None = None,
                  ) -> dict[str, Any]:
    """The response object, as the API returns, stores and streams it."""
    return {
        "id": response_id, "object": "response", "created_at": int(created_at), "status": status,
        "background": body.background, "error": error,
        "incomplete_details": {"reason": "max_output_tokens"} if status == "incomplete" else None,
        "instructions": body.instructions, "max_output_tokens": body.max_output_tokens, "model": model,
        "output": output, "parallel_tool_calls": body.parallel_tool_calls,
        "previous_response_id": body.previous_response_id, "store": body.store,
        "temperature": body.temperature, "top_p": body.top_p, "text": {"format": text_format(body)},
        "tool_choice": body.tool_choice, "tools": body.tools, "truncation": "disabled",
        "usage": usage_body(usage) if usage is not None else None, "metadata": body.metadata or {},
        "user": body.user,
    }


# the API's named events (api/responses.py); a response that fails says so in its own `response.failed`, so
# `error` (the API's event for a failure outside a response) is only for what fails around it
RESPONSES: Codec[dict[str, Any]] = Codec(
    response=sse, encode=lambda event: sse_event(event["type"], event, ensure_ascii=False), error_body=failure_body,
    stream_error=lambda failure: sse_event("error", {"type": "error", "code": failure.code,
                                                     "message": failure.message, "param": failure.param},
                                           ensure_ascii=False),
)

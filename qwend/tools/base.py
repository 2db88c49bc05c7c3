"""Tools are plain typed functions: the name, description and JSON schema come from the signature and docstring.

    @tool(timeout=5)
    def add(a: int, b: int) -> int:
        '''Add two integers.

        Args:
            a: The first number.
            b: The second number.
        '''
        return a + b

A parameter annotated `ToolContext` is filled in by the registry (settings, the sandbox, and `generate` for
tools that call the model) and is not part of the schema. A tool returns any JSON value or raises
`ToolError` with a message meant for the caller; the registry wraps both as `{success, result, error}`.
"""

from __future__ import annotations

import inspect
import re
import typing
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import anyio
from pydantic import ConfigDict, Field, ValidationError, create_model

from qwend.errors import InvalidToolArguments
from qwend.types import Message, SamplingParams

if TYPE_CHECKING:
    from qwend.settings import Settings
    from qwend.tools.sandbox import Sandbox

DEFAULT_TIMEOUT = 30.0

# The model, for tools that call it: messages and sampling in, the answer's text out. Whoever builds the
# registry closes it over the chat pipeline, which sits above tools.
Generate = Callable[[tuple[Message, ...], SamplingParams], Awaitable[str]]


class ToolError(Exception):
    """A failure the tool explains itself; its message goes back to the caller as `error`."""


@dataclass(frozen=True)
class ToolResult:
    success: bool
    result: Any = None
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"success": self.success, "result": self.result, "error": self.error}


@dataclass(frozen=True)
class ToolContext:
    """What a tool may use besides its arguments."""

    settings: Settings
    sandbox: Sandbox
    generate: Generate | None = None  # None where no model is reachable


@dataclass
class Tool:
    """One callable tool, however it is implemented (a Python function, an MCP server's tool)."""

    name: str
    description: str
    parameters: dict[str, Any]  # JSON schema of the arguments object
    run: Callable[[dict[str, Any], ToolContext], Awaitable[Any]]
    validate: Callable[[dict[str, Any]], dict[str, Any]]  # raises InvalidToolArguments naming the argument
    timeout: float = DEFAULT_TIMEOUT
    group: str | None = None  # "web", "code", "files": switched as a group by configuration
    source: str = "builtin"  # builtin, a module name, an entry point, or mcp:<server>
    enabled: bool = True
    needs: str | None = None  # a setting it cannot work without (an API key): unset, it is never offered to a model


def tool(
    func: Callable | None = None, *, name: str | None = None, timeout: float = DEFAULT_TIMEOUT,
    group: str | None = None, needs: str | None = None,
) -> Any:
    """Mark a function as a tool (usable bare, `@tool`, or with options, `@tool(timeout=5)`). `needs` names
    the setting it cannot work without (`needs="linear_api_key"`)."""

    def mark(f: Callable) -> Callable:
        f.__qwend_tool__ = {"name": name or f.__name__, "timeout": timeout, "group": group, "needs": needs}
        return f

    return mark(func) if func is not None else mark


def is_tool(obj: object) -> bool:
    return callable(obj) and hasattr(obj, "__qwend_tool__")


def from_function(func: Callable, *, source: str = "builtin") -> Tool:
    """Build a Tool from a typed function; `@tool` options apply when present."""
    options = getattr(func, "__qwend_tool__", {})
    name = options.get("name") or func.__name__
    summary, arg_docs = _parse_docstring(inspect.getdoc(func) or "")
    hints = typing.get_type_hints(func)
    fields: dict[str, Any] = {}
    context_param = None
    for param in inspect.signature(func).parameters.values():
        annotation = hints.get(param.name, Any)
        if annotation is ToolContext:
            context_param = param.name
            continue
        default = ... if param.default is inspect.Parameter.empty else param.default
        fields[param.name] = (annotation, Field(default, description=arg_docs.get(param.name)))
    model = create_model(f"{name}_arguments", __config__=ConfigDict(extra="forbid"), **fields)
    schema = _without_titles(model.model_json_schema())
    schema.setdefault("properties", {})

    def validate(arguments: dict[str, Any]) -> dict[str, Any]:
        try:
            parsed = model.model_validate(arguments)
        except ValidationError as exc:
            problems = [(".".join(str(p) for p in e["loc"]) or "arguments", e["msg"]) for e in exc.errors()]
            detail = "; ".join(f"{where}: {msg}" for where, msg in problems[:3])
            raise InvalidToolArguments(f"invalid arguments for {name}: {detail}", param=problems[0][0]) from None
        return {key: getattr(parsed, key) for key in fields}

    async def run(arguments: dict[str, Any], context: ToolContext) -> Any:
        if context_param:
            arguments = {**arguments, context_param: context}
        if inspect.iscoroutinefunction(func):
            return await func(**arguments)
        return await anyio.to_thread.run_sync(lambda: func(**arguments), abandon_on_cancel=True)

    return Tool(
        name=name, description=summary, parameters=schema, run=run, validate=validate,
        timeout=options.get("timeout", DEFAULT_TIMEOUT), group=options.get("group"), source=source,
        needs=options.get("needs"),
    )


def _parse_docstring(doc: str) -> tuple[str, dict[str, str]]:
    """The summary (text before `Args:`) and per-argument descriptions (Google style)."""
    head, _, args = doc.partition("\nArgs:\n")
    descriptions: dict[str, str] = {}
    current = None
    for line in args.splitlines():
        match = re.match(r"\s{2,}(\w+)(?:\s*\([^)]*\))?:\s*(.*)", line)
        if match and not line.startswith(" " * 8):
            current = match.group(1)
            descriptions[current] = match.group(2).strip()
        elif current and line.strip():
            descriptions[current] += " " + line.strip()
        elif not line.startswith(" "):
            break  # the next section (Returns:, Raises:)
    return " ".join(head.split()), descriptions


def _without_titles(schema: Any) -> Any:
    """pydantic's schema minus the generated `title`s, which only add tokens to every prompt."""
    if isinstance(schema, dict):
        return {k: _without_titles(v) for k, v in schema.items() if not (k == "title" and isinstance(v, str))}
    if isinstance(schema, list):
        return [_without_titles(v) for v in schema]
    return schema

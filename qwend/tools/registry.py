"""The table of tools: built-ins, custom modules, entry points and MCP servers, each switchable at runtime."""

from __future__ import annotations

import asyncio
import importlib
import logging
import time
from collections.abc import Callable
from importlib.metadata import entry_points
from types import ModuleType
from typing import Any

from qwend.errors import InvalidToolArguments, QwendError, ToolNotFound
from qwend.tools.base import Tool, ToolContext, ToolError, ToolResult, from_function, is_tool
from qwend.types import ToolSpec

log = logging.getLogger(__name__)

BUILTIN_MODULES = (
    "qwend.tools.calculator",
    "qwend.tools.clock",
    "qwend.tools.web_search",
    "qwend.tools.web_fetch",
    "qwend.tools.python_repl",
    "qwend.tools.code_generator",
    "qwend.tools.linear",
    "qwend.tools.files",
)
ENTRY_POINT_GROUP = "qwend.tools"
UNKNOWN_TOOL = "(unknown)"  # the metrics label of calls to names no tool has: clients must not mint labels
# A tool's group is loaded only when its setting is on (seed 001's ENABLE_* variables).
GROUP_SETTINGS = {"web": "enable_web_search", "code": "enable_code_execution", "files": "enable_file_operations"}


class ToolRegistry:
    def __init__(self, context: ToolContext, *, observe: Callable[[str, str], None] | None = None) -> None:
        self.context = context
        self._observe = observe or (lambda tool, outcome: None)  # (tool, outcome) of every invocation: metrics
        self._tools: dict[str, Tool] = {}
        self._switched_off: dict[str, str] = {}  # tool name -> the setting that keeps it out

    # -- building the table

    def register(self, tool: Tool) -> None:
        if tool.name in self._tools:
            raise ValueError(f"a tool named {tool.name!r} is already registered (from {self._tools[tool.name].source})")
        if tool.needs is not None and tool.needs not in type(self.context.settings).model_fields:
            raise ValueError(f"tool {tool.name!r} needs {tool.needs!r}, which is no setting")
        setting = GROUP_SETTINGS.get(tool.group or "")
        if setting and not getattr(self.context.settings, setting):
            self._switched_off[tool.name] = setting
            return
        self._tools[tool.name] = tool

    def add_module(self, module: ModuleType, source: str) -> None:
        """Register every `@tool` function a module defines (not ones it imports)."""
        for value in vars(module).values():
            if is_tool(value) and value.__module__ == module.__name__:
                self.register(from_function(value, source=source))

    def load(self) -> None:
        """Built-ins, then the configured modules (errors stop the start), then entry points (errors logged)."""
        for name in BUILTIN_MODULES:
            self.add_module(importlib.import_module(name), "builtin")
        for name in self.context.settings.tool_modules:
            self.add_module(importlib.import_module(name), name)
        for point in entry_points(group=ENTRY_POINT_GROUP):
            try:
                self._add_loaded(point.load(), f"entry point {point.name}")
            except Exception:
                log.exception("tool entry point %s (%s) failed to load; skipped", point.name, point.value)

    def _add_loaded(self, value: Any, source: str) -> None:
        if isinstance(value, ModuleType):
            self.add_module(value, source)
        elif isinstance(value, Tool):
            self.register(value)
        elif callable(value):
            self.register(from_function(value, source=source))
        else:
            raise TypeError(f"{source} is not a function, a Tool or a module")

    # -- using it

    def get(self, name: str) -> Tool:
        tool = self._tools.get(name)
        if tool is not None:
            return tool
        if name in self._switched_off:
            setting = self._switched_off[name]
            raise ToolNotFound(f"tool {name!r} is switched off by configuration (QWEND_{setting.upper()}=true enables it)")
        raise ToolNotFound(f"no tool named {name!r}; GET /v1/tools lists them")

    def all(self) -> list[Tool]:
        return list(self._tools.values())

    def names(self, *, enabled_only: bool = True) -> list[str]:
        return [t.name for t in self._tools.values() if t.enabled or not enabled_only]

    def set_enabled(self, name: str, enabled: bool) -> Tool:
        tool = self.get(name)
        tool.enabled = enabled
        return tool

    def apply_switches(self, switches: dict[str, bool]) -> None:
        """Stored switches (from the database, maybe another daemon's): tools this daemon lacks are skipped."""
        for name, enabled in switches.items():
            if name in self._tools:
                self._tools[name].enabled = enabled

    def workable(self, tool: Tool) -> bool:
        """Whether `tool` is on and can work here. One whose needed setting is unset (no Linear key) stays listed
        and callable, saying what is missing, but is never offered to a model: measured on the default model,
        the mirror profile called `search_linear_issues` three times with the same arguments, keyless."""
        return tool.enabled and (tool.needs is None or bool(getattr(self.context.settings, tool.needs)))

    def offered(self) -> list[Tool]:
        """The tools a model may be offered."""
        return [t for t in self._tools.values() if self.workable(t)]

    def specs(self, names: list[str] | None = None) -> list[ToolSpec]:
        """The tools a model may be offered (optionally only `names`) as it sees them."""
        chosen = [self.get(n) for n in names] if names is not None else self.all()
        return [ToolSpec(t.name, t.description, t.parameters) for t in chosen if self.workable(t)]

    async def invoke(self, name: str, arguments: dict[str, Any] | None) -> ToolResult:
        """Run one tool. Unknown names and bad arguments raise (404, 400); everything else is a ToolResult.
        Every call, whichever way it ends, is reported to `observe` with its outcome."""
        outcome = "crashed"  # what is left if something unforeseen escapes
        try:
            outcome, result = await self._invoke(name, arguments)
        except ToolNotFound:
            outcome = "not_found"
            raise
        except InvalidToolArguments:
            outcome = "invalid_arguments"
            raise
        except asyncio.CancelledError:  # the caller went away mid-call
            outcome = "cancelled"
            raise
        finally:
            known = name in self._tools or name in self._switched_off
            self._observe(name if known else UNKNOWN_TOOL, outcome)
        return result

    async def _invoke(self, name: str, arguments: dict[str, Any] | None) -> tuple[str, ToolResult]:
        tool = self.get(name)
        if not isinstance(arguments, dict):
            raise InvalidToolArguments(f"arguments for {name} must be a JSON object", param="arguments")
        checked = tool.validate(arguments)
        if not tool.enabled:
            return "disabled", ToolResult(False, error=f"tool {name!r} is disabled")
        started = time.monotonic()
        try:
            async with asyncio.timeout(tool.timeout):
                result = await tool.run(checked, self.context)
        except TimeoutError:
            return "timeout", ToolResult(False, error=f"{name} timed out after {tool.timeout:g} s")
        except ToolError as exc:
            return "error", ToolResult(False, error=str(exc))
        except QwendError as exc:  # the model a tool uses is busy, missing, out of room
            return "unavailable", ToolResult(False, error=exc.message)
        except Exception as exc:  # a tool's own bug must not become a 500, nor lose the message
            log.exception("tool %s failed", name)
            return "crashed", ToolResult(False, error=f"{name} failed: {type(exc).__name__}: {exc}")
        finally:
            log.debug("tool %s took %.3f s", name, time.monotonic() - started)
        return "ok", ToolResult(True, result=result)

"""Tools from MCP servers (the official `mcp` SDK), registered as `server.tool`.

The servers come from a JSON file in the shape Claude Desktop and most MCP clients use:

    {"mcpServers": {
        "files": {"command": "npx", "args": ["-y", "@modelcontextprotocol/server-filesystem", "/srv"]},
        "search": {"url": "http://127.0.0.1:8931/mcp", "headers": {"Authorization": "Bearer ..."}}}}

Each server is held open by its own task for the daemon's lifetime, because the SDK's transports and
sessions must be entered and left in one task; calls from request tasks share that session. A stdio server
starts with only the SDK's minimal environment plus the `env` given here, never the daemon's secrets.
"""

from __future__ import annotations

import asyncio
import json
import logging
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from qwend.errors import InvalidToolArguments
from qwend.patterns import schema_validator
from qwend.tools.base import Tool, ToolContext, ToolError

log = logging.getLogger(__name__)

CONNECT_TIMEOUT = 30.0
CALL_TIMEOUT = 60.0


class McpServers:
    def __init__(self, config_file: Path) -> None:
        self.config_file = config_file
        self._tasks: list[asyncio.Task] = []
        self._stop = asyncio.Event()
        self.status: dict[str, str] = {}  # server name -> "connected" or why not

    def configured(self) -> dict[str, dict[str, Any]]:
        if not self.config_file.is_file():
            return {}
        try:
            servers = json.loads(self.config_file.read_text()).get("mcpServers", {})
        except (OSError, ValueError, AttributeError) as exc:
            raise ValueError(f"{self.config_file} is not a valid MCP servers file: {exc}") from exc
        return {name: spec for name, spec in servers.items() if isinstance(spec, dict)}

    async def start(self, register) -> None:
        """Connect to every configured server and `register` its tools; a failing server is logged, skipped."""
        for name, spec in self.configured().items():
            ready: asyncio.Future[list[Tool]] = asyncio.get_running_loop().create_future()
            self._tasks.append(asyncio.create_task(self._hold(name, spec, ready), name=f"mcp:{name}"))
            try:
                tools = await asyncio.wait_for(asyncio.shield(ready), CONNECT_TIMEOUT)
            except Exception as exc:
                self._tasks[-1].cancel()
                self.status[name] = f"not connected: {str(exc) or type(exc).__name__}"
                log.error("MCP server %s: %s", name, self.status[name])
                continue
            for tool in tools:
                register(tool)
            self.status[name] = "connected"
            log.info("MCP server %s: %d tools", name, len(tools))

    async def close(self) -> None:
        self._stop.set()
        for task in self._tasks:
            try:
                await asyncio.wait_for(task, 10)
            except (Exception, asyncio.CancelledError):
                task.cancel()

    async def _hold(self, name: str, spec: dict[str, Any], ready: asyncio.Future) -> None:
        from mcp import ClientSession

        try:
            async with _transport(spec) as (read, write), ClientSession(read, write) as session:
                await session.initialize()
                listed = await session.list_tools()
                ready.set_result([_tool(name, t, session) for t in listed.tools])
                await self._stop.wait()
        except BaseException as exc:
            if not ready.done():
                ready.set_exception(exc if isinstance(exc, Exception) else RuntimeError("cancelled"))
            if not isinstance(exc, Exception):
                raise
            log.warning("MCP server %s disconnected: %s", name, exc)
            self.status[name] = f"disconnected: {exc}"


@asynccontextmanager
async def _transport(spec: dict[str, Any]):
    if spec.get("url"):
        import httpx2
        from mcp.client.streamable_http import streamable_http_client

        client = httpx2.AsyncClient(headers=spec.get("headers") or {}, timeout=CALL_TIMEOUT)
        async with client, streamable_http_client(spec["url"], http_client=client) as (read, write):
            yield read, write
    elif spec.get("command"):
        from mcp import StdioServerParameters, stdio_client

        params = StdioServerParameters(
            command=spec["command"], args=list(spec.get("args", [])), env=spec.get("env"), cwd=spec.get("cwd"),
        )
        async with stdio_client(params) as (read, write):
            yield read, write
    else:
        raise ValueError("an MCP server needs a `command` (stdio) or a `url` (streamable HTTP)")


def _tool(server: str, listed: Any, session: Any) -> Tool:
    name = f"{server}.{listed.name}"
    schema = listed.input_schema or {"type": "object", "properties": {}}
    validator = schema_validator(schema)  # its patterns run in RE2, like those of requests

    def validate(arguments: dict[str, Any]) -> dict[str, Any]:
        error = next(iter(sorted(validator.iter_errors(arguments), key=lambda e: e.path)), None)
        if error is not None:
            where = ".".join(str(p) for p in error.path) or "arguments"
            raise InvalidToolArguments(f"invalid arguments for {name}: {where}: {error.message}", param=where)
        return arguments

    async def run(arguments: dict[str, Any], context: ToolContext) -> Any:
        result = await session.call_tool(listed.name, arguments)
        text = "\n".join(part.text for part in result.content if getattr(part, "text", None) is not None)
        if result.is_error:
            raise ToolError(text or f"{name} failed")
        return result.structured_content if result.structured_content is not None else text

    return Tool(
        name=name, description=listed.description or "", parameters=schema, run=run, validate=validate,
        timeout=CALL_TIMEOUT, source=f"mcp:{server}",
    )

"""Everything a running daemon holds, built once in the app lifespan: no module-level state."""

from __future__ import annotations

import asyncio
import math
import time
from dataclasses import dataclass, field
from typing import Any

from qwend.agents.profiles import Profiles
from qwend.engine.manager import ModelManager
from qwend.engine.registry import model_source
from qwend.metrics import Metrics
from qwend.models.store import ModelStore
from qwend.models.upstream import UpstreamModels
from qwend.private_files import secure_data_dir
from qwend.sessions.database import open_store
from qwend.sessions.queue import SessionTurns
from qwend.sessions.store import SessionStore
from qwend.settings import Settings
from qwend.tools.base import Tool, ToolContext
from qwend.tools.mcp_client import McpServers
from qwend.tools.registry import ToolRegistry
from qwend.tools.sandbox import Limits, Sandbox


@dataclass
class Runtime:
    settings: Settings
    store: ModelStore | UpstreamModels
    models: ModelManager
    started_at: float = field(default_factory=time.time)
    metrics: Metrics = field(default_factory=Metrics)  # GET /metrics; its registry is this runtime's own
    sandbox: Sandbox = field(init=False)
    tools: ToolRegistry = field(init=False)
    mcp: McpServers = field(init=False)
    profiles: Profiles = field(init=False)
    sessions: SessionStore = field(init=False)
    session_turns: SessionTurns = field(default_factory=SessionTurns)
    responses: dict[str, Any] = field(default_factory=dict)  # Responses API responses running, by id (cancel)

    def __post_init__(self) -> None:
        s = self.settings
        secure_data_dir(s)  # sessions, keys and logs: this user's alone
        limits = Limits(
            wall_seconds=s.sandbox_timeout, cpu_seconds=math.ceil(s.sandbox_timeout),
            memory_bytes=s.sandbox_memory_mb << 20, code_bytes=s.sandbox_max_code_kb << 10,
        )
        self.sandbox = Sandbox(limits, allow_unsandboxed=s.allow_unsandboxed_code, max_running=s.sandbox_max_running)
        self.tools = ToolRegistry(ToolContext(s, self.sandbox, self), observe=self.metrics.tool_call)
        self.tools.load()
        self.mcp = McpServers(s.mcp_servers_file)
        self.profiles = Profiles(s.profiles_path)
        self.sessions = open_store(s.database, pool_size=s.database_pool_size)

    @classmethod
    def create(cls, settings: Settings) -> Runtime:
        store = model_source(settings)
        return cls(settings, store, ModelManager(settings, store))

    async def start(self) -> None:
        """What needs the event loop: connections to MCP servers and the database (whose tool switches apply
        to every tool, MCP ones included), an upstream server's default model."""
        await self.mcp.start(self.tools.register)
        await self.sessions.start(self.tools.apply_switches)
        await self.models.start()

    async def switch_tool(self, name: str, enabled: bool) -> Tool:
        """Switch a tool on or off here and, through the database, on every daemon sharing it."""
        self.tools.get(name)  # an unknown tool is a 404 before anything is stored
        await self.sessions.save_tool_switch(name, enabled)
        return self.tools.set_enabled(name, enabled)

    async def close(self) -> None:
        running = [job.task for job in self.responses.values()]  # background responses: stopped, then stored
        for task in running:
            task.cancel()
        await asyncio.gather(*running, return_exceptions=True)
        await self.mcp.close()
        await self.sessions.close()
        self.models.close()


"""Everything a running daemon holds, built once in the app lifespan: no module-level state."""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Awaitable
from dataclasses import dataclass, field
from typing import TypeVar

from qwend.agents.profiles import Profiles
from qwend.chat.service import chat, complete
from qwend.engine.manager import ModelManager
from qwend.engine.registry import model_source
from qwend.metrics import Metrics
from qwend.models.store import ModelStore
from qwend.models.upstream import UpstreamModels
from qwend.private_files import secure_data_dir
from qwend.sessions.database import Database, open_database
from qwend.sessions.queue import SessionTurns
from qwend.sessions.store import SessionStore
from qwend.settings import Settings
from qwend.tools.base import Tool, ToolContext
from qwend.tools.mcp_client import McpServers
from qwend.tools.registry import ToolRegistry
from qwend.tools.sandbox import Limits, Sandbox
from qwend.types import ChatRequest, Message, SamplingParams

T = TypeVar("T")
WRITES_GRACE_S = 30.0  # how long closing waits for store writes under way (a stopped turn's)


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
    database: Database = field(init=False)  # sessions, tool switches, stored responses
    session_turns: SessionTurns = field(default_factory=SessionTurns)
    _writes: set[asyncio.Task] = field(default_factory=set)  # store writes under way (`write_whole`)

    def __post_init__(self) -> None:
        s = self.settings
        secure_data_dir(s)  # sessions, keys and logs: this user's alone
        limits = Limits(
            wall_seconds=s.sandbox_timeout, cpu_seconds=math.ceil(s.sandbox_timeout),
            memory_bytes=s.sandbox_memory_mb << 20, code_bytes=s.sandbox_max_code_kb << 10,
        )
        self.sandbox = Sandbox(limits, allow_unsandboxed=s.allow_unsandboxed_code, max_running=s.sandbox_max_running)
        self.tools = ToolRegistry(ToolContext(s, self.sandbox, generate=self.generate), observe=self.metrics.tool_call)
        self.tools.load()
        self.mcp = McpServers(s.mcp_servers_file)
        self.profiles = Profiles(s.profiles_path)
        self.database = open_database(s.database, pool_size=s.database_pool_size)

    @property
    def sessions(self) -> SessionStore:
        """The database's session store, which most of the daemon reads and writes."""
        return self.database.sessions

    @classmethod
    def create(cls, settings: Settings) -> Runtime:
        store = model_source(settings)
        return cls(settings, store, ModelManager(settings, store))

    async def start(self) -> None:
        """What needs the event loop: connections to MCP servers and the database (whose tool switches apply
        to every tool, MCP ones included), an upstream server's default model."""
        await self.mcp.start(self.tools.register)
        await self.database.start()
        await self.database.switches.follow(self.tools.apply_switches)
        await self.models.start()

    async def generate(
        self, messages: tuple[Message, ...], sampling: SamplingParams, *, model: str | None = None,
        client: str | None = None, affinity: str | None = None,
    ) -> str:
        """The text of one answer through the chat pipeline: the model for tools (`ToolContext.generate`) and
        for session summaries, which cannot reach the pipeline themselves (it sits above them)."""
        request = ChatRequest(messages, model=model, client=client, affinity=affinity, sampling=sampling)
        return (await complete(chat(self, request))).text

    async def switch_tool(self, name: str, enabled: bool) -> Tool:
        """Switch a tool on or off here and, through the database, on every daemon sharing it."""
        self.tools.get(name)  # an unknown tool is a 404 before anything is stored
        await self.database.switches.save(name, enabled)
        return self.tools.set_enabled(name, enabled)

    async def write_whole(self, write: Awaitable[T]) -> T:
        """A store write that its caller's cancellation does not cut short (a turn ending as its client leaves,
        or as the daemon stops); `close` waits for it before the database goes."""
        task = asyncio.ensure_future(write)
        self._writes.add(task)
        task.add_done_callback(self._writes.discard)
        return await asyncio.shield(task)

    async def close(self) -> None:
        # turns the stopping daemon cancelled store themselves as far as they came, then the database closes
        await self.session_turns.drained(WRITES_GRACE_S)
        if self._writes:
            await asyncio.wait(set(self._writes), timeout=WRITES_GRACE_S)
        await self.mcp.close()
        await self.database.close()
        self.models.close()


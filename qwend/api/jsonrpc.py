"""Seed 003: POST /create_session and JSON-RPC 2.0 over WS /ws/{session_id}. A translator, nothing more.

A `generate` is one turn (`agents.turns.run_turn`) whose tools are the client's: the tool loop's executor
sends `function_call_request` and waits for the client's `tool_result`. Each socket runs at most one
`generate` at a time, as an asyncio task, so the socket keeps reading `tool_result` and `cancel` meanwhile.
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from dataclasses import dataclass
from typing import Any

from fastapi import APIRouter, WebSocket
from starlette.websockets import WebSocketDisconnect

from qwend.agents.loop import TurnEnd
from qwend.agents.turns import Turn, run_turn
from qwend.api.deps import CallerDep, RuntimeDep, caller, requester
from qwend.api.jsonbody import JsonRoute
from qwend.api.wire import jsonrpc as wire
from qwend.api.wire.jsonrpc import RpcError
from qwend.errors import QwendError, SessionNotFound
from qwend.runtime import Runtime
from qwend.sessions.store import Caller, session_for
from qwend.tools.base import ToolResult
from qwend.types import Token, ToolCall

log = logging.getLogger(__name__)
router = APIRouter(route_class=JsonRoute, tags=["JSON-RPC (seed 003)"])
# A seed 003 session's profile supplies the model, sampling defaults and tool-step limits; its tools and
# system prompt are replaced by the session's own (the client's tools, run by the client).
PROFILE = "general"


@router.post("/create_session", summary="Create a session with client-side tools (seed 003)")
async def create_session(runtime: RuntimeDep, who: CallerDep, body: wire.CreateSessionBody | None = None):
    body = body or wire.CreateSessionBody()
    metadata = wire.session_metadata(body)  # 400 for an invalid tool schema, before anything is stored
    if body.model:
        runtime.store.resolve(body.model)  # 404 for an unknown model
    session = await runtime.sessions.create(PROFILE, body.model, None, metadata, who.owner)
    return {"session_id": session.id}


@router.websocket("/ws/{session_id}")
async def session_socket(websocket: WebSocket, session_id: str):
    runtime: Runtime = websocket.app.state.runtime
    who = caller(websocket)
    await websocket.accept()
    try:  # another key's session is answered as an unknown one
        await session_for(runtime.sessions, session_id, who)
    except SessionNotFound as exc:
        error = {"code": wire.SESSION_NOT_FOUND, "message": exc.message}
        notice = wire.notification("error", {"session_id": session_id, "error": error})
        try:
            await websocket.send_text(json.dumps(notice))
            await websocket.close(wire.CLOSE_SESSION_NOT_FOUND, reason="session not found")
        except WebSocketDisconnect:
            pass  # the client did not wait for the answer
        return
    await Connection(websocket, runtime, session_id, who).serve()


@dataclass(eq=False)
class Generation:
    """One running `generate`: its task, and the client-side call it waits on (if any)."""

    task_id: str
    task: asyncio.Task | None = None
    waiting: tuple[ToolCall, asyncio.Future[ToolResult]] | None = None


class Connection:
    """One socket: reads requests one at a time, answers them, and streams its generation's notifications."""

    def __init__(self, websocket: WebSocket, runtime: Runtime, session_id: str, caller: Caller) -> None:
        self.websocket = websocket
        self.runtime = runtime
        self.session_id = session_id
        self.caller = caller
        self.generation: Generation | None = None
        self._sending = asyncio.Lock()  # responses and notifications come from two tasks; frames never interleave

    async def serve(self) -> None:
        try:
            while True:
                message = await self.websocket.receive()
                if message["type"] == "websocket.disconnect":
                    return
                text = message.get("text")
                await self.handle(text if text is not None else message.get("bytes") or b"")
        except WebSocketDisconnect:
            return
        finally:
            await self.stop()  # the client went away: cancel its generation; nothing half-done is stored

    async def handle(self, raw: str | bytes) -> None:
        try:
            call = wire.parse_call(raw)
        except RpcError as exc:
            await self.send(wire.error_message(exc.request_id, exc.code, exc.message))
            return
        try:
            match call.method:
                case "generate":
                    await self.generate(call)
                case "tool_result":
                    await self.tool_result(call)
                case "cancel":
                    await self.cancel(call)
                case _:
                    raise RpcError(wire.METHOD_NOT_FOUND, f"method not found: {call.method!r} (this server has "
                                   "generate, tool_result and cancel)", call.id)
        except RpcError as exc:
            await self.reply_error(call, exc.code, exc.message)
        except QwendError as exc:
            await self.reply_error(call, wire.error_code(exc), exc.message)
        except WebSocketDisconnect:
            raise
        except Exception:
            log.exception("seed 003 %s failed", call.method)
            await self.reply_error(call, wire.INTERNAL_ERROR, f"internal error while handling {call.method}")

    async def generate(self, call: wire.Call) -> None:
        params = wire.params_of(call, wire.GenerateParams)
        if self.generation is not None:
            raise RpcError(wire.GENERATION_RUNNING, f"a generation is already running on this socket (task "
                           f"{self.generation.task_id}); wait for its end notification or cancel it", call.id)
        session = await session_for(self.runtime.sessions, self.session_id, self.caller)
        generation = Generation(str(uuid.uuid4()))

        async def execute(tool_call: ToolCall, arguments: dict[str, Any]) -> ToolResult:
            return await self.ask_client(generation, tool_call, arguments)

        turn = wire.to_turn(params, session, execute, requester(self.websocket))
        self.generation = generation
        await self.reply(call, {"status": "processing"})
        generation.task = asyncio.create_task(self.run(generation, turn))

    async def run(self, generation: Generation, turn: Turn) -> None:
        """The generation's task: its notifications, then `end` (a cancel sends that itself)."""
        try:
            try:
                await self.forward(generation, turn)
            except QwendError as exc:
                await self.notify_error(generation, wire.error_code(exc), exc.message)
            except WebSocketDisconnect:
                raise
            except Exception:
                log.exception("seed 003 generation %s failed", generation.task_id)
                await self.notify_error(generation, wire.INTERNAL_ERROR, "internal error: the generation failed")
            if self.generation is generation:
                self.generation = None  # before `end`, so a generate sent on receiving it is not refused
            await self.notify("end", self.ids(generation))
        except WebSocketDisconnect:
            pass  # the socket is gone; serve() cancels what is left

    async def forward(self, generation: Generation, turn: Turn) -> None:
        events = run_turn(self.runtime, turn)
        try:
            async for event in events:
                if isinstance(event, Token):
                    await self.notify("text_chunk", {**self.ids(generation), "chunk": event.text})
                elif isinstance(event, TurnEnd):
                    await self.notify("final_text", {**self.ids(generation), "final_text": event.answer})
        finally:
            await events.aclose()  # stops the job wherever it is (queued, generating, waiting on the client)

    async def ask_client(self, generation: Generation, call: ToolCall, arguments: dict[str, Any]) -> ToolResult:
        """The tool loop's executor: the client runs the call; generation waits for its `tool_result`."""
        future: asyncio.Future[ToolResult] = asyncio.get_running_loop().create_future()
        generation.waiting = (call, future)
        try:
            await self.notify("function_call_request",
                              {**self.ids(generation), "tool_calls": [wire.call_body(call, arguments)]})
            return await future
        finally:
            generation.waiting = None

    async def tool_result(self, call: wire.Call) -> None:
        params = wire.params_of(call, wire.ToolResultParams)
        generation = self.generation
        if (generation is None or generation.task_id != params.task_id or generation.waiting is None
                or generation.waiting[1].done()):
            raise RpcError(wire.UNKNOWN_TASK, f"task {params.task_id!r} is not waiting for a tool result on this "
                           "socket", call.id)
        requested, future = generation.waiting
        item = wire.pick_result(params.results, requested)
        if item is None:
            raise RpcError(wire.INVALID_PARAMS, f"invalid params (results): none is for the requested call "
                           f"{requested.name!r} (id {requested.id})", call.id)
        await self.reply(call, {"status": "received"})  # before the generation goes on and sends more
        future.set_result(wire.to_tool_result(item))

    async def cancel(self, call: wire.Call) -> None:
        generation = self.generation
        if generation is None:
            raise RpcError(wire.NOTHING_TO_CANCEL, "no generation is running on this socket", call.id)
        await self.stop()
        await self.reply(call, {"status": "cancelled"})
        await self.notify("end", self.ids(generation))

    async def stop(self) -> None:
        """Cancel the running generation and wait until its job has left the model."""
        generation, self.generation = self.generation, None
        if generation is not None and generation.task is not None:
            generation.task.cancel()
            await asyncio.wait([generation.task])

    def ids(self, generation: Generation) -> dict[str, str]:
        return {"session_id": self.session_id, "task_id": generation.task_id}

    async def reply(self, call: wire.Call, result: dict[str, Any]) -> None:
        if not call.notification:
            await self.send(wire.result_message(call.id, result))

    async def reply_error(self, call: wire.Call, code: int, message: str) -> None:
        if not call.notification:
            await self.send(wire.error_message(call.id, code, message))

    async def notify(self, method: str, params: dict[str, Any]) -> None:
        await self.send(wire.notification(method, params))

    async def notify_error(self, generation: Generation, code: int, message: str) -> None:
        await self.notify("error", {**self.ids(generation), "error": {"code": code, "message": message}})

    async def send(self, body: dict[str, Any]) -> None:
        async with self._sending:
            await self.websocket.send_text(json.dumps(body, ensure_ascii=False))

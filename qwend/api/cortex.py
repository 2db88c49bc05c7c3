"""Seed 001 (Cortex): its `/api/...` routes, translated to qwend's core. (`GET /` and `GET /api/health` share
their bodies with seed 000 in api/daemon.py.)"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from contextlib import aclosing
from typing import Any

from fastapi import APIRouter, Depends, HTTPException, Request, WebSocket, WebSocketDisconnect
from pydantic import ValidationError

from qwend.agents import react
from qwend.api.answer import answer
from qwend.api.deps import RequesterDep, RuntimeDep, requester
from qwend.api.jsonbody import JsonRoute, loads
from qwend.api.streaming import unless_disconnected
from qwend.api.wire import cortex as wire
from qwend.api.wire.agents import AGENTS, AgentExecuteBody, PlanBody, info_body, result_body, step_body
from qwend.api.wire.openai import completion_id
from qwend.api.wire.tools import ExecuteBody, cortex_tool, openai_definition
from qwend.chat.service import chat, complete
from qwend.errors import QwendError
from qwend.models.facts import read_all_facts
from qwend.runtime import Runtime
from qwend.types import ChatEvent

log = logging.getLogger(__name__)

router = APIRouter(route_class=JsonRoute.answering(wire.CORTEX), prefix="/api", tags=["cortex (seed 001)"])


# -- chat


@router.post("/chat/completions", summary="A chat completion; the answer is at message.content (SSE with stream)")
async def chat_completion(body: wire.CortexChatRequest, request: Request, runtime: RuntimeDep, who: RequesterDep):
    events = chat(runtime, who.attach(wire.to_cortex_request(body, runtime.settings)))
    return await answer(request, wire.CORTEX, events, stream=body.stream, frames=_frames, fold=_answered)


@router.post("/chat/completions/stream", summary="A streaming chat completion (SSE frames: start, token, done)")
async def chat_completion_stream(body: wire.CortexChatRequest, request: Request, runtime: RuntimeDep,
                                 who: RequesterDep):
    events = chat(runtime, who.attach(wire.to_cortex_request(body, runtime.settings)))
    return await answer(request, wire.CORTEX, events, stream=True, frames=_frames, fold=_answered)


async def _answered(events: AsyncIterator[ChatEvent]) -> dict[str, Any]:
    return wire.chat_body(completion_id(), await complete(events))


async def _frames(events: AsyncIterator[ChatEvent]) -> AsyncIterator[dict[str, Any]]:
    async for event in events:
        if (frame := wire.frame(event)) is not None:
            yield frame


@router.websocket("/chat/ws")
async def chat_websocket(websocket: WebSocket):
    """`{"type": "chat", ...}` in; start, token, tool_call and done frames out. One chat at a time per
    connection; `{"type": "cancel"}` stops it, `{"type": "ping"}` answers pong."""
    runtime: Runtime = websocket.app.state.runtime
    await websocket.accept()
    running: asyncio.Task | None = None
    try:
        while True:
            try:
                message = loads(await websocket.receive_text())
            except (ValueError, RecursionError) as exc:  # RecursionError: nested thousands deep
                await websocket.send_json(wire.error_frame(f"the message is not valid JSON: {exc}"))
                continue
            kind = message.get("type") if isinstance(message, dict) else None
            busy = running is not None and not running.done()
            if kind == "ping":
                await websocket.send_json({"type": "pong"})
            elif kind == "cancel":
                if busy:
                    running.cancel()
                else:
                    await websocket.send_json(wire.error_frame("nothing to cancel: no chat is running"))
            elif kind != "chat":
                await websocket.send_json(wire.error_frame(f"unknown message type {kind!r}; use chat, cancel or ping"))
            elif busy:
                await websocket.send_json(wire.error_frame("a chat is already running here; cancel it or wait for done"))
            else:
                try:
                    body = wire.WsChat.model_validate(message)
                except ValidationError as exc:
                    first = exc.errors()[0]
                    where = ".".join(str(p) for p in first["loc"])
                    await websocket.send_json(wire.error_frame(f"invalid chat message ({where}): {first['msg']}"))
                    continue
                running = asyncio.create_task(_stream_to(websocket, runtime, body))
    except WebSocketDisconnect:
        pass
    finally:
        if running is not None:
            running.cancel()  # the client is gone: stop generating for it
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await running


async def _stream_to(websocket: WebSocket, runtime: Runtime, body: wire.WsChat) -> None:
    try:
        request = requester(websocket).attach(wire.to_cortex_request(body, runtime.settings))
        async with aclosing(chat(runtime, request)) as events:
            async for event in events:
                if (frame := wire.frame(event)) is not None:
                    await websocket.send_json(frame)
    except QwendError as exc:
        await websocket.send_json(wire.error_frame(exc.message))
        await websocket.send_json({"type": "done", "finish_reason": "error"})
    except asyncio.CancelledError:  # a cancel message (or the client left, and then this send fails quietly)
        with contextlib.suppress(Exception):
            await websocket.send_json({"type": "done", "finish_reason": "cancelled"})


# -- models


@router.get("/models", summary="Models on disk, with seed 001's owner__repo ids and whether each is loaded")
async def list_models(runtime: RuntimeDep):
    models = await runtime.models.available()
    facts = {f.name: f for f in await asyncio.to_thread(read_all_facts, models)}
    return {
        "models": [wire.model_body(m, facts.get(m.name), m.name in runtime.models.loaded) for m in models],
        "default_model": runtime.models.default_name(),
    }


@router.post("/models/{model_id}/load", summary="Load a model by id or name (404 for an unknown one)")
async def load_model(model_id: str, runtime: RuntimeDep):
    loaded = await runtime.models.load(model_id)
    return {"success": True, "model_id": wire.model_id(loaded.model), "name": loaded.name,
            "message": f"Model {loaded.name} loaded"}


@router.post("/models/{model_id}/unload", summary="Unload a model; running requests on it finish first")
async def unload_model(model_id: str, runtime: RuntimeDep):
    model = runtime.store.resolve(model_id)  # 404 for an id nothing resolves
    unloaded = await runtime.models.unload(model.name)
    message = f"Model {model.name} unloaded" if unloaded else f"Model {model.name} was not loaded"
    return {"success": unloaded, "model_id": wire.model_id(model), "name": model.name, "message": message}


# -- tools


@router.get("/tools", summary="Every tool with its parameters and whether it is enabled")
async def list_tools(runtime: RuntimeDep):
    return {"tools": [cortex_tool(t) for t in runtime.tools.all()]}


@router.post("/tools/execute", summary="Run one tool: {success, result, error}")
async def execute_tool(body: ExecuteBody, runtime: RuntimeDep):
    return (await runtime.tools.invoke(body.tool_name, body.parameters)).to_dict()


@router.post("/tools/{name}/enable", summary="Let the model and clients use a tool again")
async def enable_tool(name: str, runtime: RuntimeDep):
    await runtime.switch_tool(name, True)
    return {"success": True, "tool": name, "enabled": True, "message": f"Tool {name} enabled"}


@router.post("/tools/{name}/disable", summary="Stop a tool from being offered or run")
async def disable_tool(name: str, runtime: RuntimeDep):
    await runtime.switch_tool(name, False)
    return {"success": True, "tool": name, "enabled": False, "message": f"Tool {name} disabled"}


@router.get("/tools/definitions/openai", summary="The enabled tools in OpenAI's function-calling format")
async def openai_definitions(runtime: RuntimeDep):
    return [openai_definition(t) for t in runtime.tools.all() if t.enabled]


# -- agents (seed 001's ReAct agent)


def _agents_enabled(runtime: RuntimeDep) -> None:
    if not runtime.settings.enable_agents:
        raise HTTPException(404, "agents are disabled on this daemon (ENABLE_AGENTS=true turns them on)")


AGENTS_ON = [Depends(_agents_enabled)]


@router.post("/agents/plan", dependencies=AGENTS_ON, summary="A numbered plan for a goal, written by the model")
async def agent_plan(body: PlanBody, request: Request, runtime: RuntimeDep, who: RequesterDep):
    plan = await unless_disconnected(request, react.plan(runtime, body.goal, who=who))
    return {"plan": plan, "goal": body.goal}


@router.post("/agents/execute", dependencies=AGENTS_ON, summary="Run the ReAct agent (JSON, or SSE with stream)")
async def agent_execute(body: AgentExecuteBody, request: Request, runtime: RuntimeDep, who: RequesterDep):
    verbose = runtime.settings.default_agent_verbose if body.verbose is None else body.verbose
    events = react.run(
        runtime, body.goal, max_iterations=body.max_iterations, model=body.model, context=body.context, who=who
    )
    if verbose:
        events = _logged(events)
    return await answer(request, AGENTS, events, stream=body.stream, frames=_steps, fold=_agent_answer)


async def _logged(events: AsyncIterator[react.AgentEvent]) -> AsyncIterator[react.AgentEvent]:
    """seed 001's `verbose`: each step in the daemon's log as it is taken."""
    async with aclosing(events):
        async for event in events:
            if isinstance(event, react.Step):
                log.info("agent step %d: %s -> %s", event.step_number, event.action or "(no action)",
                         (event.observation or "")[:200])
            yield event


async def _agent_answer(events: AsyncIterator[react.AgentEvent]) -> dict[str, Any]:
    return result_body(await react.collect(events))


async def _steps(events: AsyncIterator[react.AgentEvent]) -> AsyncIterator[tuple[str, dict[str, Any]]]:
    async for event in events:
        if isinstance(event, react.Step):
            yield "step", step_body(event)
        elif isinstance(event, react.AgentResult):
            yield "done", result_body(event)


@router.get("/agents/info", dependencies=AGENTS_ON, summary="The agents this daemon offers")
async def agent_info():
    return info_body()

"""Seed 001 (Cortex): its `/api/...` routes, translated to qwend's core."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

from fastapi import APIRouter, Depends, HTTPException, Request, Response
from sse_starlette import EventSourceResponse

from qwend.agents import react
from qwend.api.deps import RuntimeDep
from qwend.api.streaming import ClientGone, open_stream, unless_disconnected
from qwend.api.wire.agents import AgentExecuteBody, PlanBody, info_body, result_body, step_body
from qwend.api.wire.tools import ExecuteBody, cortex_tool, openai_definition
from qwend.errors import QwendError

router = APIRouter(prefix="/api", tags=["cortex (seed 001)"])


@router.get("/tools", summary="Every tool with its parameters and whether it is enabled")
async def list_tools(runtime: RuntimeDep):
    return {"tools": [cortex_tool(t) for t in runtime.tools.all()]}


@router.post("/tools/execute", summary="Run one tool: {success, result, error}")
async def execute_tool(body: ExecuteBody, runtime: RuntimeDep):
    return (await runtime.tools.invoke(body.tool_name, body.parameters)).to_dict()


@router.post("/tools/{name}/enable", summary="Let the model and clients use a tool again")
async def enable_tool(name: str, runtime: RuntimeDep):
    runtime.tools.set_enabled(name, True)
    return {"success": True, "tool": name, "enabled": True, "message": f"Tool {name} enabled"}


@router.post("/tools/{name}/disable", summary="Stop a tool from being offered or run")
async def disable_tool(name: str, runtime: RuntimeDep):
    runtime.tools.set_enabled(name, False)
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
async def agent_plan(body: PlanBody, request: Request, runtime: RuntimeDep):
    try:
        plan = await unless_disconnected(request, react.plan(runtime, body.goal))
    except ClientGone:
        return Response(status_code=499)
    return {"plan": plan, "goal": body.goal}


@router.post("/agents/execute", dependencies=AGENTS_ON, summary="Run the ReAct agent (JSON, or SSE with stream)")
async def agent_execute(body: AgentExecuteBody, request: Request, runtime: RuntimeDep):
    verbose = runtime.settings.default_agent_verbose if body.verbose is None else body.verbose
    events = await open_stream(react.run(
        runtime, body.goal, max_iterations=body.max_iterations, model=body.model, context=body.context
    ))
    if body.stream:
        return EventSourceResponse(_agent_sse(events, verbose), sep="\n", ping=15)
    try:
        result = await unless_disconnected(request, react.collect(events))
    except ClientGone:
        return Response(status_code=499)
    return result_body(result, verbose)


async def _agent_sse(events: AsyncIterator[react.AgentEvent], verbose: bool) -> AsyncIterator[dict[str, str]]:
    # sse-starlette cancels this generator when the client goes; closing `events` then cancels the generation
    try:
        async for event in events:
            if isinstance(event, react.Step):
                yield {"event": "step", "data": json.dumps(step_body(event), ensure_ascii=False)}
            elif isinstance(event, react.AgentResult):
                yield {"event": "done", "data": json.dumps(result_body(event, verbose), ensure_ascii=False)}
    except QwendError as exc:  # after the 200 has gone out, errors travel in the stream
        yield {"event": "error", "data": json.dumps({"detail": exc.message})}
    finally:
        await events.aclose()


@router.get("/agents/info", dependencies=AGENTS_ON, summary="The agents this daemon offers")
async def agent_info():
    return info_body()

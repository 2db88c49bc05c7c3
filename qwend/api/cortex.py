"""Seed 001 (Cortex): its `/api/...` routes, translated to qwend's core."""

from __future__ import annotations

from fastapi import APIRouter

from qwend.api.deps import RuntimeDep
from qwend.api.wire.tools import ExecuteBody, cortex_tool, openai_definition

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

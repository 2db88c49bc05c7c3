"""Wire bodies of the tool endpoints (seed 000's `/v1/tools`, seed 001's `/api/tools`) and their encoders."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

from qwend.tools.base import Tool


class InvokeBody(BaseModel):
    """Seed 000: `POST /v1/tools/{name}/invoke`."""

    arguments: dict[str, Any] = Field(default_factory=dict, description="The tool's arguments.")


class ExecuteBody(BaseModel):
    """Seed 001: `POST /api/tools/execute`."""

    tool_name: str = Field(description="Name of the tool to run.")
    parameters: dict[str, Any] = Field(default_factory=dict, description="The tool's arguments.")


def native_tool(tool: Tool) -> dict[str, Any]:
    """Seed 000's listing: the JSON schema as is."""
    return {
        "name": tool.name, "description": tool.description, "parameters": tool.parameters,
        "enabled": tool.enabled, "source": tool.source, "timeout": tool.timeout,
    }


def cortex_tool(tool: Tool) -> dict[str, Any]:
    """Seed 001's listing: one `{name, type, description, required}` entry per parameter."""
    required = set(tool.parameters.get("required", []))
    parameters = {
        name: {"name": name, "type": _type_name(schema), "description": schema.get("description", ""),
               "required": name in required}
        for name, schema in tool.parameters.get("properties", {}).items()
    }
    return {"name": tool.name, "description": tool.description, "parameters": parameters, "enabled": tool.enabled}


def openai_definition(tool: Tool) -> dict[str, Any]:
    return {"type": "function",
            "function": {"name": tool.name, "description": tool.description, "parameters": tool.parameters}}


def _type_name(schema: dict[str, Any]) -> str:
    if "type" in schema:
        return schema["type"] if isinstance(schema["type"], str) else next(iter(schema["type"]), "any")
    options = [s.get("type") for s in schema.get("anyOf", []) if s.get("type") not in (None, "null")]
    return options[0] if options else "any"

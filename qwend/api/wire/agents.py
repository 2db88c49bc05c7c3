"""Wire bodies of seed 001's agent endpoints (`/api/agents/...`) and their encoders, field for field."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from pydantic import BaseModel, Field

from qwend.agents.react import AgentResult, Step
from qwend.api.wire.codec import DETAIL, Codec, sse, sse_event


class PlanBody(BaseModel):
    """Seed 001: `POST /api/agents/plan`."""

    goal: str = Field(description="What the plan should achieve.")


class AgentExecuteBody(BaseModel):
    """Seed 001: `POST /api/agents/execute`, plus `stream` for the server-sent-events variant."""

    goal: str = Field(description="What the agent should achieve.")
    max_iterations: int | None = Field(
        None, ge=1, le=100, description="Most ReAct steps to take; default MAX_AGENT_ITERATIONS."
    )
    verbose: bool | None = Field(None, description="Log every step in the daemon's log (the answer always holds "
                                 "them); default DEFAULT_AGENT_VERBOSE.")
    model: str | None = Field(None, description="Model to reason with; default the daemon's model.")
    context: dict[str, Any] | None = Field(None, description="Extra facts or preferences shown to the agent.")
    stream: bool = Field(False, description="Answer text/event-stream: an `event: step` per step, then `done`.")


def step_body(step: Step) -> dict[str, Any]:
    """One step: step_number, thought, action, action_input, observation, status."""
    return asdict(step)


def result_body(result: AgentResult) -> dict[str, Any]:
    """The whole run: success, final_answer, steps, metadata (seed 001 returns the steps whatever `verbose`
    says: it switches the server's step log)."""
    return {
        "success": result.success,
        "final_answer": result.final_answer,
        "steps": [step_body(s) for s in result.steps],
        "metadata": dict(result.metadata),
    }


def info_body() -> dict[str, Any]:
    """`GET /api/agents/info`, exactly as seed 001 documents it."""
    return {
        "agents": [
            {
                "type": "react",
                "name": "ReAct Agent",
                "description": "Agent that uses reasoning and acting to solve problems with tools",
                "capabilities": [
                    "Multi-step reasoning",
                    "Tool usage",
                    "Self-correction",
                    "Goal-oriented problem solving",
                ],
            }
        ]
    }


# SSE: a `step` event per step, then `done`; an error in a started stream is an `error` event with the
# `{"detail": ...}` FastAPI answers before it (written in ASCII, as it always was)
AGENTS: Codec[tuple[str, dict[str, Any]]] = Codec(
    response=sse, encode=lambda named: sse_event(*named, ensure_ascii=False), error_body=DETAIL.error_body,
    stream_error=lambda failure: sse_event("error", {"detail": failure.message}),
)

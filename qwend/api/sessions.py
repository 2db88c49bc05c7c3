"""Seed 000's chat and session routes: `POST /v1/chat`, `/v1/sessions...`, and the SSE progress stream.
(The rest of seed 000, health, tools and profiles, is in api/daemon.py.)"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Request

from qwend.agents.loop import ToolResultEvent, TurnEnd
from qwend.agents.turns import Turn, run_turn
from qwend.api.answer import answer
from qwend.api.deps import CallerDep, RequesterDep, RuntimeDep
from qwend.api.jsonbody import JsonRoute
from qwend.api.wire import daemon as wire
from qwend.runtime import Runtime
from qwend.sessions.store import session_for
from qwend.types import (
    PromptProgress, Queued, Reasoning, SamplingOverrides, Started, Thinking, Token, ToolCallEnd,
)

router = APIRouter(route_class=JsonRoute.answering(wire.NATIVE), prefix="/v1", tags=["qwend"])


@router.post("/chat", summary="One stateless turn with a profile (its tools run server-side)")
async def stateless_chat(body: wire.ChatBody, request: Request, runtime: RuntimeDep, who: RequesterDep):
    turn = Turn(body.message, who, profile=body.profile, model=body.model, model_size=body.model_size,
                sampling=SamplingOverrides(temperature=body.temperature, max_tokens=body.max_tokens),
                thinking=Thinking(body.enable_thinking, body.thinking_budget))
    return await _answer(runtime, request, turn, body.stream, body.profile)


@router.post("/sessions", summary="Create a session")
async def create_session(body: wire.CreateSessionBody, runtime: RuntimeDep, caller: CallerDep):
    runtime.profiles.get(body.profile_name)  # 404 for an unknown profile, before anything is stored
    model = body.model or (runtime.settings.model_for_size(body.model_size) if body.model_size else None)
    if model:
        runtime.store.resolve(model)  # 404 for an unknown model
    session = await runtime.sessions.create(body.profile_name, model, body.title, body.metadata, caller.owner)
    return wire.session_body(session)


@router.get("/sessions", summary="List sessions, most recently used first (with API keys: the key's own)")
async def list_sessions(runtime: RuntimeDep, caller: CallerDep):
    return {"sessions": [wire.session_body(s) for s in await runtime.sessions.list(caller.listed)]}


@router.get("/sessions/{session_id}", summary="A session with its whole history")
async def get_session(session_id: str, runtime: RuntimeDep, caller: CallerDep):
    session = await session_for(runtime.sessions, session_id, caller)
    return wire.session_body(session, await runtime.sessions.messages(session_id))


@router.patch("/sessions/{session_id}", summary="Rename a session")
async def update_session(session_id: str, body: wire.UpdateSessionBody, runtime: RuntimeDep, caller: CallerDep):
    await session_for(runtime.sessions, session_id, caller)
    return wire.session_body(await runtime.sessions.update(session_id, title=body.title))


@router.delete("/sessions/{session_id}", summary="Delete a session and its history")
async def delete_session(session_id: str, runtime: RuntimeDep, caller: CallerDep):
    await session_for(runtime.sessions, session_id, caller)
    await runtime.sessions.delete(session_id)
    return {"deleted": True, "session_id": session_id}


@router.post("/sessions/{session_id}/chat", summary="One turn in a session; turns of a session run in order")
async def session_chat(
    session_id: str, body: wire.SessionChatBody, request: Request, runtime: RuntimeDep, who: RequesterDep,
    caller: CallerDep,
):
    session = await session_for(runtime.sessions, session_id, caller)
    turn = Turn(body.message, who, session=session, model=body.model, model_size=body.model_size,
                sampling=SamplingOverrides(temperature=body.temperature, max_tokens=body.max_tokens),
                thinking=Thinking(body.enable_thinking, body.thinking_budget))
    return await _answer(runtime, request, turn, body.stream, session.profile)


async def _answer(runtime: Runtime, request: Request, turn: Turn, stream: bool, profile: str):
    session_id = turn.session.id if turn.session else None
    return await answer(request, wire.NATIVE, run_turn(runtime, turn), stream=stream,
                        frames=lambda events: _progress(events, session_id),
                        fold=lambda events: _answered(events, profile, session_id))


async def _answered(events: AsyncIterator, profile: str, session_id: str | None) -> dict[str, Any]:
    model = ""
    async for event in events:
        if isinstance(event, Started):
            model = event.model
        elif isinstance(event, TurnEnd):
            return wire.turn_body(event, model=model, profile=profile, session_id=session_id)
    raise AssertionError("a turn ended without TurnEnd")


async def _progress(events: AsyncIterator, session_id: str | None) -> AsyncIterator[tuple[str, dict[str, Any]]]:
    """The native event vocabulary: queued, started, progress (prompt tokens read of total), reasoning, token,
    tool_call, tool_result, usage, done (and error: wire.NATIVE)."""
    started = False
    async for event in events:
        match event:
            case Queued(position, None):
                yield "queued", {"position": position}
            case Queued(position, model):
                yield "queued", {"position": position, "loading": model}
            case Started(model, prompt_tokens) if not started:
                started = True
                yield "started", {"model": model, "prompt_tokens": prompt_tokens, "session_id": session_id}
            case PromptProgress(read, total):
                yield "progress", {"read": read, "total": total}
            case Reasoning(text):
                yield "reasoning", {"text": text}
            case Token(text):
                yield "token", {"text": text}
            case ToolCallEnd(_, call):
                yield "tool_call", wire.call_body(call)
            case ToolResultEvent():
                yield "tool_result", wire.tool_result_body(event)
            case TurnEnd(_, reason, usage, steps):
                yield "usage", wire.usage_body(usage, steps)
                yield "done", {"finish_reason": reason, "session_id": session_id, "response": event.answer}

"""Seed 000's chat and session routes: `POST /v1/chat`, `/v1/sessions...`, and the SSE progress stream.
(The rest of seed 000, health, tools and profiles, is in api/daemon.py.)"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

from fastapi import APIRouter, Request
from sse_starlette import EventSourceResponse

from qwend.agents.loop import ToolResultEvent, TurnEnd
from qwend.agents.turns import TurnRequest, run_turn
from qwend.api.deps import CallerDep, RequesterDep, RuntimeDep
from qwend.api.jsonbody import JsonRoute
from qwend.api.streaming import open_stream, unless_disconnected
from qwend.api.wire import daemon as wire
from qwend.errors import QwendError
from qwend.runtime import Runtime
from qwend.sessions.store import session_for
from qwend.types import Queued, Reasoning, Started, Token, ToolCallEnd

router = APIRouter(route_class=JsonRoute, prefix="/v1", tags=["qwend"])


@router.post("/chat", summary="One stateless turn with a profile (its tools run server-side)")
async def stateless_chat(body: wire.ChatBody, request: Request, runtime: RuntimeDep, who: RequesterDep):
    turn = who.attach(TurnRequest(body.message, profile=body.profile, model=body.model, model_size=body.model_size,
                                  temperature=body.temperature, max_tokens=body.max_tokens))
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
    turn = who.attach(TurnRequest(body.message, session_id=session_id, model=body.model, model_size=body.model_size,
                                  temperature=body.temperature, max_tokens=body.max_tokens))
    return await _answer(runtime, request, turn, body.stream, session.profile)


async def _answer(runtime: Runtime, request: Request, turn: TurnRequest, stream: bool, profile: str):
    events = await open_stream(run_turn(runtime, turn))
    if stream:
        return EventSourceResponse(_progress(events, turn.session_id), sep="\n", ping=15)
    end, model = await unless_disconnected(request, _fold(events))
    return wire.turn_body(end, model=model, profile=profile, session_id=turn.session_id)


async def _fold(events: AsyncIterator) -> tuple[TurnEnd, str]:
    model = ""
    async for event in events:
        if isinstance(event, Started):
            model = event.model
        elif isinstance(event, TurnEnd):
            return event, model
    raise AssertionError("a turn ended without TurnEnd")


async def _progress(events: AsyncIterator, session_id: str | None) -> AsyncIterator[dict]:
    """The native event vocabulary: queued, started, reasoning, token, tool_call, tool_result, usage, done, error."""

    def sse(name: str, data: dict) -> dict:
        return {"event": name, "data": json.dumps(data, ensure_ascii=False)}

    started = False
    try:
        async for event in events:
            match event:
                case Queued(position, None):
                    yield sse("queued", {"position": position})
                case Queued(position, model):
                    yield sse("queued", {"position": position, "loading": model})
                case Started(model, prompt_tokens) if not started:
                    started = True
                    yield sse("started", {"model": model, "prompt_tokens": prompt_tokens, "session_id": session_id})
                case Reasoning(text):
                    yield sse("reasoning", {"text": text})
                case Token(text):
                    yield sse("token", {"text": text})
                case ToolCallEnd(_, call):
                    yield sse("tool_call", wire.call_body(call))
                case ToolResultEvent():
                    yield sse("tool_result", wire.tool_result_body(event))
                case TurnEnd(_, reason, usage, steps):
                    yield sse("usage", wire.usage_body(usage, steps))
                    yield sse("done", {"finish_reason": reason, "session_id": session_id, "response": event.answer})
    except QwendError as exc:  # after the 200 has gone out, errors travel in the stream
        yield sse("error", {"detail": exc.message, "code": exc.code})

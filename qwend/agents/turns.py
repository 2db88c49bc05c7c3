"""One turn of a profile chat (seed 000's `/v1/chat` and session chats): the second entry point besides
`chat.service.chat`. It resolves the profile and model, waits its turn in the session, fits the history
into the window, runs the tool loop, and stores the whole turn in one transaction once it is complete.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, replace

from qwend.agents.loop import LoopEvent, StepDone, TurnEnd, run_tool_loop
from qwend.errors import InvalidRequest
from qwend.runtime import Runtime
from qwend.sessions.context import fit_session
from qwend.sessions.store import StoredMessage
from qwend.types import Message, Queued


@dataclass(frozen=True)
class TurnRequest:
    message: str
    profile: str | None = None  # a session's own profile wins
    session_id: str | None = None  # None: stateless
    model: str | None = None
    model_size: str | None = None
    temperature: float | None = None
    max_tokens: int | None = None


async def run_turn(runtime: Runtime, request: TurnRequest) -> AsyncIterator[LoopEvent | Queued]:
    """Events of one turn: Queued (when the session is busy), then the loop's events, ending with TurnEnd
    (yielded once the turn is stored)."""
    if not request.message.strip():
        raise InvalidRequest("message is empty", param="message")
    session = await runtime.sessions.get(request.session_id) if request.session_id else None
    profile = runtime.profiles.get(session.profile if session else request.profile)
    model = request.model or (session.model if session else None) or profile.model
    model = model or runtime.settings.model_for_size(request.model_size or profile.model_size)
    loaded = await runtime.models.get(model)  # unknown models fail here, before anything is queued
    model = loaded.name
    # every generation is bounded (a small model can repeat itself to the end of a 32k window), and the
    # session's history is fitted to leave exactly that much room
    sampling = profile.sampling_params(temperature=request.temperature, max_tokens=request.max_tokens)
    sampling = replace(sampling, max_tokens=sampling.max_tokens or runtime.settings.reply_reserve)
    tools = runtime.tools.specs([n for n in profile.tools if n in runtime.tools.names()])
    user = Message("user", request.message)

    def loop(view: list[Message]) -> AsyncIterator[LoopEvent]:
        return run_tool_loop(runtime, view, tools=tools, model=model, sampling=sampling,
                             max_steps=profile.max_tool_steps, chain=profile.tool_chaining)

    if session is None:
        async for event in loop(([Message("system", profile.system_prompt)] if profile.system_prompt else []) + [user]):
            yield event
        return

    ahead = runtime.session_turns.ahead(session.id)
    if ahead:
        yield Queued(ahead)
    async with runtime.session_turns.hold(session.id):
        budget = loaded.backend.info.context_length - sampling.max_tokens
        view = await fit_session(runtime, runtime.sessions, session.id, model=model,
                                 system_prompt=profile.system_prompt, new_message=user, tools=tools, budget=budget)
        steps: list[StepDone] = []
        async for event in loop(view):
            if isinstance(event, StepDone):
                steps.append(event)
            if isinstance(event, TurnEnd):
                await runtime.sessions.append_turn(session.id, _stored(user, event, steps))
            yield event


def _stored(user: Message, end: TurnEnd, steps: list[StepDone]) -> list[StoredMessage]:
    """The turn as stored: the user's message, then each assistant step (with its token counts) and tool result."""
    usages = iter(steps)
    stored = [StoredMessage("user", user.content)]
    for message in end.messages:
        row = StoredMessage(
            message.role, message.content, reasoning=message.reasoning or "", tool_calls=message.tool_calls,
            tool_call_id=message.tool_call_id, name=message.name,
        )
        if message.role == "assistant":
            step = next(usages, None)
            if step is not None:
                row = replace(row, prompt_tokens=step.usage.prompt_tokens, completion_tokens=step.usage.completion_tokens)
        stored.append(row)
    return stored

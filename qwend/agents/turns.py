"""One turn of a profile chat (seed 000's `/v1/chat` and session chats): the second entry point besides
`chat.service.chat`. It resolves the profile and the model once (the loaded model goes to the window fitting
and to every step of the loop), waits its turn in the session, fits the history into the window, runs the tool
loop, and stores the whole turn in one transaction once it is complete (or, stopped midway, as far as it
came). The route that read the session hands it over, so a turn reads it no second time.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from contextlib import aclosing
from dataclasses import dataclass, replace
from functools import partial

from qwend.agents.loop import LoopEvent, StepDone, ToolExecutor, ToolResultEvent, TurnEnd, run_tool_loop
from qwend.engine.manager import LoadingModel
from qwend.errors import InvalidRequest
from qwend.runtime import Runtime
from qwend.sessions.context import fit_session
from qwend.sessions.store import SessionRecord, StoredMessage
from qwend.types import Message, Queued, Requester, SamplingOverrides, Thinking, Token, ToolSpec


@dataclass(frozen=True)
class Turn:
    """One turn: the user's message, who asks, and what the asker sets over the profile (a session's own
    profile wins). The fields after `sampling` let a protocol with client-side tools (seed 003) reuse the turn
    as is: its own tools and executor, system prompt, or a conversation it sends whole."""

    message: str
    requester: Requester = Requester()  # a session route's is the session (client and affinity)
    profile: str | None = None
    session: SessionRecord | None = None  # the session it continues, as the route found it (None: stateless)
    model: str | None = None
    model_size: str | None = None
    sampling: SamplingOverrides = SamplingOverrides()
    thinking: Thinking = Thinking()  # for a model that reasons first
    tools: tuple[ToolSpec, ...] | None = None  # replace the profile's tools (() for none)
    execute: ToolExecutor | None = None  # runs the calls instead of the tool registry
    system_prompt: str | None = None  # replaces the profile's ("" for none)
    # stateless only: the conversation to answer, with `message` (when not empty) appended as the user's
    history: tuple[Message, ...] | None = None


async def run_turn(runtime: Runtime, request: Turn) -> AsyncIterator[LoopEvent | Queued]:
    """Events of one turn: Queued (while its model loads, or the session is busy), then the loop's events,
    ending with TurnEnd (yielded once the turn is stored)."""
    if request.history is not None and request.session:
        raise ValueError("a turn with a given history is stateless; it continues no session")
    if not request.message.strip() and not request.history:
        raise InvalidRequest("message is empty", param="message")
    session, who = request.session, request.requester
    profile = runtime.profiles.get(session.profile if session else request.profile)
    model = request.model or (session.model if session else None) or profile.model
    model = model or runtime.settings.model_for_size(request.model_size or profile.model_size)
    loaded = await runtime.models.request(model)  # unknown models fail here, before anything is queued
    if isinstance(loaded, LoadingModel):
        yield Queued(0, loading=loaded.name)
        loaded = await loaded.ready()
    model = loaded.name
    # every generation is bounded (a small model can repeat itself to the end of a 32k window), and the
    # session's history is fitted to leave exactly that much room
    sampling = request.sampling.over(profile.sampling_params())
    sampling = replace(sampling, max_tokens=sampling.max_tokens or runtime.settings.reply_reserve)
    if request.tools is not None:
        tools = request.tools
    else:
        tools = runtime.tools.specs([n for n in profile.tools if n in runtime.tools.names()])
    system_prompt = profile.system_prompt if request.system_prompt is None else request.system_prompt
    user = Message("user", request.message)

    max_steps = min(profile.max_tool_steps, runtime.settings.max_tool_steps)

    def loop(view: list[Message]) -> AsyncIterator[LoopEvent]:
        return run_tool_loop(runtime, view, tools=tools, model=model, sampling=sampling, max_steps=max_steps,
                             chain=profile.tool_chaining, execute=request.execute, who=who,
                             loaded=loaded, thinking=request.thinking)

    if session is None:
        system = [Message("system", system_prompt)] if system_prompt else []
        conversation = list(request.history or ()) + ([user] if request.message.strip() else [])
        # aclosing: closing this turn closes the loop at once (and with it the job), wherever it is suspended
        async with aclosing(loop(system + conversation)) as events:
            async for event in events:
                yield event
        return

    ahead = runtime.session_turns.ahead(session.id)
    if ahead:
        yield Queued(ahead)
    # one turn of a session at a time: in this daemon (in arrival order), then among daemons sharing the database
    async with runtime.session_turns.hold(session.id), runtime.sessions.turn_lock(session.id):
        length = loaded.backend.info.context_length
        # a summary of folded turns is queued as the session's turn
        summarize = partial(runtime.generate, model=model, client=session.id, affinity=session.id)
        view = await fit_session(runtime.sessions, session.id, system_prompt=system_prompt, new_message=user,
                                 tools=tools, budget=length - sampling.max_tokens, context_length=length,
                                 prompt=loaded.backend.prompt, summarize=summarize,
                                 overflow=runtime.settings.context_overflow)
        so_far = _TurnSoFar(user)
        try:
            async with aclosing(loop(view)) as events:
                async for event in events:
                    so_far.add(event)
                    if isinstance(event, TurnEnd):  # written whole from here, even if the client leaves meanwhile
                        so_far.kept = True
                        await runtime.write_whole(runtime.sessions.append_turn(session.id,
                                                                               so_far.stored(event.messages)))
                    yield event
        except (GeneratorExit, asyncio.CancelledError):
            # stopped (the client's Stop, a closed tab, a dropped connection): the question stays, and the answer
            # as far as it came, marked stopped, as chat UIs keep them; shielded, as the task may be cancelled
            if not so_far.kept:
                await runtime.write_whole(runtime.sessions.append_turn(session.id, so_far.stopped()))
            raise


class _TurnSoFar:
    """What a turn has produced, event by event: its finished steps and tool results, and the text of the step
    under way, so that a turn stopped midway is stored as far as it came."""

    def __init__(self, user: Message) -> None:
        self.user, self.kept = user, False
        self.steps: list[StepDone] = []
        self.messages: list[Message] = []  # finished steps and tool results, as the loop adds them
        self.partial: list[str] = []  # the text of the step under way

    def add(self, event: LoopEvent) -> None:
        match event:
            case Token(text):
                self.partial.append(text)
            case StepDone(_, _, reading):
                self.steps.append(event)
                self.partial = []
                if reading is not None:
                    self.messages.append(reading.reply)
            case ToolResultEvent(call):
                self.messages.append(Message("tool", event.observation, name=call.name, tool_call_id=call.id))

    def stopped(self) -> list[StoredMessage]:
        return [*self.stored(self.messages), StoredMessage("assistant", "".join(self.partial), stopped=True)]

    def stored(self, messages: Sequence[Message]) -> list[StoredMessage]:
        return _stored(self.user, messages, self.steps)


def _stored(user: Message, messages: Sequence[Message], steps: list[StepDone]) -> list[StoredMessage]:
    """The turn as stored: the user's message, then each assistant step (with its token counts) and tool result."""
    usages = iter(steps)
    stored = [StoredMessage("user", user.content)]
    for message in messages:
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

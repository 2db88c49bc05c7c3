"""OpenAI's Responses API: `POST /v1/responses` (JSON, SSE, or in the background), `GET`, `DELETE` and
`POST .../cancel` by id, and `GET .../input_items`. The conversation logic is agents/responses.py; this module runs each response as a
task of its own (so that a cancel, or a client leaving, stops it in one place), keeps the running ones
(ResponseJobs, the app's: stopped at shutdown), stores them, and encodes their events as the API's named SSE
events."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, Request

from qwend.api.answer import streamed
from qwend.api.deps import CallerDep, RequesterDep, RuntimeDep
from qwend.api.jsonbody import JsonRoute
from qwend.api.streaming import ClientGone, open_stream, unless_disconnected
from qwend.api.wire import responses as wire
from qwend.agents.responses import ItemDone, ItemStarted, ResponseEnd, chain_items, respond
from qwend.errors import QwendError
from qwend.runtime import Runtime
from qwend.sessions.responses import StoredResponse, response_for, response_not_found
from qwend.sessions.store import Caller
from qwend.types import Started, Token, ToolCallDelta, ToolCallStart, Usage

router = APIRouter(route_class=JsonRoute.answering(wire.RESPONSES), prefix="/v1", tags=["OpenAI"])


class ResponseJobs:
    """The responses running in this daemon, by id: what GET and cancel find while one runs, and what
    shutdown stops (each is then stored as cancelled)."""

    def __init__(self) -> None:
        self.running: dict[str, ResponseJob] = {}

    async def stop(self) -> None:
        tasks = [job.task for job in self.running.values()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def _jobs(request: Request) -> ResponseJobs:
    return request.app.state.response_jobs


JobsDep = Annotated[ResponseJobs, Depends(_jobs)]


@router.post("/responses", summary="Create a response (OpenAI Responses API): stored and continued by "
             "previous_response_id; stream or background")
async def create_response(body: wire.ResponsesBody, request: Request, runtime: RuntimeDep, who: RequesterDep,
                          caller: CallerDep, jobs: JobsDep):
    job = ResponseJob(runtime, jobs, body, who.attach(wire.to_response_request(body)), caller)
    await job.open()  # what makes it fail at once (an unknown model or previous response) is an HTTP error
    if body.background:
        return job.body()
    if body.stream:
        return streamed(wire.RESPONSES, job.streamed_events())
    try:
        await unless_disconnected(request, asyncio.shield(job.task))
    except ClientGone:
        job.task.cancel()
        raise
    return job.body()


@router.get("/responses/{response_id}", summary="A response: in progress, or as stored")
async def get_response(response_id: str, runtime: RuntimeDep, caller: CallerDep, jobs: JobsDep):
    if (job := _running(jobs, response_id, caller)) is not None:
        return job.body()
    return (await response_for(runtime.database.responses, response_id, caller)).body


@router.get("/responses/{response_id}/input_items", summary="A stored response's input items (the SDK's "
            "responses.input_items.list)")
async def list_input_items(response_id: str, runtime: RuntimeDep, caller: CallerDep,
                           order: Literal["asc", "desc"] = "desc", limit: int = Query(20, ge=1, le=100)):
    stored = await response_for(runtime.database.responses, response_id, caller)
    return wire.input_items_body(stored, order, limit)


@router.delete("/responses/{response_id}", summary="Delete a stored response")
async def delete_response(response_id: str, runtime: RuntimeDep, caller: CallerDep):
    await response_for(runtime.database.responses, response_id, caller)
    await runtime.database.responses.delete(response_id)
    return {"id": response_id, "object": "response.deleted", "deleted": True}


@router.post("/responses/{response_id}/cancel", summary="Cancel a response in progress (its state: cancelled)")
async def cancel_response(response_id: str, runtime: RuntimeDep, caller: CallerDep, jobs: JobsDep):
    job = _running(jobs, response_id, caller)
    if job is None:
        return (await response_for(runtime.database.responses, response_id, caller)).body  # already over: as it ended
    job.task.cancel()
    await asyncio.wait([job.task])
    return job.body()


def _running(jobs: ResponseJobs, response_id: str, caller: Caller) -> ResponseJob | None:
    """The response running here under that id; another key's is answered as an unknown one (404)."""
    job = jobs.running.get(response_id)
    if job is not None and not caller.sees(job.caller.owner):
        raise response_not_found(response_id)
    return job


class ResponseJob:
    """One response: runs `respond` in a task of its own, keeps the response object up to date, stores it
    (when `store`) as its caller's, and hands streamed events to `sse()`."""

    def __init__(self, runtime: Runtime, jobs: ResponseJobs, body: wire.ResponsesBody, request, caller: Caller
                 ) -> None:
        self.runtime, self.jobs, self.asked, self.request = runtime, jobs, body, request
        self.caller = caller  # whose it is: stored as its owner; only keys that see that owner reach it
        self.id = f"resp_{uuid.uuid4().hex}"
        self.created_at = time.time()
        self.model = request.model or ""
        self.status = "in_progress"
        self.output: list[dict[str, Any]] = []
        self.usage: Usage | None = None
        self.error: dict[str, str] | None = None
        self.events: asyncio.Queue[dict[str, Any] | None] | None = asyncio.Queue() if body.stream else None
        self._sequence = 0
        self.task: asyncio.Task

    def body(self) -> dict[str, Any]:
        return wire.response_body(self.id, self.created_at, self.asked, model=self.model, status=self.status,
                                  output=self.output, usage=self.usage, error=self.error)

    async def open(self) -> None:
        history = await chain_items(self.runtime.database.responses, self.request.previous_response_id, self.caller)
        events = await open_stream(respond(self.runtime, self.request, history))
        self.jobs.running[self.id] = self
        if self.asked.background and self.asked.store:
            await self._store()  # GET answers while it runs, also from another daemon
        self.task = asyncio.create_task(self._run(events), name=f"response {self.id}")
        self.task.add_done_callback(self._ended)

    def _ended(self, task: asyncio.Task) -> None:
        """Also for a task cancelled before it ran a line (then `_run`'s own cleanup never ran)."""
        self.jobs.running.pop(self.id, None)
        if task.cancelled() and self.status == "in_progress":
            self.status = "cancelled"

    async def _run(self, events: AsyncIterator) -> None:
        self._emit("response.created", response=self.body())
        self._emit("response.in_progress", response=self.body())
        calls: dict[int, dict[str, Any]] = {}  # the parser's call index -> the function_call item streaming
        try:
            async for event in events:
                match event:
                    case Started(model, _):
                        self.model = model
                    case ItemStarted(index, item):
                        self.output.append(item)  # the service's own dict: it fills in as it goes
                        self._item_started(index, item)
                    case Token(text) if self.output and self.output[-1]["type"] == "message":
                        self._emit("response.output_text.delta", item_id=self.output[-1]["id"],
                                   output_index=len(self.output) - 1, content_index=0, delta=text, logprobs=[])
                    case ToolCallStart(index, call_id, _):
                        for item in self.output:  # a custom tool's input is told whole, at its end
                            if item.get("call_id") == call_id and item["type"] == "function_call":
                                calls[index] = item
                    case ToolCallDelta(index, arguments) if index in calls:
                        self._emit("response.function_call_arguments.delta", item_id=calls[index]["id"],
                                   output_index=self.output.index(calls[index]), delta=arguments)
                    case ItemDone(index, item):
                        if not any(i is item for i in self.output):  # a built-in tool's run: it had no start
                            self.output.append(item)
                        self._item_done(index, item)
                    case ResponseEnd(output, usage, finish):
                        self.output, self.usage = output, usage
                        self.status = "incomplete" if finish == "length" else "completed"
            self._emit(f"response.{self.status}", response=self.body())
        except QwendError as exc:
            self.status, self.error = "failed", {"code": exc.code or exc.type, "message": exc.message}
            self._emit("response.failed", response=self.body())
        except asyncio.CancelledError:
            self.status = "cancelled"
            raise
        finally:
            await events.aclose()
            if self.asked.store:
                await asyncio.shield(self._store())
            if self.events is not None:
                self.events.put_nowait(None)

    def _item_started(self, index: int, item: dict[str, Any]) -> None:
        self._emit("response.output_item.added", output_index=index, item=item)
        if item["type"] == "message":
            self._emit("response.content_part.added", item_id=item["id"], output_index=index, content_index=0,
                       part={"type": "output_text", "text": "", "annotations": [], "logprobs": []})

    def _item_done(self, index: int, item: dict[str, Any]) -> None:
        if item["type"] == "message":
            part = item["content"][0]
            self._emit("response.output_text.done", item_id=item["id"], output_index=index, content_index=0,
                       text=part["text"], logprobs=[])
            self._emit("response.content_part.done", item_id=item["id"], output_index=index, content_index=0,
                       part=part)
        elif item["type"] == "function_call":
            self._emit("response.function_call_arguments.done", item_id=item["id"], output_index=index,
                       name=item["name"], arguments=item["arguments"])
        elif item["type"] == "custom_tool_call":
            self._emit("response.custom_tool_call_input.done", item_id=item["id"], output_index=index,
                       input=item["input"])
        else:  # a built-in tool that ran here: it has no deltas, so it is added and done at once
            self._emit("response.output_item.added", output_index=index, item=item)
        self._emit("response.output_item.done", output_index=index, item=item)

    def _emit(self, kind: str, **fields: Any) -> None:
        if self.events is not None:
            self.events.put_nowait({"type": kind, "sequence_number": self._sequence, **fields})
        self._sequence += 1

    async def _store(self) -> None:
        items = [*self.request.items, *(i for i in self.output if i.get("status") == "completed")]
        await self.runtime.database.responses.save(StoredResponse(
            self.id, self.request.previous_response_id, self.body(), items, self.created_at, self.caller.owner))

    async def streamed_events(self) -> AsyncIterator[dict[str, Any]]:
        """The events of the API's stream (named by their type: wire.RESPONSES); a client that leaves cancels
        the response."""
        try:
            while (event := await self.events.get()) is not None:
                yield event
        finally:
            if not self.task.done():
                self.task.cancel()


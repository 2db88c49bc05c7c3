"""A profile turn's typed sampling overrides, and each request resolving its model and session once (the
resolved model travels with the request instead of being looked up again), on a scripted backend."""

import pytest

from qwend.types import SamplingOverrides, SamplingParams
from tests.conftest import client_for, fake_runtime
from tests.fakes import FakeBackend


def test_overrides_set_only_what_they_name():
    profile = SamplingParams(temperature=0.3, top_k=7, max_tokens=200)
    assert SamplingOverrides().over(profile) == profile
    assert SamplingOverrides(temperature=0.0, seed=3).over(profile) == SamplingParams(
        temperature=0.0, top_k=7, max_tokens=200, seed=3)


@pytest.fixture
def runtime(tmp_path):
    return fake_runtime(tmp_path, FakeBackend("Hello there.", context_length=8192))


def count_calls(owner, name: str) -> list[tuple]:
    """The arguments of every call of `owner.name` from now on."""
    calls, original = [], getattr(owner, name)

    async def spy(*args, **kwargs):
        calls.append(args)
        return await original(*args, **kwargs)

    setattr(owner, name, spy)
    return calls


async def test_an_ollama_chat_resolves_its_model_once(runtime):
    resolved = count_calls(runtime.models, "request")
    async with client_for(runtime) as client:
        reply = await client.post("/api/chat", json={"model": "fake.gguf", "stream": False,
                                                     "messages": [{"role": "user", "content": "hi"}]})
    assert reply.status_code == 200, reply.text
    assert len(resolved) == 1


async def test_a_session_turn_resolves_its_model_and_reads_its_session_once(runtime):
    async with client_for(runtime) as client:
        sid = (await client.post("/v1/sessions", json={"profile_name": "general"})).json()["session_id"]
        resolved = count_calls(runtime.models, "request")
        read = count_calls(runtime.sessions, "get")
        reply = await client.post(f"/v1/sessions/{sid}/chat", json={"message": "hi"})
    assert reply.status_code == 200, reply.text
    assert (len(resolved), len(read)) == (1, 1)


async def test_a_model_unloaded_since_the_caller_resolved_it_is_resolved_again(runtime):
    """A turn keeps its resolved model across steps, and a tool may run past the model's keep-alive (or another
    model may need its room): a model no longer loaded is never generated from, its backend being closed."""
    from qwend.chat.service import complete, chat
    from qwend.engine.manager import LoadedModel
    from qwend.engine.scheduler import Scheduler
    from qwend.types import ChatRequest, Message

    current = runtime.models.loaded["fake.gguf"]
    closed = FakeBackend("from a closed model")
    stale = LoadedModel(current.model, closed, Scheduler(closed, queue_size=4))
    assert not runtime.models.holds(stale) and runtime.models.holds(current)
    resolved = count_calls(runtime.models, "request")
    answer = await complete(chat(runtime, ChatRequest((Message("user", "hi"),)), loaded=stale))
    assert answer.text == "Hello there." and closed.generated == []
    assert len(resolved) == 1
    answer = await complete(chat(runtime, ChatRequest((Message("user", "hi"),)), loaded=current))
    assert answer.text == "Hello there." and len(resolved) == 1  # the one still loaded is used as it is


async def test_a_profile_turn_offers_no_tool_that_cannot_work_here(runtime):
    """The mirror profile lists `search_linear_issues`; with no Linear key it is left out of the prompt."""
    backend = runtime.models.loaded["fake.gguf"].backend
    async with client_for(runtime) as client:
        reply = await client.post("/v1/chat", json={"message": "What time is it?", "profile_name": "mirror"})
    assert reply.status_code == 200, reply.text
    assert "get_current_datetime" in backend.prompts[0] and "search_linear_issues" not in backend.prompts[0]

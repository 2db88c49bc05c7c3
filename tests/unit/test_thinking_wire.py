"""Every dialect's reasoning controls reach the pipeline as one Thinking, and work end to end on a scripted model
that thinks: the switch reaches the template, a budget closes the reasoning, and it comes back in each
protocol's own field."""

from __future__ import annotations

from dataclasses import replace

import pytest

from qwend.api.wire import anthropic, jsonrpc, lmstudio, ollama, openai, responses
from qwend.api.wire.thinking import thinking_of
from qwend.errors import InvalidRequest
from qwend.types import Thinking
from tests.conftest import client_for, fake_runtime
from tests.fakes import FakeBackend

USER = [{"role": "user", "content": "Capital of France?"}]


def openai_thinking(**fields) -> Thinking:
    return openai.to_chat_request(openai.ChatCompletionRequest(messages=USER, **fields)).thinking


def test_openai_fields():
    assert openai_thinking() == Thinking()
    assert openai_thinking(reasoning_effort="none") == Thinking(False)
    assert openai_thinking(reasoning_effort="low") == Thinking(True, 1024)
    assert openai_thinking(reasoning_effort="high") == Thinking(True, None)
    assert openai_thinking(chat_template_kwargs={"enable_thinking": False, "other": "ignored"}) == Thinking(False)
    assert openai_thinking(enable_thinking=True, thinking_budget=50) == Thinking(True, 50)
    # the switch wins over an effort; a budget over the effort's
    assert openai_thinking(reasoning_effort="none", chat_template_kwargs={"enable_thinking": True}) == Thinking(True)
    assert openai_thinking(reasoning_effort="low", thinking_budget=10) == Thinking(True, 10)
    with pytest.raises(InvalidRequest) as refused:
        openai_thinking(reasoning_effort="maximal")
    assert refused.value.param == "reasoning_effort"
    with pytest.raises(InvalidRequest):
        openai_thinking(chat_template_kwargs={"enable_thinking": "yes"})


def test_the_other_dialects():
    def messages(**fields):
        return anthropic.to_chat_request(anthropic.MessagesRequest(model="m", max_tokens=100, messages=USER,
                                                                   **fields)).thinking

    assert messages(thinking={"type": "enabled", "budget_tokens": 2048}) == Thinking(True, 2048)
    assert messages(thinking={"type": "disabled"}) == Thinking(False)
    assert messages() == Thinking()
    with pytest.raises(InvalidRequest):
        messages(thinking={"type": "enabled", "budget_tokens": -1})

    assert ollama.chat_request(ollama.ChatBody(messages=USER, think=False), "m").thinking == Thinking(False)
    assert ollama.chat_request(ollama.ChatBody(messages=USER, think="low"), "m").thinking == Thinking(True, 1024)
    assert ollama.generate_request(ollama.GenerateBody(prompt="hi", think=True), "m").thinking == Thinking(True)

    body = responses.ResponsesBody(input="hi", reasoning={"effort": "minimal"})
    assert responses.to_response_request(body).thinking == Thinking(True, 256)
    chat = lmstudio.ChatBody(model="m", messages=USER, reasoning="off")
    assert lmstudio.to_chat_request(chat, default_model=None, images_allowed=True).thinking == Thinking(False)
    params = jsonrpc.GenerateParams(message="hi", enable_thinking=True, thinking_budget=64)
    assert (params.enable_thinking, params.thinking_budget) == (True, 64)
    assert thinking_of(effort="none", budget=5) == Thinking(False, 5)  # switched off: the budget is moot


THOUGHT = "<think>\nthe capital of France is Paris, surely, I think so\n</think>\n\nParis."


def thinking_runtime(tmp_path, *replies):
    backend = FakeBackend(replies=replies)
    backend.info = replace(backend.info, thinking=True)
    return backend, fake_runtime(tmp_path, backend)


async def test_a_budget_closes_the_reasoning_and_the_answer_follows_on_the_openai_route(tmp_path):
    backend, runtime = thinking_runtime(tmp_path, THOUGHT, "Paris.")
    async with client_for(runtime) as http:
        reply = await http.post("/v1/chat/completions", json={"messages": USER, "thinking_budget": 3})
    message = reply.json()["choices"][0]["message"]
    assert message["reasoning_content"].startswith("\nthe capital of")
    assert "limited time" in message["reasoning_content"] and "surely" not in message["reasoning_content"]
    assert message["content"] == "Paris."
    assert backend.generated[1].text.endswith("directly now.\n</think>\n\n")  # the answer, after the closed block


async def test_switched_off_the_template_closes_the_block_in_every_dialect(tmp_path):
    backend, runtime = thinking_runtime(tmp_path, "Paris.")
    asked = [("/v1/chat/completions", {"messages": USER, "reasoning_effort": "none"}),
             ("/v1/chat/completions", {"messages": USER, "chat_template_kwargs": {"enable_thinking": False}}),
             ("/api/chat", {"messages": USER, "think": False, "stream": False}),
             ("/v1/messages", {"model": "fake.gguf", "max_tokens": 50, "messages": USER,
                               "thinking": {"type": "disabled"}}),
             ("/v1/responses", {"input": "Capital of France?", "reasoning": {"effort": "none"}})]
    async with client_for(runtime) as http:
        for path, body in asked:
            backend.prompts.clear()
            reply = await http.post(path, json=body)
            assert reply.status_code == 200, (path, reply.text)
            assert backend.prompts and backend.prompts[-1].endswith("<assistant><think>\n\n</think>\n\n"), path


async def test_reasoning_comes_back_in_each_protocols_field(tmp_path):
    backend, runtime = thinking_runtime(tmp_path, THOUGHT)
    async with client_for(runtime) as http:
        claude = await http.post("/v1/messages", json={"model": "fake.gguf", "max_tokens": 100, "messages": USER,
                                                       "thinking": {"type": "enabled", "budget_tokens": 1024}})
        chat = await http.post("/api/chat", json={"messages": USER, "think": True, "stream": False})
    blocks = claude.json()["content"]
    assert blocks[0]["type"] == "thinking" and "Paris" in blocks[0]["thinking"]
    assert blocks[1] == {"type": "text", "text": "Paris."}
    assert "surely" in chat.json()["message"]["thinking"] and chat.json()["message"]["content"] == "Paris."

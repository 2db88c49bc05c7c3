"""Qwen3's reasoning on llama.cpp, with the tiny random Qwen3 of tests/tiny_qwen3.py: the real Qwen3 tokenizer and
chat template, random weights. What the template says is read from it; the switch reaches it; a budget closes
the reasoning and the answer goes on from exactly what a fresh read of the same text gives; an answer under a
grammar (JSON, tool calls) comes after free reasoning; and every protocol carries the reasoning in its field.

The random model never opens a <think> block by itself, so the pipeline tests use the twin whose template opens
it (as Qwen3.5's and Qwen3-Thinking-2507's do): every answer then starts in reasoning."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import httpx
import pytest

from qwend.chat.decide import Deferred
from qwend.chat.thinking import EARLY_ANSWER, reasoning_first
from qwend.engine.base import Piece
from qwend.engine.llama_cpp import LlamaCppBackend
from qwend.models.store import LocalModel
from qwend.runtime import Runtime
from qwend.settings import Settings
from qwend.types import Message, SamplingParams, ToolCall
from tests.tiny_qwen3 import MODEL_FILE, OPENED_FILE

pytest.importorskip("torch")

THINK_OPEN, THINK_CLOSE = 151667, 151668  # single tokens in Qwen3's vocabulary
ASKED = [Message("user", "What is the capital of France?")]
WEATHER = {"type": "function", "function": {"name": "get_weather", "parameters": {
    "type": "object", "properties": {"city": {"type": "string", "maxLength": 12}}, "required": ["city"]}}}


def load(folder: Path, name: str) -> LlamaCppBackend:
    return LlamaCppBackend.load(LocalModel(name, folder / name), Settings(_env_file=None, context_length=1024,
                                                                        threads=2, kv_disk_mb=0))


@pytest.fixture(scope="module")
def backend(tiny_qwen3_dir: Path):
    backend = load(tiny_qwen3_dir, MODEL_FILE)
    yield backend
    backend.close()


@pytest.fixture(scope="module")
def server(tiny_qwen3_dir: Path, tmp_path_factory):
    from qwend.cli.local_server import serve_in_thread

    settings = Settings(_env_file=None, data_dir=tmp_path_factory.mktemp("data"), models_dir=tiny_qwen3_dir,
                        model=OPENED_FILE, context_length=1024, threads=2, kv_disk_mb=0)
    runtime = Runtime.create(settings)
    try:
        with serve_in_thread(runtime) as base:
            yield base
    finally:
        runtime.models.close()


def test_the_template_says_the_model_thinks_and_the_switch_reaches_it(backend):
    assert backend.info.thinking and backend.template.call_form == "json"
    default, on, off = (backend.prompt(ASKED, thinking=t) for t in (None, True, False))
    assert default.text.endswith("<|im_start|>assistant\n") and on.tokens == default.tokens
    assert off.text.endswith("<|im_start|>assistant\n<think>\n\n</think>\n\n")
    assert list(off.tokens[-4:]) == [THINK_OPEN, 271, THINK_CLOSE, 271]  # "\n\n" is 271


def test_reasoning_stays_in_history_only_where_the_template_keeps_it(backend):
    earlier = [*ASKED, Message("assistant", "Paris.", reasoning="the capital is Paris"), Message("user", "And Italy?")]
    assert "the capital is Paris" not in backend.prompt(earlier).text  # a past turn's reasoning is dropped
    call = ToolCall("c1", "get_weather", '{"city": "Paris"}')
    chain = [*ASKED, Message("assistant", "", tool_calls=(call,), reasoning="I should look it up"),
             Message("tool", "18 C", tool_call_id="c1")]
    assert "<think>\nI should look it up\n</think>" in backend.prompt(chain).text  # the turn still going on


def test_an_answer_after_a_budget_is_what_a_fresh_read_of_the_same_text_gives(tiny_qwen3_dir):
    opened, fresh = load(tiny_qwen3_dir, OPENED_FILE), load(tiny_qwen3_dir, OPENED_FILE)
    try:
        prompt = opened.prompt(ASKED)
        assert prompt.text.endswith("<think>\n")
        greedy = SamplingParams(temperature=0, max_tokens=30)

        async def collect(job):
            return [item async for item in job]

        pieces = [i for i in asyncio.run(collect(reasoning_first(opened, prompt, greedy, None, Deferred(), 6)()))
                  if isinstance(i, Piece)]
        text = "".join(p.text for p in pieces)
        assert EARLY_ANSWER in text and sum(p.tokens for p in pieces) <= 30
        said, answer = text.split(EARLY_ANSWER)
        closing = next(i for i, p in enumerate(pieces) if p.text == EARLY_ANSWER)
        assert sum(p.tokens for p in pieces[:closing]) == 6  # the budget, then the closing words
        # the same text read afresh by another instance, special tokens and all, answers the same, token for token
        reread = fresh.text_prompt(prompt.text + said + EARLY_ANSWER)
        again = [i for i in asyncio.run(collect(fresh.generate(reread, SamplingParams(temperature=0, max_tokens=24))))
                 if isinstance(i, Piece)]
        assert answer and "".join(p.text for p in again).startswith(answer[:40])
    finally:
        opened.close()
        fresh.close()


def chat(server: str, **body) -> dict:
    body = {"model": OPENED_FILE, "messages": [{"role": "user", "content": "What is the capital of France?"}],
            "temperature": 0, "max_tokens": 60} | body
    reply = httpx.post(f"{server}/v1/chat/completions", json=body, timeout=120)
    assert reply.status_code == 200, reply.text
    return reply.json()


def test_a_budget_bounds_the_reasoning_over_http(server):
    answer = chat(server, thinking_budget=8)
    message = answer["choices"][0]["message"]
    assert "limited time" in message["reasoning_content"]
    unbounded = chat(server)["choices"][0]["message"]
    assert "limited time" not in (unbounded.get("reasoning_content") or "")
    assert answer["usage"]["completion_tokens"] <= 60


def test_switched_off_there_is_no_reasoning(server):
    for body in ({"reasoning_effort": "none"}, {"chat_template_kwargs": {"enable_thinking": False}}):
        message = chat(server, **body)["choices"][0]["message"]
        assert not message.get("reasoning_content") and message["content"]


def test_json_and_tool_calls_come_after_free_reasoning(server):
    schema = {"type": "object", "properties": {"city": {"type": "string", "maxLength": 12}}, "required": ["city"]}
    answer = chat(server, thinking_budget=6, max_tokens=120,
                  response_format={"type": "json_schema", "json_schema": {"name": "c", "schema": schema}})
    message = answer["choices"][0]["message"]
    assert "limited time" in message["reasoning_content"]
    assert isinstance(json.loads(message["content"])["city"], str)
    called = chat(server, thinking_budget=6, max_tokens=120, tools=[WEATHER], tool_choice="required")
    message = called["choices"][0]["message"]
    assert message["reasoning_content"] and called["choices"][0]["finish_reason"] == "tool_calls"
    assert isinstance(json.loads(message["tool_calls"][0]["function"]["arguments"])["city"], str)


def test_each_protocol_carries_the_reasoning_in_its_own_field(server):
    with httpx.stream("POST", f"{server}/v1/chat/completions", timeout=120, json={
            "model": OPENED_FILE, "messages": [{"role": "user", "content": "Hi"}], "temperature": 0,
            "max_tokens": 30, "stream": True, "thinking_budget": 4}) as reply:
        chunks = [json.loads(line[6:]) for line in reply.iter_lines() if line.startswith("data: {")]
    streamed = "".join(c["choices"][0]["delta"].get("reasoning_content") or "" for c in chunks if c["choices"])
    assert "limited time" in streamed
    claude = httpx.post(f"{server}/v1/messages", timeout=120, json={
        "model": OPENED_FILE, "max_tokens": 40, "messages": [{"role": "user", "content": "Hi"}], "temperature": 0,
        "thinking": {"type": "enabled", "budget_tokens": 4}}).json()
    assert claude["content"][0]["type"] == "thinking" and "limited time" in claude["content"][0]["thinking"]
    ollama = httpx.post(f"{server}/api/chat", timeout=120, json={
        "model": OPENED_FILE, "messages": [{"role": "user", "content": "Hi"}], "stream": False, "think": "low",
        "options": {"temperature": 0, "num_predict": 30}}).json()
    assert ollama["message"]["thinking"]
    off = httpx.post(f"{server}/api/chat", timeout=120, json={
        "model": OPENED_FILE, "messages": [{"role": "user", "content": "Hi"}], "stream": False, "think": False,
        "options": {"temperature": 0, "num_predict": 10}}).json()
    assert "thinking" not in off["message"]

"""Generating under a grammar on llama.cpp, as the chat pipeline asks (chat/decide.py): a whole answer under the
call grammar, and a grammar over the answer's first token only, the rest generated free."""

from __future__ import annotations

import asyncio
import json

import pytest

from qwend.chat.parser import OutputParser
from qwend.engine.base import Finished, Piece
from qwend.engine.grammar import TEXT_ONLY_START
from qwend.engine.llama_cpp import LlamaCppBackend
from qwend.models.store import LocalModel
from qwend.settings import Settings
from qwend.types import Message, OutputConstraint, SamplingParams, ToolCallDelta, ToolCallEnd, ToolSpec

pytestmark = pytest.mark.real_model

WEATHER = ToolSpec("get_weather", "Get the current weather in a city", {
    "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]})
ASKED = [Message("user", "What is the weather in Paris?")]


@pytest.fixture(scope="module")
def backend(model_path):
    settings = Settings(_env_file=None, context_length=2048, threads=2, kv_disk_mb=0)
    backend = LlamaCppBackend.load(LocalModel("default", model_path), settings)
    yield backend
    backend.close()


def answer(backend, constraint: OutputConstraint | None, max_tokens: int = 40) -> tuple[list[Piece], str]:
    async def collect():
        prompt = backend.prompt(ASKED, (WEATHER,))
        return [item async for item in backend.generate(prompt, SamplingParams(temperature=0, max_tokens=max_tokens),
                                                        constraint)]

    items = asyncio.run(collect())
    return [i for i in items if isinstance(i, Piece)], next(i.reason for i in items if isinstance(i, Finished))


def test_an_answer_is_generated_under_the_grammar_it_is_given(backend):
    calls = backend.grammar_for(OutputConstraint(tools=(WEATHER,), calls="required", parallel=False))
    pieces, reason = answer(backend, OutputConstraint(grammar=calls))
    assert "".join(p.text for p in pieces).startswith('<tool_call>\n{"name": "get_weather"') and reason == "stop"


def test_a_grammar_over_the_first_token_only_lets_the_rest_run_free(backend):
    free, _ = answer(backend, None, max_tokens=12)
    assert "".join(p.text for p in free).lstrip()[0] in "<{`["  # the model reaches for a call
    pieces, reason = answer(backend, OutputConstraint(grammar=TEXT_ONLY_START, grammar_tokens=1), max_tokens=12)
    text = "".join(p.text for p in pieces)
    assert text[0] not in "<{`[ \t\n" and sum(p.tokens for p in pieces) == 12 and reason == "length"


TIMER = ToolSpec("set_timer", "Start a timer", {
    "type": "object", "properties": {"minutes": {"type": "integer"}, "label": {"type": "string"}},
    "required": ["minutes"]})


@pytest.mark.parametrize("asked, tool, arguments", [
    ("What is the weather in Paris?", WEATHER, {"city": "Paris"}),
    ("Set a timer for 5 minutes.", TIMER, {"minutes": 5}),
])
def test_calls_in_qwen3_coders_form_under_its_grammar(backend, monkeypatch, asked, tool, arguments):
    # the default model's template teaches JSON calls; one that teaches Qwen3-Coder's tags gets this grammar
    monkeypatch.setattr(backend.template, "call_form", "xml")
    rules = backend.grammar_for(OutputConstraint(tools=(WEATHER, TIMER), calls="required", parallel=False))

    async def collect():
        prompt = backend.prompt([Message("user", asked)], (WEATHER, TIMER))
        return [item async for item in backend.generate(prompt, SamplingParams(temperature=0, max_tokens=80),
                                                        OutputConstraint(grammar=rules))]

    pieces = [item for item in asyncio.run(collect()) if isinstance(item, Piece)]
    text = "".join(p.text for p in pieces)
    assert text.startswith(f"<tool_call>\n<function={tool.name}>\n<parameter="), text
    parser = OutputParser((WEATHER, TIMER), trusted=True)
    events = [e for p in pieces for e in parser.feed(p.text)] + parser.finish()
    calls = [e.call for e in events if isinstance(e, ToolCallEnd)]
    streamed = "".join(e.arguments for e in events if isinstance(e, ToolCallDelta))
    # (the default model was taught JSON calls: in this form it adds optional parameters and may wrap a value
    # in tags of its own, "<value>Paris</value>"; the grammar holds the form and each value's type)
    assert len(calls) == 1 and calls[0].name == tool.name, text
    made = json.loads(calls[0].arguments)
    assert all(str(value) in str(made[key]) for key, value in arguments.items()), text
    assert all(isinstance(made[key], type(value)) for key, value in arguments.items())
    assert json.loads(streamed) == made and parser.outcomes["parsed"] == 1

"""Reasoning first (chat/thinking.py): bounded by a budget, free of the answer's grammar, and the answer generated
after it from the prompt continued by it. A scripted engine stands for a model that thinks."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field, replace

import pytest

from qwend.chat.decide import Deferred
from qwend.chat.parser import OutputParser
from qwend.chat.thinking import AFTER_CLOSE, EARLY_ANSWER, reasoning_first
from qwend.engine.base import Finished, ModelInfo, Piece, Prefill, Prompt
from qwend.types import OutputConstraint, Reasoning, SamplingParams, Token, ToolCallEnd
from tests.unit.test_decide import CALL, GREEDY, OPTIONAL, ScriptedEngine, texts

PROMPT = Prompt(tuple(range(10)), "<|im_start|>assistant\n")
OPENED = Prompt(tuple(range(11)), "<|im_start|>assistant\n<think>\n")  # a template that opens the block itself
JSON = OutputConstraint(json_schema={}, grammar="root ::= object")
THOUGHT = ["<think>", "\n", "Paris", " is", " the", " capital", ".", "\n", "</think>"]


@dataclass
class ThinkingEngine(ScriptedEngine):
    info: ModelInfo = field(default_factory=lambda: ModelInfo(512, 512, 256, 1000, 1, True, grammar=True,
                                                              logprobs=True, thinking=True))

    def continued(self, prompt: Prompt, said: str) -> Prompt:
        return replace(prompt, tokens=prompt.tokens + tuple(range(100, 100 + len(said))), text=prompt.text + said,
                       pin=False)


def run(engine, prompt=PROMPT, constraint=None, budget=None, params=GREEDY, deferred=Deferred()):
    async def collect():
        return [item async for item in reasoning_first(engine, prompt, params, constraint, deferred, budget)()]

    return asyncio.run(collect())


def parsed(items, prompt=PROMPT, tools=()) -> list:
    parser = OutputParser(tools, trusted=bool(tools), in_reasoning=prompt.text.rstrip().endswith("<think>"))
    events = [e for item in items if isinstance(item, Piece) for e in parser.feed(item.text)]
    return events + parser.finish()


def test_an_unconstrained_answer_whose_reasoning_ends_by_itself_is_one_generation():
    engine = ThinkingEngine([[*THOUGHT, "\n\n", "Paris", "."]])
    items = run(engine, budget=100)
    assert len(engine.asked) == 1 and items[0] == Prefill(1) and items[-1] == Finished("stop")
    events = parsed(items)
    assert "".join(e.text for e in events if isinstance(e, Reasoning)).strip() == "Paris is the capital."
    assert "".join(e.text for e in events if isinstance(e, Token)).strip() == "Paris."


def test_at_the_budget_the_reasoning_is_closed_and_the_answer_generated_after_it():
    engine = ThinkingEngine([["<think>", *["hmm"] * 50], ["The", " answer", "."]])
    items = run(engine, budget=5, params=replace(GREEDY, max_tokens=40))
    first, answer = engine.asked
    assert first.closed and first.constraint is None
    said = "<think>" + "hmm" * 5 + EARLY_ANSWER
    assert answer.prompt.text == PROMPT.text + said  # reasoning and the closing words, then the answer
    assert answer.params.max_tokens == 40 - 7  # what the reasoning took (5, its opening, one read past) is spent
    assert [i for i in items if isinstance(i, Prefill)] == [Prefill(1)]
    events = parsed(items)
    reasoning = "".join(e.text for e in events if isinstance(e, Reasoning))
    assert reasoning.startswith("hmm" * 5) and "limited time" in reasoning
    assert "".join(e.text for e in events if isinstance(e, Token)) == "The answer."


def test_a_budget_of_nothing_closes_the_block_a_template_opened_at_once():
    engine = ThinkingEngine([["hmm"] * 10, ["Paris"]])
    items = run(engine, prompt=OPENED, budget=0)
    assert engine.asked[1].prompt.text == OPENED.text + EARLY_ANSWER
    events = parsed(items, OPENED)
    assert "hmm" not in "".join(e.text for e in events if isinstance(e, Reasoning))
    assert [e.text for e in events if isinstance(e, Token)] == ["Paris"]


def test_a_constrained_answer_is_generated_under_its_grammar_after_the_reasoning():
    engine = ThinkingEngine([[*THOUGHT, "\n\n", "{"], ['{"city": "Paris"}']])
    items = run(engine, constraint=JSON)
    first, answer = engine.asked
    assert first.constraint is None and answer.constraint == JSON
    assert answer.prompt.text == PROMPT.text + "".join(THOUGHT) + AFTER_CLOSE
    events = parsed(items)
    assert "".join(e.text for e in events if isinstance(e, Token)) == '{"city": "Paris"}'


def test_an_answer_that_does_not_reason_is_generated_as_without_this_step():
    engine = ThinkingEngine([["{", '"a"'], ['{"a": 1}']])
    items = run(engine, constraint=JSON, params=replace(GREEDY, max_tokens=30))
    assert engine.asked[1].prompt == PROMPT and engine.asked[1].params.max_tokens == 30
    assert texts(items) == '{"a": 1}'
    unconstrained = ThinkingEngine([["Hello", " there"]])
    assert texts(run(unconstrained, budget=3)) == "Hello there" and len(unconstrained.asked) == 1


def test_tool_calls_are_decided_after_the_reasoning_from_the_continued_calls_prompt():
    calls_prompt = Prompt(tuple(range(12)), "calls prompt\n")
    engine = ThinkingEngine([[*THOUGHT, "\n\n", "<tool_call>"], CALL, CALL])
    deferred = Deferred(calls=lambda: calls_prompt, said="weather in Paris")
    items = run(engine, constraint=OPTIONAL, deferred=deferred)
    reasoning, deciding, calling = engine.asked
    said = "".join(THOUGHT) + AFTER_CLOSE
    assert deciding.prompt.text == PROMPT.text + said and deciding.constraint is None
    assert calling.prompt.text == calls_prompt.text + said and calling.constraint == OPTIONAL
    events = parsed(items, tools=OPTIONAL.tools)
    assert [e.call.name for e in events if isinstance(e, ToolCallEnd)] == ["get_weather"]
    assert "Paris is the capital." in "".join(e.text for e in events if isinstance(e, Reasoning))


def test_reasoning_that_runs_to_max_tokens_ends_the_answer_there():
    engine = ThinkingEngine([["<think>", *["hmm"] * 50]])
    items = run(engine, constraint=JSON, params=replace(GREEDY, max_tokens=8))
    assert items[-1] == Finished("length") and len(engine.asked) == 1


@pytest.mark.parametrize("budget", [None, 4])
def test_closing_the_job_mid_reasoning_closes_the_generation(budget):
    engine = ThinkingEngine([["<think>", *["hmm"] * 50]])

    async def first_pieces():
        job = reasoning_first(engine, PROMPT, GREEDY, JSON, Deferred(), budget)()
        async for item in job:
            if isinstance(item, Piece) and item.text == "hmm":
                break
        await job.aclose()

    asyncio.run(first_pieces())
    assert engine.asked[0].closed


def test_switched_off_a_block_the_template_opens_whatever_it_is_told_is_closed_empty():
    from qwend.engine.base import TemplatedPrompts
    from qwend.engine.specials import ControlTexts
    from qwend.engine.template import ChatTemplate
    from qwend.types import Message

    class AlwaysThinks(TemplatedPrompts):  # as Qwen3-Thinking-2507's template: no switch, the block always opened
        template = ChatTemplate("{% for m in messages %}{{ m['content'] }}{% endfor %}{{ '<|im_start|>assistant\\n"
                                "<think>\\n' }}")
        controls = ControlTexts(())
        info = ModelInfo(512, 512, 256, 1000, 1, True, thinking=True)

        def tokenize(self, text, special=True, bos=True):
            return [ord(c) for c in text]

    backend = AlwaysThinks()
    assert backend.template.thinks
    assert backend.prompt([Message("user", "hi")]).text.endswith("assistant\n<think>\n")
    off = backend.prompt([Message("user", "hi")], thinking=False)
    assert off.text.endswith("assistant\n<think>\n\n</think>\n\n") and off.thinking is False
    continued = backend.continued(off, "Hello")
    assert continued.text == off.text + "Hello" and continued.tokens[-5:] == tuple(map(ord, "Hello"))

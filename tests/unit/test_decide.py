"""Calls or text, decided above the engine (chat/decide.py): a scripted grammar engine records what it was asked
to generate under, and answers with the pieces scripted for each generation."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from unittest.mock import AsyncMock, patch

from qwend.chat.decide import (
    MAX_HELD_TOKENS, MAX_NAME_TOKENS, TEXT_AGAIN, TEXT_SAMPLED, Deferred, decide, generation,
)
from qwend.engine.base import Finished, Generated, ModelInfo, Piece, Prefill, Prompt
from qwend.engine.grammar import TEXT_ONLY_START
from qwend.types import OutputConstraint, SamplingParams, TokenLogprob, ToolSpec

WEATHER = ToolSpec("get_weather")
OPTIONAL = OutputConstraint(tools=(WEATHER,), calls="optional", grammar="root ::= calls")
PROMPT = Prompt(tuple(range(10)), "the prompt", pin=True)
CALLS_PROMPT = Prompt(tuple(range(12)), "the prompt, one call per item")
CALL = ["<tool_call>", "\n", '{"', "name", '":', ' "', "get", "_weather", '",', ' "arguments": {}}', "\n</tool_call>"]


@dataclass
class Asked:
    prompt: Prompt
    params: SamplingParams
    constraint: OutputConstraint | None
    closed: bool = False


@dataclass
class ScriptedEngine:
    """Each generation answers with the next script: its pieces (one token each), then Finished("stop")."""

    scripts: list[list[str]]
    asked: list[Asked] = field(default_factory=list)
    info: ModelInfo = field(default_factory=lambda: ModelInfo(512, 512, 256, 1000, 1, True, grammar=True, logprobs=True))

    def grammar_for(self, constraint: OutputConstraint) -> str:
        return f"calls, the first to {constraint.first_call}"

    async def generate(self, prompt: Prompt, params: SamplingParams,
                       constraint: OutputConstraint | None = None) -> AsyncIterator[Generated]:
        asked = Asked(prompt, params, constraint)
        self.asked.append(asked)
        script = self.scripts[len(self.asked) - 1]
        try:
            yield Prefill(len(self.asked))
            for count, text in enumerate(script, 1):
                if params.max_tokens is not None and count > params.max_tokens:
                    yield Finished("length")
                    return
                yield Piece(text, logprob=TokenLogprob(text, -float(count), ()))
            yield Finished("stop")
        finally:
            asked.closed = True


GREEDY = SamplingParams(temperature=0.0)


def run(engine: ScriptedEngine, constraint=OPTIONAL, params=GREEDY, calls_prompt=lambda: CALLS_PROMPT, judge=None,
        asked=""):
    async def collect():
        deferred = Deferred(calls=calls_prompt, judge=judge, said=asked, asked=asked)
        return [item async for item in generation(engine, PROMPT, params, constraint, deferred)()]

    return asyncio.run(collect())


def texts(items) -> str:
    return "".join(item.text for item in items if isinstance(item, Piece))


def test_a_text_answer_is_released_as_it_was_generated_with_its_logprobs():
    engine = ScriptedEngine([["Hello", " there", "!"]])
    items = run(engine)
    assert items[0] == Prefill(1) and items[-1] == Finished("stop")
    assert [(p.text, p.logprob.logprob) for p in items[1:-1]] == [("Hello", -1.0), (" there", -2.0), ("!", -3.0)]
    assert len(engine.asked) == 1 and engine.asked[0].constraint is None  # free text: no grammar
    assert engine.asked[0].prompt == PROMPT


def test_a_decided_call_is_generated_again_from_the_calls_prompt_under_the_grammar_in_the_same_job():
    engine = ScriptedEngine([CALL, CALL])
    items = run(engine)
    first, again = engine.asked
    assert first.closed and first.constraint is None
    assert again.prompt == CALLS_PROMPT and again.constraint == OPTIONAL
    assert [item for item in items if isinstance(item, Prefill)] == [Prefill(1)]  # the prompt's reuse, once
    assert texts(items) == "".join(CALL) and items[-1] == Finished("stop")


def test_calls_come_from_the_prompt_itself_where_the_calls_prompt_does_not_fit():
    engine = ScriptedEngine([CALL, CALL])
    run(engine, calls_prompt=lambda: None)
    assert engine.asked[1].prompt.tokens == PROMPT.tokens and not engine.asked[1].prompt.pin
    run(engine := ScriptedEngine([CALL, CALL]), calls_prompt=None)
    assert engine.asked[1].prompt.tokens == PROMPT.tokens


def test_a_call_where_none_may_be_made_is_generated_again_as_text():
    for constraint, script in [(OutputConstraint(tools=(WEATHER,), calls="none"), ["{"]),
                               (OPTIONAL, ['{"name": "get_time", "arguments": {}}'])]:  # a tool not offered
        engine = ScriptedEngine([script, ["Sunny", "."]])
        items = run(engine, constraint)
        again = engine.asked[1]
        assert again.constraint == TEXT_AGAIN and TEXT_AGAIN.grammar == TEXT_ONLY_START
        assert again.constraint.grammar_tokens == 1
        assert again.prompt.tokens == PROMPT.tokens and not again.prompt.pin  # pinned once, by the first
        assert texts(items) == "Sunny."


def test_an_answer_that_ends_still_ambiguous_is_text():
    engine = ScriptedEngine([["`", "``"]])
    assert texts(run(engine)) == "```" and len(engine.asked) == 1


def test_held_pieces_are_counted_in_tokens():
    assert decide(" " * 5, MAX_HELD_TOKENS - 1, OPTIONAL) is None
    assert decide(" " * 6, MAX_HELD_TOKENS, OPTIONAL) == "text"
    assert decide('<tool_call>\n{"na', MAX_NAME_TOKENS - 1, OPTIONAL) is None
    assert decide('<tool_call>\n{"na', MAX_NAME_TOKENS, OPTIONAL) == "calls"
    assert decide('{"name": "get_weather"', 3, OPTIONAL) == "calls"
    assert decide("Hello", 1, OPTIONAL) == "text"


def test_max_tokens_cuts_the_answer_though_the_decision_may_look_further():
    engine = ScriptedEngine([[" "] * 3 + ["a", "b", "c", "d"]])
    items = run(engine, params=SamplingParams(temperature=0.0, max_tokens=4))
    assert engine.asked[0].params.max_tokens == MAX_NAME_TOKENS
    assert sum(item.tokens for item in items if isinstance(item, Piece)) == 4
    assert items[-1] == Finished("length") and engine.asked[0].closed
    engine = ScriptedEngine([CALL, CALL])  # a call decided past max_tokens is generated to max_tokens
    items = run(engine, params=SamplingParams(temperature=0.0, max_tokens=4))
    assert engine.asked[1].params.max_tokens == 4 and items[-1] == Finished("length")


def test_closing_the_job_closes_the_generation_at_once():
    engine = ScriptedEngine([["Hello"] * 50])

    async def first_pieces():
        job = generation(engine, PROMPT, GREEDY, OPTIONAL)()
        got = [await anext(job) for _ in range(3)]
        await job.aclose()
        return got

    assert len(asyncio.run(first_pieces())) == 3 and engine.asked[0].closed


def test_other_constraints_go_to_the_engine_as_they_are():
    for constraint in (None, OutputConstraint(tools=(WEATHER,), calls="required", grammar="g"),
                       OutputConstraint(json_schema={}, grammar="g")):
        engine = ScriptedEngine([["x"]])
        run(engine, constraint)
        assert len(engine.asked) == 1 and engine.asked[0].constraint == constraint
    hinted = ScriptedEngine([["x"]], info=ModelInfo(512, 512, 256, 1000, 1, True, grammar=False))
    run(hinted, OPTIONAL)  # an engine that takes the constraint as a hint (an upstream's tool_choice)
    assert hinted.asked[0].constraint == OPTIONAL


def test_the_decision_is_greedy_and_a_sampled_text_answer_is_generated_again_at_its_temperature():
    engine = ScriptedEngine([["Hello", " there", "!"], ["Hi", "!"]])
    items = run(engine, params=SamplingParams(temperature=0.8))
    probe, again = engine.asked
    assert probe.params.temperature == 0.0 and probe.closed
    assert again.params.temperature == 0.8 and again.constraint == TEXT_SAMPLED
    assert texts(items) == "Hi!" and [type(i) for i in items].count(Prefill) == 1


def test_a_call_is_made_only_where_the_judge_says_a_tool_fits():
    judged = (Prompt((1,), "fits?"), Prompt((2,), "nothing fits?"))
    for verdict, constraint in ((False, TEXT_AGAIN), (True, OPTIONAL)):
        engine = ScriptedEngine([CALL, CALL])

        async def judge(_backend, prompts, verdict=verdict):
            assert prompts == judged
            return 1.0 if verdict else -1.0

        with patch("qwend.chat.decide.fit", judge):
            run(engine, judge=lambda: judged, params=SamplingParams(temperature=0.8))
        assert engine.asked[1].constraint == constraint
        if verdict:  # calls are generated greedily whatever the answer's temperature
            assert engine.asked[1].params.temperature == 0.0


def test_a_required_call_is_generated_greedily():
    engine = ScriptedEngine([CALL])
    items = run(engine, OutputConstraint(tools=(WEATHER,), calls="required", grammar="g"), SamplingParams())
    assert engine.asked[0].params.temperature == 0.0 and "get_weather" in texts(items)


def test_the_first_call_is_to_the_tool_the_model_started_to_call_in_its_own_form():
    calculate = ToolSpec("calculate")
    fenced = ["```", "json", "\n", '{"', "name", '":', ' "', "get", "_weather", '",']
    for calls in ("optional", "required"):
        constraint = OutputConstraint(tools=(calculate, WEATHER), calls=calls, grammar="any call")
        engine = ScriptedEngine([fenced, CALL])
        with patch("qwend.chat.decide.fit", AsyncMock(return_value=1.0)):
            items = run(engine, constraint, judge=lambda: ())
        assert engine.asked[1].constraint.grammar == "calls, the first to get_weather"
        assert texts(items) == "".join(CALL)  # the probe's own start is never handed on
    engine = ScriptedEngine([["Hello", " there", "!"], CALL])  # no tool named: any call
    run(engine, OutputConstraint(tools=(calculate, WEATHER), calls="required", grammar="any call"))
    assert engine.asked[1].constraint.grammar == "any call"


def test_a_text_start_is_a_call_where_the_judge_says_a_tool_fits():
    for verdict, constraint in ((True, OPTIONAL), (False, TEXT_SAMPLED)):
        engine = ScriptedEngine([["It", " is", " sunny", " there", ".", " Really", "."], CALL])

        async def run_text_start():
            deferred = Deferred(calls=lambda: CALLS_PROMPT, judge=lambda: ())
            return [item async for item in generation(engine, PROMPT, GREEDY, OPTIONAL, deferred)()]

        with patch("qwend.chat.decide.fit", AsyncMock(return_value=1.0 if verdict else -1.0)):
            asyncio.run(run_text_start())
        assert engine.asked[1].constraint == constraint


def test_a_doubtful_fit_is_a_call_only_where_its_arguments_come_from_the_conversation():
    weather = ToolSpec("get_weather", "", {"type": "object", "properties": {"city": {"type": "string"}},
                                           "required": ["city"]})
    constraint = OutputConstraint(tools=(weather,), calls="optional", grammar="calls")
    call = ["<tool_call>\n", '{"name": "get_weather", "arguments": {"city": "New York"}}', "\n</tool_call>"]
    for asked, made in (("What is 2 + 2?", False), ("Is it cold in New York?", True)):
        engine = ScriptedEngine([call, call, ["4", "."]])
        with patch("qwend.chat.decide.fit", AsyncMock(return_value=0.2)):  # doubtful: below CALL_MARGIN
            items = run(engine, constraint, judge=lambda: (), asked=asked)
        assert (texts(items) == "".join(call)) is made
        assert made or (engine.asked[2].constraint == TEXT_AGAIN and texts(items) == "4.")


def test_a_follow_up_with_a_doubtful_fit_is_a_call_where_it_takes_a_value_from_the_message():
    weather = ToolSpec("get_weather", "", {"type": "object", "properties": {"city": {"type": "string"}},
                                           "required": ["city"]})
    constraint = OutputConstraint(tools=(weather,), calls="optional", grammar="calls")
    call = ["<tool_call>\n", '{"name": "get_weather", "arguments": {"city": "Lyon"}}', "\n</tool_call>"]
    answer = ["It", " is", " sunny", " in", " Lyon", "."]  # answered from the old results, not called
    for follow_up, asked, made in ((True, "And in Lyon?", True), (True, "Thanks!", False),
                                   (False, "And in Lyon?", False)):
        engine = ScriptedEngine([answer, call, answer] if follow_up else [answer, answer])

        async def collect():
            deferred = Deferred(judge=lambda: (), said=asked, asked=asked, follow_up=follow_up)
            return [item async for item in generation(engine, PROMPT, GREEDY, constraint, deferred)()]

        with patch("qwend.chat.decide.fit", AsyncMock(return_value=0.0)):  # doubtful
            items = asyncio.run(collect())
        assert (texts(items) == "".join(call)) is made


def test_a_call_the_model_did_not_begin_or_that_is_cut_off_must_show_the_fit_or_is_text():
    weather = ToolSpec("get_weather", "", {"type": "object", "properties": {"city": {"type": "string"}},
                                           "required": ["city"]})
    constraint = OutputConstraint(tools=(weather,), calls="optional", grammar="calls")
    call = ["<tool_call>\n", '{"name": "get_weather", "arguments": {"city": "New York"}}', "\n</tool_call>"]
    answer = ["Here", " is", " how", " list", " comprehensions", " work", "."]
    engine = ScriptedEngine([answer, call, answer])  # a clear fit, but the model began text
    with patch("qwend.chat.decide.fit", AsyncMock(return_value=1.0)):
        items = run(engine, constraint, judge=lambda: (), asked="Explain list comprehensions, without tools.")
    assert texts(items) == "".join(answer) and engine.asked[2].constraint == TEXT_AGAIN
    engine = ScriptedEngine([call, call, ["Hi", "!"]])  # doubtful, and the call is cut by max_tokens
    with patch("qwend.chat.decide.fit", AsyncMock(return_value=0.0)):
        items = run(engine, constraint, params=SamplingParams(temperature=0.0, max_tokens=2), judge=lambda: (),
                    asked="Say hello in New York.")
    assert texts(items) == "Hi!"


JSON_ANSWER = OutputConstraint(json_schema={"type": "object"}, grammar="root ::= object")


def run_with_format(engine: ScriptedEngine, params=GREEDY):
    async def collect():
        deferred = Deferred(calls=lambda: CALLS_PROMPT, text=JSON_ANSWER)
        return [item async for item in generation(engine, PROMPT, params, OPTIONAL, deferred)()]

    return asyncio.run(collect())


def test_beside_tools_a_response_format_shapes_the_text_answer_however_it_began():
    """An agent's final answer (the Agents SDK's output_type): text decided on is generated again, under the
    format's grammar, whether the start was clear text, ended while unclear, or reached for an unknown tool."""
    for start in (["Paris", " is", " the", " capital", ".", " It", " is"], ["Hi"],
                  ["<tool_call>", "\n", '{"', "name", '":', ' "', "nowhere", '",']):
        engine = ScriptedEngine([start, ['{"', 'capital', '": "Paris"}']])
        items = run_with_format(engine)
        assert texts(items) == '{"capital": "Paris"}'
        assert engine.asked[-1].constraint == JSON_ANSWER and engine.asked[0].closed


def test_beside_a_response_format_a_call_is_still_a_call():
    engine = ScriptedEngine([CALL, CALL])
    items = run_with_format(engine)
    assert texts(items) == "".join(CALL) and engine.asked[-1].constraint.tools == (WEATHER,)

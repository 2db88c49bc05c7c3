"""The output parser over outputs recorded from the real default model (and Qwen3-style reasoning)."""

import json

import pytest

from qwend.chat.parser import OutputParser
from qwend.types import Reasoning, Token, ToolCallDelta, ToolCallEnd, ToolCallStart, ToolSpec

WEATHER = ToolSpec("get_weather", "Weather in a city", {
    "type": "object",
    "properties": {"city": {"type": "string"}, "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}},
    "required": ["city"],
})
CALC = ToolSpec("calculate", "Evaluate maths", {
    "type": "object", "properties": {"expression": {"type": "string"}}, "required": ["expression"]})
TOOLS = [WEATHER, CALC]


def fold(events):
    """(reasoning, content, [(name, arguments dict)]) and checks the event order of each call."""
    reasoning = "".join(e.text for e in events if isinstance(e, Reasoning))
    content = "".join(e.text for e in events if isinstance(e, Token))
    calls, streamed = [], {}
    for e in events:
        if isinstance(e, ToolCallStart):
            assert e.index not in streamed and e.id.startswith("call_")
            streamed[e.index] = ""
        elif isinstance(e, ToolCallDelta):
            streamed[e.index] += e.arguments
        elif isinstance(e, ToolCallEnd):
            assert json.loads(streamed[e.index]) == json.loads(e.call.arguments)
            calls.append((e.call.name, json.loads(e.call.arguments)))
    assert sorted(streamed) == list(range(len(calls)))
    return reasoning, content, calls


def run(text, *, whole: bool, **options):
    parser = OutputParser(TOOLS, **options)
    pieces = [text] if whole else list(text)
    events = [e for piece in pieces for e in parser.feed(piece)] + parser.finish()
    return fold(events), parser.outcomes


PARIS = ("get_weather", {"city": "Paris"})
PARIS_C = ("get_weather", {"city": "Paris", "unit": "celsius"})

CASES = [
    # (recorded output, options, expected reasoning, content, calls, outcome)
    ('<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris", "unit": "celsius"}}\n</tool_call>',
     {}, "", "", [PARIS_C], "parsed"),
    ('<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris", "unit": "celsius"}}\n</tool_call>\n'
     '<tool_call>\n{"name": "get_weather", "arguments": {"city": "London", "unit": "celsius"}}\n</tool_call>',
     {}, "", "", [PARIS_C, ("get_weather", {"city": "London", "unit": "celsius"})], "parsed"),
    ('{"name": "get_weather", "arguments": {"city": "Paris"}}', {}, "", "", [PARIS], "repaired"),
    ('```json\n{\n  "name": "get_weather",\n  "arguments": {\n    "city": "Paris",\n    "unit": "celsius"\n  }\n}\n```',
     {}, "", "", [PARIS_C], "repaired"),
    ('[{"name": "get_weather", "arguments": {"city": "Paris"}}, {"name": "calculate", "arguments": {"expression": "2+2"}}]',
     {}, "", "", [PARIS, ("calculate", {"expression": "2+2"})], "repaired"),
    ('{"name": "get_weather", "arguments": {"city": "Paris"}}\n{"name": "get_weather", "arguments": {"city": "Rome"}}',
     {}, "", "", [PARIS, ("get_weather", {"city": "Rome"})], "repaired"),
    # text that merely mentions JSON is an answer, not a call
    ('Here is the json object for the function call "get_weather":\n{"name": "get_weather", "arguments": {"city": "Paris"}}',
     {}, "", 'Here is the json object for the function call "get_weather":\n{"name": "get_weather", "arguments": {"city": "Paris"}}',
     [], None),
    ('Use `{"a": 1}` as the config.', {}, "", 'Use `{"a": 1}` as the config.', [], None),
    # a tool that was not offered (the model invents one for "Tell me a joke") stays content
    ('{"name": "tell_joke", "arguments": {}}', {}, "", '{"name": "tell_joke", "arguments": {}}', [], "fell_back"),
    # arguments that do not validate (enum) stay content
    ('{"name": "get_weather", "arguments": {"city": "Paris", "unit": "kelvin"}}', {}, "",
     '{"name": "get_weather", "arguments": {"city": "Paris", "unit": "kelvin"}}', [], "fell_back"),
    # cut off inside a tag (max_tokens): dropped, no markup in the content
    ('<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"', {}, "", "", [], "truncated"),
    # a whole call missing only its closing tag is kept
    ('<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}', {}, "", "", [PARIS], "parsed"),
    # malformed inside a tag: content
    ('<tool_call>\n{"name": get_weather}\n</tool_call>', {}, "", '<tool_call>\n{"name": get_weather}\n</tool_call>',
     [], "fell_back"),
    # unfenced JSON that is not a call is just an answer
    ('{"answer": 42}', {}, "", '{"answer": 42}', [], None),
    # Qwen3: reasoning, then a call
    ('<think>\nThe user wants the weather.\n</think>\n\n<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>',
     {}, "\nThe user wants the weather.\n", "", [PARIS], "parsed"),
    # reasoning opened by the prompt itself
    ('Simple.\n</think>\n\nThe answer is 4.', {"in_reasoning": True}, "Simple.\n", "The answer is 4.", [], None),
    # content then a call
    ('Let me check.\n<tool_call>\n{"name": "calculate", "arguments": {"expression": "2**10"}}\n</tool_call>',
     {}, "", "Let me check.\n", [("calculate", {"expression": "2**10"})], "parsed"),
    # without leniency (a grammar was used) bare JSON is content
    ('{"name": "get_weather", "arguments": {"city": "Paris"}}', {"lenient": False}, "",
     '{"name": "get_weather", "arguments": {"city": "Paris"}}', [], None),
    # trusted (grammar): arguments stream as generated
    ('<tool_call>\n{"name": "get_weather", "arguments": {"city": "Pa\\"ris"}}\n</tool_call>', {"trusted": True}, "", "",
     [("get_weather", {"city": 'Pa"ris'})], "parsed"),
    ("Plain answer.", {}, "", "Plain answer.", [], None),
]


@pytest.mark.parametrize("whole", [True, False], ids=["whole", "char-by-char"])
@pytest.mark.parametrize("text, options, reasoning, content, calls, outcome", CASES)
def test_recorded_outputs(text, options, reasoning, content, calls, outcome, whole):
    (got_reasoning, got_content, got_calls), outcomes = run(text, whole=whole, **options)
    assert got_reasoning == reasoning
    assert got_content == content
    assert got_calls == calls
    assert list(outcomes) == ([outcome] if outcome else [])


def test_a_call_made_twice_is_made_once():
    call = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>'
    (_, content, calls), outcomes = run(f"{call}\n{call}", whole=True)
    assert content == "" and calls == [PARIS] and outcomes == {"parsed": 1, "dropped": 1}


def test_trusted_arguments_arrive_in_several_deltas():
    parser = OutputParser(TOOLS, trusted=True)
    text = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris", "unit": "celsius"}}\n</tool_call>'
    events = [e for ch in text for e in parser.feed(ch)] + parser.finish()
    deltas = [e for e in events if isinstance(e, ToolCallDelta)]
    assert len(deltas) > 5
    starts = [e for e in events if isinstance(e, ToolCallStart)]
    assert len(starts) == 1 and events.index(starts[0]) < events.index(deltas[0])


def test_trusted_arguments_do_not_start_with_the_space_after_the_colon():
    parser = OutputParser(TOOLS, trusted=True)
    text = '<tool_call>\n{"name": "get_weather", "arguments":   {"city": "Oslo"}}\n</tool_call>'
    events = [e for ch in text for e in parser.feed(ch)] + parser.finish()
    assert events[-1].call.arguments == '{"city": "Oslo"}'


def test_trusted_call_cut_short_reports_truncated():
    parser = OutputParser(TOOLS, trusted=True)
    events = parser.feed('<tool_call>\n{"name": "get_weather", "arguments": {"ci') + parser.finish()
    assert isinstance(events[-1], ToolCallEnd) and events[-1].call.arguments == '{"ci'
    assert parser.outcomes == {"truncated": 1}


def test_trusted_call_that_fails_a_schema_keyword_is_counted_invalid():
    pattern = ToolSpec("code", "", {"type": "object", "properties": {"c": {"type": "string", "pattern": "^[A-Z]+$"}}})
    parser = OutputParser([pattern], trusted=True)
    events = parser.feed('<tool_call>\n{"name": "code", "arguments": {"c": "abc"}}\n</tool_call>') + parser.finish()
    assert isinstance(events[-1], ToolCallEnd) and parser.outcomes == {"invalid": 1}


def test_no_tools_means_no_calls():
    parser = OutputParser([])
    text = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>'
    events = parser.feed(text) + parser.finish()
    assert [type(e) for e in events] == [Token] and events[0].text == text

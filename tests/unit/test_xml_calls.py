"""Qwen3-Coder's tool-call format (chat/xml_calls.py) through the output parser: typed values, text before
calls, several calls, pieces of any size, and malformed or cut-off calls, on outputs in the published form."""

import pytest

from qwend.chat.parser import OutputParser, called_name
from qwend.chat.xml_calls import typed, xml_call
from qwend.types import ToolSpec
from tests.unit.test_parser import fold

WEATHER = ToolSpec("get_weather", "Weather in a city", {
    "type": "object",
    "properties": {"city": {"type": "string"}, "days": {"type": "integer"}, "metric": {"type": "boolean"},
                   "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}},
    "required": ["city"],
})
WRITE = ToolSpec("write_file", "Write a file", {
    "type": "object",
    "properties": {"path": {"type": "string"}, "content": {"type": "string"},
                   "mode": {"anyOf": [{"type": "integer"}, {"type": "null"}]},
                   "tags": {"type": "array", "items": {"type": "string"}}, "ratio": {"type": "number"}},
    "required": ["path", "content"],
})
TOOLS = [WEATHER, WRITE]


def call(name: str, **parameters: str) -> str:
    inside = "".join(f"<parameter={key}>\n{value}\n</parameter>\n" for key, value in parameters.items())
    return f"<tool_call>\n<function={name}>\n{inside}</function>\n</tool_call>"


def parse(text: str, *, whole: bool):
    parser = OutputParser(TOOLS)
    pieces = [text] if whole else list(text)
    events = [e for piece in pieces for e in parser.feed(piece)] + parser.finish()
    return fold(events), parser.outcomes


@pytest.mark.parametrize("whole", [True, False])
def test_a_call_with_values_typed_by_the_schema(whole):
    text = call("get_weather", city="Paris", days="3", metric="True")
    (_, content, calls), outcomes = parse(text, whole=whole)
    assert content == "" and calls == [("get_weather", {"city": "Paris", "days": 3, "metric": True})]
    assert outcomes["parsed"] == 1


@pytest.mark.parametrize("whole", [True, False])
def test_text_before_several_calls_and_a_multi_line_value(whole):
    source = 'def main():\n    print("<b>hi</b>")\n'  # markup-like text and newlines inside a value stay
    text = ("I will check the weather and then save it.\n\n" + call("get_weather", city="São Paulo") + "\n"
            + call("write_file", path="out.py", content=source, tags='["a", "b"]', ratio="0.5", mode="null"))
    (_, content, calls), _ = parse(text, whole=whole)
    assert content.strip() == "I will check the weather and then save it."
    assert calls == [("get_weather", {"city": "São Paulo"}),
                     ("write_file", {"path": "out.py", "content": source, "tags": ["a", "b"], "ratio": 0.5,
                                     "mode": None})]


@pytest.mark.parametrize("whole", [True, False])
def test_a_call_cut_off_is_dropped_never_markup_in_the_content(whole):
    text = "Checking.\n" + call("get_weather", city="Paris")[:-40]
    (_, content, calls), outcomes = parse(text, whole=whole)
    assert calls == [] and content.strip() == "Checking." and outcomes["truncated"] == 1


def test_a_whole_call_missing_only_its_closing_tag_is_kept():
    (_, content, calls), _ = parse(call("get_weather", city="Oslo").removesuffix("</tool_call>"), whole=True)
    assert calls == [("get_weather", {"city": "Oslo"})] and content == ""


@pytest.mark.parametrize("text", [
    call("get_weather", days="3"),  # the required city is missing
    call("get_weather", city="Paris", days="three"),  # not an integer
    call("get_weather", city="Paris", unit="kelvin"),  # not in the enum
    call("send_email", to="a@b.c"),  # a tool that was not offered
    "<tool_call>\n<function=get_weather>\ncity: Paris\n</function>\n</tool_call>",  # text between the tags
    "<tool_call>\n<function=get_weather>\n<parameter=city>\nParis\n</function>\n</tool_call>",  # unclosed
    "<tool_call>\n<function=get_weather>\n<parameter=city>\nA\n</parameter>\n<parameter=city>\nB\n</parameter>\n"
    "</function>\n</tool_call>",  # a parameter twice
])
def test_a_malformed_or_invalid_call_is_no_call(text):
    (_, content, calls), outcomes = parse(text, whole=False)
    assert calls == [] and content == text and outcomes["fell_back"] == 1


def test_the_same_call_twice_is_made_once_and_json_calls_mix_in():
    paris = call("get_weather", city="Paris")
    json_call = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Rome"}}\n</tool_call>'
    (_, _, calls), outcomes = parse(paris + "\n" + paris + "\n" + json_call, whole=False)
    assert calls == [("get_weather", {"city": "Paris"}), ("get_weather", {"city": "Rome"})]
    assert outcomes["dropped"] == 1


def test_the_tool_name_shows_once_its_tag_is_whole():
    assert called_name("<tool_call>\n<function=get_wea") is None
    assert called_name("<tool_call>\n<function=get_weather>\n") == "get_weather"


@pytest.mark.parametrize("text, schema, value", [
    (" 42 ", {"type": "integer"}, 42),
    ("4.5", {"type": "number"}, 4.5),
    ("4", {"type": "number"}, 4),
    ("false", {"type": "boolean"}, False),
    ("42", {"type": "string"}, "42"),  # a string stays as written
    ("42", None, "42"),  # a parameter the schema does not describe: text
    ('{"a": 1}', {"type": "object"}, {"a": 1}),
    ("not json", {"type": "object"}, "not json"),  # left for validation to refuse
    ("2", {"enum": [1, 2, 3]}, 2),
    ("null", {"type": ["string", "null"]}, "null"),  # a string is allowed: as written
])
def test_values_are_read_as_their_schema_type(text, schema, value):
    assert typed(text, schema) == value


def test_a_call_of_no_parameters():
    assert xml_call("\n<function=now>\n</function>\n", {}) == {"name": "now", "arguments": {}}

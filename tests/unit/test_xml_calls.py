"""Qwen3-Coder's tool-call format (chat/xml_calls.py) through the output parser: typed values, text before
calls, several calls, pieces of any size, and malformed or cut-off calls, on outputs in the published form."""

import pytest

from qwend.chat.parser import OutputParser, call_intent, called_name
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


@pytest.mark.parametrize("whole", [True, False])
def test_calls_without_their_tool_call_tags_are_calls_to_offered_tools(whole):
    bare = call("get_weather", city="Paris").removeprefix("<tool_call>\n").removesuffix("\n</tool_call>")
    text = ("Use <function=name> tags like <function=rm_rf> this.\n" + bare + "\n"
            + call("write_file", path="a.txt", content="hi") + "\n" + bare.replace("Paris", "Rome"))
    (_, content, calls), outcomes = parse(text, whole=whole)
    # a tag naming no offered tool is text; the tagged call between the bare ones is read as before
    assert content.strip() == "Use <function=name> tags like <function=rm_rf> this."
    assert calls == [("get_weather", {"city": "Paris"}), ("write_file", {"path": "a.txt", "content": "hi"}),
                     ("get_weather", {"city": "Rome"})]
    assert outcomes["parsed"] == 3


@pytest.mark.parametrize("whole", [True, False])
def test_a_bare_call_cut_off_is_dropped_and_a_bad_one_stays_text(whole):
    bare = call("get_weather", city="Paris").removeprefix("<tool_call>\n").removesuffix("\n</tool_call>")
    (_, content, calls), outcomes = parse("Checking.\n" + bare[:-25], whole=whole)
    assert calls == [] and content.strip() == "Checking." and outcomes["truncated"] == 1
    wrong = bare.replace("city", "town")  # required city missing: not a valid call
    (_, content, calls), _ = parse(wrong, whole=whole)
    assert calls == [] and content == wrong


def test_an_answer_opening_with_a_bare_call_is_meant_as_a_call():
    assert call_intent("<func") is None and call_intent("<function=get_weather>") is True
    assert called_name("<function=get_weather>\n") == "get_weather"


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


# -- the grammar in this form (engine/grammar.py), chosen from the model's template

XML_TEMPLATE = ("{% for tool in tools %}{{ tool | tojson }}{% endfor %}If you choose to call a function reply in "
                "the following format:\n<tool_call>\n<function=example_function_name>\n<parameter=example_parameter_1>"
                "\nvalue_1\n</parameter>\n</function>\n</tool_call>{% for m in messages %}{{ m.content }}{% endfor %}")


def test_the_form_comes_from_the_models_template():
    from qwend.engine.template import ChatTemplate

    assert ChatTemplate(XML_TEMPLATE).call_form == "xml"
    assert ChatTemplate(None).call_form == "json"  # qwend's ChatML, as Qwen2.5's own template: JSON calls
    assert ChatTemplate("{{ messages[0].content }} <function= no parameters").call_form == "json"


@pytest.mark.parametrize("parallel, first", [(True, None), (False, None), (True, "write_file")])
def test_the_xml_grammar_parses_in_llama_cpp(parallel, first):
    from qwend.engine.grammar import for_constraint
    from qwend.types import OutputConstraint
    from tests.grammars import llama_parses

    constraint = OutputConstraint(tools=(*TOOLS, ToolSpec("ping")), calls="required", parallel=parallel,
                                  first_call=first)
    rules = for_constraint(constraint, form="xml")
    assert llama_parses(rules)
    head = rules.splitlines()[0]
    assert ("function-1" in head.split("(")[0]) == (first == "write_file")
    assert head.endswith(")*") == parallel


def test_the_xml_grammar_holds_each_value_to_its_type():
    from qwend.engine.grammar import xml_calls_grammar

    rules = {line.split(" ::= ")[0]: line.split(" ::= ")[1] for line in xml_calls_grammar(TOOLS, parallel=False).splitlines()}
    weather, write = rules["function-0"], rules["function-1"]
    assert weather.startswith('"<function=get_weather>\\n" "<parameter=city>\\n" (xml-text)')  # required: first, always
    assert '("<parameter=days>\\n" (xml-integer) "\\n</parameter>\\n")?' in weather  # optional
    assert '("true" | "false")' in weather and '("celsius" | "fahrenheit")' in weather
    assert "(xml-integer | \"null\")" in write and "(xml-number)" in write
    assert "(alternative-0)" in write and rules["alternative-0"].startswith('"["')  # an array: JSON
    assert '"</parameter>" [^>]' not in rules["xml-text"] and '"</parameter" [^>]' in rules["xml-text"]


def test_under_a_grammar_the_arguments_stream_a_parameter_at_a_time():
    from qwend.types import ToolCallDelta, ToolCallStart

    text = call("write_file", path="a.txt", content="line one\nline </b> two", ratio="2") + "\n" + call("get_weather", city="Rome")
    parser = OutputParser(TOOLS, trusted=True)
    events = [e for piece in text for e in parser.feed(piece)] + parser.finish()
    (_, content, calls) = fold(events)
    assert content == "" and calls == [
        ("write_file", {"path": "a.txt", "content": "line one\nline </b> two", "ratio": 2}),
        ("get_weather", {"city": "Rome"})]
    deltas = [e.arguments for e in events if isinstance(e, ToolCallDelta) and e.index == 0]
    assert deltas == ['{"path": "a.txt"', ', "content": "line one\\nline </b> two"', ', "ratio": 2', "}"]
    assert [e.name for e in events if isinstance(e, ToolCallStart)] == ["write_file", "get_weather"]
    assert parser.outcomes["parsed"] == 2


def test_a_streamed_call_cut_off_is_counted_truncated():
    # (under the chat pipeline a call cut off never reaches the parser: chat/calls.py drops it whole)
    parser = OutputParser(TOOLS, trusted=True)
    parser.feed(call("get_weather", city="Rome", days="2")[:-30])
    parser.finish()
    assert parser.outcomes["truncated"] == 1 and parser.outcomes["parsed"] == 0


def test_the_call_grammars_generation_hands_on_whole_new_calls_in_this_form():
    import asyncio
    import re

    from qwend.chat.calls import made_up, whole_calls
    from qwend.engine.base import Finished, Piece

    paris, rome = call("get_weather", city="Paris"), call("get_weather", city="Rome")

    def handed_on(text: str, said: str) -> tuple[str, str]:
        async def generated():  # the call tags are tokens of their own (Qwen's special tokens), the rest runs
            for part in re.split(r"(</?tool_call>)", text):
                for at in range(0, len(part), 7):
                    yield Piece(part[at:at + 7])
            yield Finished("stop")

        async def collect():
            return [item async for item in whole_calls(generated(), said, TOOLS)]

        items = asyncio.run(collect())
        return "".join(i.text for i in items if isinstance(i, Piece)), items[-1].reason

    assert handed_on(paris + "\n" + rome, "Weather in Paris and Rome?") == (paris + "\n" + rome, "stop")
    assert handed_on(paris + "\n" + paris, "Weather in Paris?") == (paris, "stop")  # a repeat ends it
    assert handed_on(paris + "\n" + call("get_weather", city="Lima"), "Weather in Paris?")[0] == paris  # made up
    assert made_up(paris, TOOLS, "What is 2 + 2?") and not made_up(paris, TOOLS, "Is it warm in Paris?")

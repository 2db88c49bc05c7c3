import pytest

from qwend.chat.parser import call_intent, called_name
from qwend.engine.grammar import TEXT_ONLY_START, calls_grammar, json_grammar
from qwend.types import ToolSpec
from tests.grammars import llama_parses

TOOLS = [
    ToolSpec("get_weather", "", {"type": "object", "properties": {
        "city": {"type": "string"}, "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}}, "required": ["city"]}),
    ToolSpec("set_timer", "", {"type": "object", "properties": {"minutes": {"type": "integer"}}, "required": ["minutes"]}),
    ToolSpec("ping"),  # no parameters schema given: any object
]


@pytest.mark.parametrize("rules", [
    calls_grammar(TOOLS, parallel=True),
    calls_grammar(TOOLS[:1], parallel=False),
    json_grammar({}),
    json_grammar({"type": "object", "properties": {"a": {"type": "array", "items": {"type": "number"}}}, "required": ["a"]}),
    TEXT_ONLY_START,
])
def test_grammars_parse_in_llama_cpp(rules):
    assert llama_parses(rules)


def test_calls_grammar_names_only_offered_tools_and_repeats_only_when_parallel():
    rules = calls_grammar(TOOLS, parallel=True)
    assert '"\\"get_weather\\""' in rules and '"\\"set_timer\\""' in rules
    assert rules.splitlines()[0].endswith(")*")
    assert not calls_grammar(TOOLS, parallel=False).splitlines()[0].endswith(")*")


@pytest.mark.parametrize("text, intent", [
    ("", None), (" ", None), ("<tool", None), ("<tool_call>", True), ("{", True), ("[", None), ("[{", True),
    ("[Link](x)", False), ("`", None), ("``", None), ("`code`", False), ("```", None), ("```j", None), ("```json", None), ("```json\n", None),
    ("```json\n{", True), ("```\n{", True), ("```python", False), ("```\ndef", False), ("Sure", False),
])
def test_call_intent(text, intent):
    assert call_intent(text) is intent


def test_called_name():
    assert called_name('{"name": "get_weather", "argu') == "get_weather"
    assert called_name('{"name": "get_wea') is None
    assert called_name('```json\n{\n  "name": "reverse"') == "reverse"


def test_local_refs_are_inlined_so_nested_tool_schemas_still_compile():
    from qwend.chat.schemas import prepare_schema

    schema = prepare_schema({"type": "object", "properties": {"a": {"$ref": "#/$defs/x"}}, "required": ["a"],
                             "$defs": {"x": {"type": "string", "enum": ["p", "q"]}}}, param="p")
    assert schema == {"type": "object", "properties": {"a": {"type": "string", "enum": ["p", "q"]}}, "required": ["a"]}
    assert llama_parses(calls_grammar([ToolSpec("t", "", schema)], parallel=True))


@pytest.mark.parametrize("schema, message", [
    ({"type": "weird"}, "invalid JSON schema"),
    ({"properties": {"a": {"$ref": "https://example.com/s.json"}}}, "only local references"),
    ({"properties": {"a": {"$ref": "#/$defs/node"}}, "$defs": {"node": {"properties": {"next": {"$ref": "#/$defs/node"}}}}},
     "recursive"),
    ({"properties": {"a": {"$ref": "#/$defs/missing"}}}, "points at nothing"),
])
def test_schemas_that_cannot_be_enforced_are_400(schema, message):
    from qwend.chat.schemas import prepare_schema
    from qwend.errors import InvalidRequest

    with pytest.raises(InvalidRequest, match=message):
        prepare_schema(schema, param="tools[0].function.parameters")


def test_the_first_call_may_be_held_to_one_tool_and_the_rest_to_any():
    from qwend.engine.grammar import calls_grammar
    from qwend.types import ToolSpec

    tools = [ToolSpec("get_weather", "", {"type": "object", "properties": {"city": {"type": "string"}}}),
             ToolSpec("calculate", "", {"type": "object", "properties": {"expression": {"type": "string"}}})]
    rules = calls_grammar(tools, parallel=True, first="calculate")
    root = rules.splitlines()[0]
    assert root.startswith('root ::= "<tool_call>\\n" alternative-1 ') and root.endswith("call-json \"\\n</tool_call>\")*")
    assert '"\\"calculate\\""' in next(line for line in rules.splitlines() if line.startswith("alternative-1-name ::="))
    assert calls_grammar(tools, parallel=True).splitlines()[0].startswith('root ::= "<tool_call>\\n" call-json ')

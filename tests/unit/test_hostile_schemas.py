"""Schemas and patterns from clients (issue 23, points 1, 2 and 8): past the documented bounds they are a 400
in each protocol's shape before anything is queued; within them, the grammar they become is small enough for
llama.cpp's parser, and their patterns run in RE2, in linear time."""

from __future__ import annotations

from dataclasses import replace

import pytest

from qwend.chat import parser
from qwend.chat.schemas import MAX_GRAMMAR_WEIGHT, grammar_weight, prepare_schema
from qwend.engine.grammar import MAX_GRAMMAR_NESTING, _bounded, calls_grammar, json_grammar, nesting
from qwend.engine.llama_cpp import LlamaCppBackend
from qwend.errors import InvalidRequest
from qwend.patterns import MAX_REPEAT, pattern_shape, schema_validator
from qwend.types import OutputConstraint, ToolSpec
from tests.conftest import client_for, fake_runtime
from tests.error_shapes import error_shape_problem
from tests.fakes import FakeBackend
from tests.grammars import llama_parses
from tests.unit.test_pathological_output import within_deadline


def strings(count: int, **keywords) -> dict:
    return {"type": "object", "properties": {f"p{i}": {"type": "string", **keywords} for i in range(count)}}


CATASTROPHIC = r"^(\w+\s?)*$"  # backtracks exponentially in Python's re on "a a a ... !"
HOSTILE = {
    "maxItems 100000 (the crash)": {"type": "object", "properties": {"l": {"type": "array", "items": {"type": "integer"},
                                                                         "maxItems": 100000}}, "required": ["l"]},
    "pattern {0,100000}": {"type": "string", "pattern": "^[a]{0,100000}$"},
    "minLength 1e7": {"type": "string", "minLength": 10_000_000},
    "minLength 1e12": {"type": "string", "minLength": 1e12},
    "maxProperties 1e6": {"type": "object", "maxProperties": 1_000_000},
    "5,000 nested groups": {"type": "string", "pattern": "(" * 5000 + "a" + ")" * 5000},
    "40 nested groups": {"type": "string", "pattern": "(" * 40 + "a" + ")" * 40},
    "nested counts multiply": {"type": "string", "pattern": "((a{100}){100}){100}"},
    "lookahead": {"type": "string", "pattern": "(?=a)a"},
    "backreference": {"type": "string", "pattern": "(a)\\1"},
    "$ref chain 60 deep": {
        "$defs": {**{f"d{i}": {"type": "object", "properties": {"x": {"$ref": f"#/$defs/d{i + 1}"}}} for i in range(60)},
                  "d60": {"type": "string"}},
        "$ref": "#/$defs/d0"},
    "counts adding up": strings(30, maxLength=1000),
    "unevaluatedProperties beside patternProperties": {"type": "object", "patternProperties": {"^a": {}},
                                                       "unevaluatedProperties": False},
    "a megabyte of enum": {"type": "string", "enum": [f"value-{i:07d}" for i in range(80_000)]},
}
WITHIN = {
    "maxItems 1000": {"type": "array", "items": {"type": "integer"}, "maxItems": MAX_REPEAT},
    "an email pattern": {"type": "string", "pattern": r"^[\w.+-]+@[\w-]+\.[\w.-]+$"},
    "a date pattern": {"type": "string", "pattern": r"^\d{4}-\d{2}-\d{2}$"},
    "many strings with short bounds": strings(19, maxLength=1000),
    "the catastrophic pattern (RE2 runs it in linear time)": {"type": "string", "pattern": CATASTROPHIC},
    # what llama.cpp's converter cannot express is left to the answer, never a 500
    "an unanchored pattern": {"type": "string", "pattern": "[A-Z]{3}"},
    "a non-capturing group": {"type": "string", "pattern": "^(?:ab)+$"},
    "a Unicode class (RE2 syntax, not Python's)": {"type": "string", "pattern": r"^\p{L}+$"},
    "not and if": {"type": "object", "properties": {"a": {"not": {"type": "string"}}, "b": {
        "if": {"type": "string"}, "then": {"minLength": 2}}}},
}


@pytest.mark.parametrize("name", HOSTILE)
def test_schemas_past_the_bounds_are_400_before_any_grammar(name):
    def prepare() -> None:
        with pytest.raises(InvalidRequest):
            prepare_schema(HOSTILE[name], param="response_format")

    assert within_deadline(prepare) is None


@pytest.fixture(scope="module")
def llama_backend(model_path):
    """The default model's llama.cpp engine with its vocabulary only: what grammar_for needs."""
    from llama_cpp import Llama

    return LlamaCppBackend(Llama(str(model_path), vocab_only=True, verbose=False), model_path)


@pytest.mark.parametrize("name", WITHIN)
def test_schemas_within_the_bounds_become_grammars_llama_cpp_parses(llama_backend, name):
    def parse_grammar() -> None:
        constraint = OutputConstraint(json_schema=prepare_schema(WITHIN[name], param="response_format"))
        rules = llama_backend.grammar_for(constraint)  # llama.cpp parses it there, in a forked process here
        assert nesting(rules) <= MAX_GRAMMAR_NESTING
        assert llama_parses(rules)

    assert within_deadline(parse_grammar) is None


def test_a_grammar_llama_cpp_refuses_is_built_again_without_the_pattern(llama_backend):
    schema = {"type": "object", "properties": {"day": {"type": "string", "pattern": r"^\d{4}-\d{2}$"}},
              "required": ["day"]}
    assert not llama_parses(json_grammar(schema))  # llama-cpp-python's converter writes "\d" into a literal
    rules = llama_backend.grammar_for(OutputConstraint(json_schema=schema))
    assert llama_parses(rules) and '"\\"day\\""' in rules


def test_only_keywords_are_left_out_of_a_grammar_never_properties_of_those_names():
    schema = {"type": "object", "properties": {"pattern": {"type": "string", "pattern": "x"}, "not": {"type": "integer"}},
              "required": ["pattern", "not"]}
    rules = json_grammar(prepare_schema(schema, param="response_format"))
    assert '"\\"pattern\\""' in rules and '"\\"not\\""' in rules


def test_the_last_guard_refuses_grammars_llama_cpp_could_not_survive():
    too_deep = "root ::= " + "(a " * (MAX_GRAMMAR_NESTING + 1) + ")?" * (MAX_GRAMMAR_NESTING + 1) + "\na ::= \"a\""
    with pytest.raises(InvalidRequest, match="nest"):
        _bounded(too_deep)
    assert nesting('root ::= ("(" [()] ( "\\"(" ))') == 2  # parentheses in literals and classes are not groups
    assert _bounded("root ::= (a)?") == "root ::= (a)?"


def test_pattern_shapes():
    assert pattern_shape("abc").weight == 3
    assert pattern_shape("a{10}").weight == 10
    assert pattern_shape("(ab){10}").weight == 20
    assert pattern_shape("((a){10}){10}").weight == 100 and pattern_shape("((a){10}){10}").nesting == 2
    assert pattern_shape(r"[(]\(\{5}x{2,}").nesting == 0  # escaped and classed parentheses, a literal brace
    assert grammar_weight(strings(3, maxLength=10)) == 1 + 3 * 11


def test_patterns_run_in_linear_time_where_arguments_are_checked():
    schema = {"type": "object", "properties": {"s": {"type": "string", "pattern": CATASTROPHIC}},
              "patternProperties": {CATASTROPHIC: {"type": "string"}}, "additionalProperties": False}
    hostile = {"s": "ab " * 30_000 + "!", "ab " * 10_000 + "!": "x"}

    def validate() -> None:
        assert not schema_validator(schema).is_valid(hostile)
        assert not parser._valid(hostile, schema)
        assert schema_validator(schema).is_valid({"s": "ab ab"})

    assert within_deadline(validate) is None


def test_additional_and_pattern_properties_keep_their_meaning():
    validator = schema_validator({"type": "object", "properties": {"a": {}}, "patternProperties": {"^x": {"type": "integer"}},
                                  "additionalProperties": False})
    assert validator.is_valid({"a": 1, "x1": 2})
    assert not validator.is_valid({"a": 1, "x1": "two"})
    assert not validator.is_valid({"a": 1, "b": 2})
    open_ended = schema_validator({"type": "object", "additionalProperties": {"type": "string"}})
    assert open_ended.is_valid({"b": "s"}) and not open_ended.is_valid({"b": 2})


# -- through every protocol that takes a schema: the same 400, in its own shape

MAX_ITEMS = HOSTILE["maxItems 100000 (the crash)"]
HI = [{"role": "user", "content": "hi"}]
ROUTES = [
    ("/v1/chat/completions", {"messages": HI, "response_format": {
        "type": "json_schema", "json_schema": {"name": "x", "schema": MAX_ITEMS}}}),
    ("/v1/chat/completions", {"messages": HI, "tool_choice": "required", "tools": [
        {"type": "function", "function": {"name": "f", "parameters": MAX_ITEMS}}]}),
    ("/v1/chat/completions", {"messages": HI, "response_format": {
        "type": "json_schema", "json_schema": {"name": "x", "schema": HOSTILE["pattern {0,100000}"]}}}),
    ("/api/chat", {"messages": HI, "stream": False, "format": MAX_ITEMS}),
    ("/api/generate", {"prompt": "hi", "stream": False, "format": HOSTILE["minLength 1e12"]}),
    ("/api/chat", {"messages": HI, "stream": False, "tools": [
        {"type": "function", "function": {"name": "f", "parameters": HOSTILE["5,000 nested groups"]}}]}),
    ("/v1/messages", {"max_tokens": 5, "messages": HI, "tools": [{"name": "f", "input_schema": MAX_ITEMS}]}),
    ("/v1/messages", {"max_tokens": 5, "messages": HI, "output_config": {
        "format": {"type": "json_schema", "schema": HOSTILE["$ref chain 60 deep"]}}}),
    ("/chat/completions", {"messages": HI, "tools": [
        {"type": "function", "function": {"name": "f", "parameters": HOSTILE["lookahead"]}}]}),
    ("/api/chat/completions", {"messages": HI, "tools": [
        {"type": "function", "function": {"name": "f", "parameters": HOSTILE["counts adding up"]}}]}),
    ("/create_session", {"tools": [{"name": "f", "parameters": MAX_ITEMS}]}),
]


@pytest.mark.parametrize("path, body", ROUTES, ids=[f"{p} {i}" for i, (p, _) in enumerate(ROUTES)])
async def test_every_protocol_refuses_them_in_its_own_shape(tmp_path, path, body):
    backend = FakeBackend("{}")
    async with client_for(fake_runtime(tmp_path, backend)) as client:
        reply = await client.post(path, json=body)
        after = await client.post("/v1/chat/completions", json={"messages": HI})
    assert reply.status_code == 400, reply.text
    protocol = {"/api/chat": "ollama", "/api/generate": "ollama", "/v1/messages": "anthropic",
                "/v1/chat/completions": "openai", "/chat/completions": "openai"}.get(path, "detail")
    assert error_shape_problem(protocol, reply.json()) is None, reply.text
    assert len(backend.prompts) == 1  # only the request after the refusal reached the model
    assert after.status_code == 200


async def test_tools_that_each_fit_but_not_together_are_400_where_a_grammar_enforces_them(tmp_path):
    backend = FakeBackend("{}")
    backend.info = replace(backend.info, grammar=True)
    tool = {"type": "function", "function": {"name": "f", "parameters": strings(9, maxLength=1000)}}
    tools = [{**tool, "function": {**tool["function"], "name": f"f{i}"}} for i in range(3)]
    body = {"messages": HI, "tools": tools, "tool_choice": "required"}
    async with client_for(fake_runtime(tmp_path, backend)) as client:
        together = await client.post("/v1/chat/completions", json=body)
        alone = await client.post("/v1/chat/completions", json={**body, "tools": tools[:1]})
    assert together.status_code == 400 and "tools" == together.json()["error"]["param"], together.text
    assert str(MAX_GRAMMAR_WEIGHT) in together.json()["error"]["message"]
    assert alone.status_code == 200, alone.text


def test_the_largest_call_grammar_within_the_bounds_compiles():
    tools = [ToolSpec(f"f{i}", "", prepare_schema(strings(6, maxLength=1000), param="p")) for i in range(3)]

    def compile_grammar() -> None:
        assert llama_parses(calls_grammar(tools, parallel=True))

    assert within_deadline(compile_grammar) is None

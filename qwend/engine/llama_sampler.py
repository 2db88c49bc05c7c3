"""llama.cpp's native sampler chain for one answer, built as llama-cpp-python builds it
(`Llama._init_sampler`), so a greedy or seeded answer matches llama-cpp-python's own token for token.

A grammar is checked the way llama.cpp's own `common_sampler` does: the token is sampled without it, and only
when the grammar rejects that token is the grammar applied to the whole vocabulary and the token drawn again.
Applied to all 151,000 tokens on every step, the grammar halved decoding speed; most of a call's tokens are
the model's own first choice, which the grammar accepts.
"""

from __future__ import annotations

import ctypes
import math

from qwend.errors import BackendError
from qwend.types import SamplingParams, TokenLogprob

# How far a greedy answer's likeliest token must lead the next to be read from a batch of several tokens
# (a speculative draft's): llama.cpp's kernels round differently by batch size, which moved the default
# model's log probabilities by up to 0.12 in an answer of 300 tokens, and a closer race may then go the
# other way than it does one token at a time.
CLEAR_LEAD = 0.5
RANDOM_SEED = 0xFFFFFFFF  # llama.cpp's LLAMA_DEFAULT_SEED: a fresh random seed
PENALTY_LAST_N = 64  # the tokens repetition penalties look back on (llama-cpp-python's default)


class Sampler:
    """One answer's sampler: a llama_sampler chain (penalties, then greedy at temperature 0, else top-k,
    typical, top-p, min-p, temperature and a seeded draw) and the GBNF `rules` when given. `free()` once done."""

    def __init__(self, model, params: SamplingParams, rules: str | None) -> None:
        import llama_cpp as lib

        self._lib, self._model = lib, model
        self.greedy = params.temperature == 0
        # a greedy chain whose penalties are all neutral takes the likeliest token: `picks` reads it in bulk
        self._argmax = self.greedy and not rules and (params.repeat_penalty, params.frequency_penalty,
                                                      params.presence_penalty) == (1.0, 0.0, 0.0)
        self._chain = _chain(lib, model, params)
        self._grammar = None
        self._candidates = None
        if rules:
            self._grammar = lib.llama_sampler_init_grammar(model.vocab, rules.encode(), b"root")
            if not self._grammar:
                lib.llama_sampler_free(self._chain)
                raise BackendError("llama.cpp could not parse an output grammar")

    def sample(self, ctx, row: int) -> int:
        """The next token, from the logits of batch row `row` of context `ctx`."""
        lib = self._lib
        if self._grammar is None:
            return lib.llama_sampler_sample(self._chain, ctx, row)
        logits = lib.llama_get_logits_ith(ctx, row)
        token = self._draw(logits, under_grammar=False)
        alone = lib.llama_token_data_array((lib.llama_token_data * 1)(lib.llama_token_data(token, 0.0, 0.0)), 1, -1,
                                           False)
        lib.llama_sampler_apply(self._grammar, ctypes.byref(alone))
        if math.isinf(alone.data[0].logit):  # rejected: drawn again from what the grammar allows
            token = self._draw(logits, under_grammar=True)
        lib.llama_sampler_accept(self._grammar, token)
        lib.llama_sampler_accept(self._chain, token)
        return token

    def picks(self, ctx, row: int, count: int):
        """For a chain that takes the likeliest token (else None): the tokens it samples at batch rows `row`
        … `row + count - 1` (in one array operation, not `count` passes through the chain, which cost about a
        millisecond each in a drafted step of 48), and whether each leads its runner-up by CLEAR_LEAD."""
        import numpy as np

        if not self._argmax:
            return None
        vocabulary, lib = self._model.n_vocab(), self._lib
        first = ctypes.addressof(lib.llama_get_logits_ith(ctx, row).contents)
        if ctypes.addressof(lib.llama_get_logits_ith(ctx, row + count - 1).contents) != first + 4 * vocabulary * (count - 1):
            return None  # (rows not stored in order)
        logits = np.ctypeslib.as_array((ctypes.c_float * (vocabulary * count)).from_address(first)).reshape(count, -1)
        return _leaders(logits)

    def clear(self, ctx, row: int) -> bool:
        """Whether the likeliest token at batch row `row` leads the next by CLEAR_LEAD at least."""
        import numpy as np

        logits = np.ctypeslib.as_array(self._lib.llama_get_logits_ith(ctx, row), shape=(1, self._model.n_vocab()))
        return _leaders(logits)[0][1]

    def _draw(self, logits, *, under_grammar: bool) -> int:
        import numpy as np

        lib, vocabulary = self._lib, self._model.n_vocab()
        if self._candidates is None:
            self._candidates = (lib.llama_token_data * vocabulary)()
            view = np.frombuffer(self._candidates, dtype=[("id", "<i4"), ("logit", "<f4"), ("p", "<f4")])
            view["id"] = np.arange(vocabulary, dtype=np.int32)
        view = np.frombuffer(self._candidates, dtype=[("id", "<i4"), ("logit", "<f4"), ("p", "<f4")])
        view["logit"] = np.ctypeslib.as_array(logits, shape=(vocabulary,))
        view["p"] = 0.0
        candidates = lib.llama_token_data_array(self._candidates, vocabulary, -1, False)
        if under_grammar:
            lib.llama_sampler_apply(self._grammar, ctypes.byref(candidates))
        lib.llama_sampler_apply(self._chain, ctypes.byref(candidates))
        return candidates.data[candidates.selected].id

    def free(self) -> None:
        self._lib.llama_sampler_free(self._chain)
        if self._grammar is not None:
            self._lib.llama_sampler_free(self._grammar)


def _leaders(logits) -> list[tuple[int, bool]]:
    """For each row of `logits` (a numpy view of llama.cpp's buffer): its likeliest token, and whether that
    leads the runner-up by CLEAR_LEAD."""
    import numpy as np

    rows = np.arange(len(logits))
    top = logits.argmax(axis=1)
    best = logits[rows, top]
    logits[rows, top] = -np.inf  # the runner-up, without sorting 151,000 logits (restored at once)
    second = logits.max(axis=1)
    logits[rows, top] = best
    return list(zip(top.tolist(), (best - second >= CLEAR_LEAD).tolist()))


def _chain(lib, model, params: SamplingParams):
    chain = lib.llama_sampler_chain_init(lib.llama_sampler_chain_default_params())
    samplers = [lib.llama_sampler_init_penalties(model.n_vocab(), PENALTY_LAST_N, params.repeat_penalty,
                                                 params.frequency_penalty, params.presence_penalty)]
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

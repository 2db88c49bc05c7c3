"""A draft model: a small model with the target's vocabulary (Qwen2.5-Coder-0.5B for the 1.5B) that guesses
the target's next tokens, for the decode loop (engine/llama_batch.py) to verify in one step of the target.

Where no n-gram of the answer's past predicts what comes next (engine/speculation.py), a model a third of the
size often does: it generates a few tokens greedily, one by one, each costing under half of one of the
target's on a CPU (16 against 36 ms for the 0.5B and the 1.5B), and the target then checks them all in one
batch. Drafting stops where the draft model is unsure
(its likeliest token under MIN_CONFIDENCE), as llama-server's does: past there, most guesses are wasted.

A draft is a guess made with certainty (the draft model's argmax), so the verifier that compares the target's
own samples with it keeps the target's distribution exactly, as for n-gram drafts.

The draft model's context mirrors the decode loop's slots: sequence id N holds what slot N's conversation
reads, so a conversation's next turn and its next draft read only what is new to the draft model too.
"""

from __future__ import annotations

import ctypes

import numpy as np

from qwend.engine.base import common_prefix
from qwend.engine.llama_slots import unified_context
from qwend.errors import BackendError

MIN_CONFIDENCE = 0.75  # the draft model's probability of its own guess, under which drafting stops
MAX_DRAFT = 16  # tokens a draft model guesses at most per step (llama-server's --draft-max default)


class DraftModel:
    """Greedy drafts from a small model for the sequences of one decode loop; used by its thread only."""

    def __init__(self, llama, target, *, n_ctx: int, n_batch: int, sequences: int, threads: int) -> None:
        """`llama`: the draft model's llama-cpp-python Llama (closed with this); `target`: the LlamaModel it
        drafts for; `sequences`: the decode loop's slots, one sequence id each."""
        import llama_cpp

        self._lib = llama_cpp
        self.llama = llama
        model = llama._model
        refusal = _incompatible(llama_cpp, model, target)
        if refusal:
            raise BackendError(f"the draft model cannot draft for this model: {refusal}")
        self._ctx = unified_context(llama_cpp, model, n_ctx=n_ctx, n_batch=n_batch, sequences=sequences,
                                    threads=threads)
        if self._ctx is None:
            raise BackendError(f"llama.cpp could not create the draft model's context of {n_ctx} tokens")
        self._memory = llama_cpp.llama_get_memory(self._ctx)
        self._n_vocab = llama_cpp.llama_vocab_n_tokens(model.vocab)
        self._n_batch = n_batch
        self._batch = llama_cpp.llama_batch_init(n_batch, 0, 1)
        self._held: list[list[int]] = [[] for _ in range(sequences)]  # what each sequence's cells hold

    def draft(self, seq_id: int, tokens: list[int], limit: int) -> list[int]:
        """Up to `limit` tokens the draft model expects after `tokens` (all that sequence `seq_id` has: its
        prompt and answer so far), fewer where it is unsure."""
        if limit <= 0 or not self._read(seq_id, tokens):
            return []
        guesses: list[int] = []
        while True:
            token, confidence = self._likeliest()
            if confidence < MIN_CONFIDENCE:
                break
            guesses.append(token)
            if len(guesses) == limit or not self._decode(seq_id, [token]):
                break
        return guesses

    def _read(self, seq_id: int, tokens: list[int]) -> bool:
        """Make the sequence's cells hold `tokens`, reading what they lack, and leave the logits after its
        last token; False when the context has no room even after emptying the other sequences."""
        held = self._held[seq_id]
        keep = min(common_prefix(held, tokens), len(tokens) - 1)  # the last token is read again for its logits
        self._lib.llama_memory_seq_rm(self._memory, seq_id, keep, -1)
        del held[keep:]
        for start in range(keep, len(tokens), self._n_batch):
            if not self._decode(seq_id, tokens[start: start + self._n_batch]):
                return False
        return True

    def _decode(self, seq_id: int, tokens: list[int]) -> bool:
        """Read `tokens` after what the sequence holds, logits on the last; when the cells run out, the other
        sequences are emptied (they are read again when next drafted for) and it tries once more."""
        lib, batch, held = self._lib, self._batch, self._held[seq_id]
        for attempt in range(2):
            batch.n_tokens = len(tokens)
            for i, token in enumerate(tokens):
                batch.token[i], batch.pos[i], batch.n_seq_id[i] = token, len(held) + i, 1
                batch.seq_id[i][0] = seq_id
                batch.logits[i] = i == len(tokens) - 1
            status = lib.llama_decode(self._ctx, batch)
            if status == 0:
                held += tokens
                return True
            if status != 1 or attempt:
                break
            for other, cells in enumerate(self._held):
                if other != seq_id and cells:
                    lib.llama_memory_seq_rm(self._memory, other, -1, -1)
                    cells.clear()
        # a failed step leaves the cache as it was; the sequence is read again from scratch next time
        lib.llama_memory_seq_rm(self._memory, seq_id, -1, -1)
        held.clear()
        return False

    def _likeliest(self) -> tuple[int, float]:
        """The token the last decoded logits favour, and its probability."""
        logits = np.ctypeslib.as_array(self._lib.llama_get_logits_ith(self._ctx, -1), shape=(self._n_vocab,))
        token = int(logits.argmax())
        return token, float(1.0 / np.exp(logits - logits[token]).sum())

    def close(self) -> None:
        self._lib.llama_batch_free(self._batch)
        self._lib.llama_free(self._ctx)
        self.llama.close()


def _incompatible(lib, model, target) -> str | None:
    """Why `model`'s guesses would not be the target's tokens (None when they would): llama-server's checks,
    the same vocabulary type, size, special tokens and token texts."""
    if lib.llama_model_is_recurrent(model.model) or lib.llama_model_is_hybrid(model.model):
        return "a recurrent model cannot drop the positions of rejected guesses"
    vocabs = model.vocab, target.vocab
    if lib.llama_vocab_type(vocabs[0]) != lib.llama_vocab_type(vocabs[1]):
        return "its tokenizer is of another kind"
    sizes = [lib.llama_vocab_n_tokens(v) for v in vocabs]
    if sizes[0] != sizes[1]:
        return f"its vocabulary has {sizes[0]} tokens, this model's {sizes[1]}"
    for special in (lib.llama_vocab_bos, lib.llama_vocab_eos):
        if special(vocabs[0]) != special(vocabs[1]):
            return "its special tokens differ"
    buffer = [ctypes.create_string_buffer(256) for _ in vocabs]
    for token in range(0, sizes[0], 97):
        pieces = [buffer[i].raw[:lib.llama_token_to_piece(v, token, buffer[i], 256, 0, True)]
                  for i, v in enumerate(vocabs)]
        if pieces[0] != pieces[1]:
            return f"token {token} is {pieces[0]!r} in it and {pieces[1]!r} in this model"
    return None

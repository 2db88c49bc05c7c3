"""The decode loop's slots (engine/llama_batch.py: llama.cpp sequence ids whose KV cells stay after their answer
ends) and their states in the saved tiers (engine/kv_tiers.py): a slot's cells are kept there before they go,
and a prompt that starts like a saved state has it restored instead of read again."""

from __future__ import annotations

import ctypes
from dataclasses import dataclass, field
from typing import Any

from qwend.engine.base import common_prefix
from qwend.engine.kv_tiers import KvTiers, SavedState

MIN_SAVED_TOKENS = 64  # shorter states are read again faster than they are saved and found


def recurrent(lib, model) -> bool:
    """Whether the model keeps a recurrent state (Mamba, RWKV; hybrids such as Qwen3.5 and Qwen3-Next beside
    their attention layers): it holds the sequence up to its last token only, so a sequence cannot be cut back
    to a shorter start (llama.cpp refuses, or drops the state whole), only emptied or continued."""
    return bool(lib.llama_model_is_recurrent(model.model) or lib.llama_model_is_hybrid(model.model))


def unified_context(lib, model, *, n_ctx: int, n_batch: int, sequences: int, threads: int):
    """A llama.cpp context for `model` whose `sequences` share one pool of KV cells (they share prefixes and
    take what they need); None when llama.cpp cannot make it."""
    params = lib.llama_context_default_params()
    params.n_ctx = n_ctx
    params.n_batch = params.n_ubatch = n_batch
    params.n_seq_max = sequences
    params.kv_unified = True
    params.n_threads = params.n_threads_batch = threads
    params.no_perf = True
    return lib.llama_init_from_model(model.model, params) or None


@dataclass(eq=False)
class Slot:
    seq_id: int
    tokens: list[int] = field(default_factory=list)  # what its KV cells hold, positions 0..len-1
    used: float = 0.0  # when its last sequence ended (least recently used goes first)
    stream: Any = None  # the TokenStream it serves (None: idle)


class SlotStates:
    """Moves the slots' states between the context and the saved tiers (`saved`; None: states are dropped)."""

    def __init__(
        self, lib, ctx, slots: list[Slot], *, scratch: int, saved: KvTiers | None, whole_only: bool = False,
    ) -> None:
        self._lib, self._ctx, self._memory = lib, ctx, lib.llama_get_memory(ctx)
        self._slots = slots
        self._scratch = scratch  # a sequence id no slot uses
        self.saved = saved
        self.whole_only = whole_only  # a slot's state is kept or dropped whole (a recurrent model's)

    def trim_idle(self, running: list[list[int]]) -> None:
        """Idle slots keep only what they share with a running prompt (a system prompt, tools), their whole
        state kept in the saved tiers for their next turn: a token's attention spans every cell the context
        holds, so idle conversations slowed reading new prompts (16 of them: 0.6x llama-server's speed,
        which keeps 8). Shared cells are held by reference and cost nothing more."""
        for slot in self._slots:
            if slot.stream is None and slot.tokens:
                keep = max((common_prefix(slot.tokens, prompt) for prompt in running), default=0)
                if self.whole_only and keep < len(slot.tokens):
                    keep = 0
                if len(slot.tokens) - keep >= MIN_SAVED_TOKENS:  # (a short one stays: it costs little)
                    self.save(slot)
                    self._lib.llama_memory_seq_rm(self._memory, slot.seq_id, keep, -1)
                    slot.tokens = slot.tokens[:keep]

    def evict(self, spare: Slot | None = None) -> bool:
        """Empty the least recently used idle slot that holds cells (but `spare`), saving its state first;
        False when there is none."""
        idle = [slot for slot in self._slots if slot.stream is None and slot.tokens and slot is not spare]
        if not idle:
            return False
        slot = min(idle, key=lambda s: s.used)
        self.save(slot)
        self._lib.llama_memory_seq_rm(self._memory, slot.seq_id, -1, -1)
        slot.tokens = []
        return True

    def save(self, slot: Slot, length: int | None = None, pinned: bool = False) -> None:
        """Keep the state of the slot's first `length` tokens (all by default) in the saved tiers."""
        tokens = slot.tokens[:length]
        if self.saved is None or len(tokens) < MIN_SAVED_TOKENS or (not pinned and self.saved.covers(tokens)):
            return
        if self.whole_only and len(tokens) < len(slot.tokens):
            return  # (a recurrent state holds the slot's last token only)
        lib, seq_id = self._lib, slot.seq_id
        if len(tokens) < len(slot.tokens):  # a copy of the part to save, in the scratch sequence (shares cells)
            lib.llama_memory_seq_rm(self._memory, self._scratch, -1, -1)
            lib.llama_memory_seq_cp(self._memory, slot.seq_id, self._scratch, 0, len(tokens))
            seq_id = self._scratch
        data = bytearray(lib.llama_state_seq_get_size(self._ctx, seq_id))
        written = lib.llama_state_seq_get_data(self._ctx, _bytes(data), len(data), seq_id)
        if seq_id == self._scratch:
            lib.llama_memory_seq_rm(self._memory, self._scratch, -1, -1)
        if written:
            self.saved.put(tokens, data[:written] if written < len(data) else data, pinned=pinned)

    def restore(self, saved: SavedState, slot: Slot) -> None:
        """Load a saved state into an idle slot in place of what it held, emptying other slots when the cells
        run short."""
        lib, data = self._lib, self.saved.read(saved)
        if data is None:
            return
        lib.llama_memory_seq_rm(self._memory, slot.seq_id, -1, -1)
        slot.tokens = []
        while not lib.llama_state_seq_set_data(self._ctx, _bytes(data), len(data), slot.seq_id):
            lib.llama_memory_seq_rm(self._memory, slot.seq_id, -1, -1)
            if not self.evict(spare=slot):
                return
        slot.tokens = list(saved.tokens)


def _bytes(data: bytearray):
    """A bytearray as the uint8 array llama.cpp's state calls take, without copying it."""
    return (ctypes.c_uint8 * len(data)).from_buffer(data)
"""Continuous batching for llama.cpp: one context holding many sequences, advanced together by one decode
loop in its own thread.

Each step is one `llama_decode` over a batch holding the next token of every sequence that is generating
plus chunks of the prompts still being read (chunked prefill, taken round-robin, so a long prompt never
stalls the others). Each sequence samples on its own logits with its own native sampler chain. A sequence
whose recent tokens occurred before has the tokens that followed them drafted (engine/speculation.py): they
go into the same step, and as many as the model's own samples confirm are kept.

Sequences run in slots (llama.cpp sequence ids), more slots than may run at once. A slot keeps its KV cells
after its sequence ends, so the next prompt that starts the same way (the next turn of a conversation, the
same system prompt and tools) reads only what is new. A prefix held by another slot, busy or not, is shared
by reference: on the unified KV cache `llama_memory_seq_cp` costs no memory. When the cache is full, the
least recently used idle slots are emptied; with `saved` tiers (engine/kv_tiers.py) their state is kept there
first, and a prompt that starts like a saved state has it restored instead of read again.
"""

from __future__ import annotations

import itertools
import math
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass

from qwend.engine.base import common_prefix
from qwend.engine.draft_model import MAX_DRAFT as DRAFT_MODEL_MAX
from qwend.engine.draft_model import DraftModel
from qwend.engine.kv_tiers import KvTiers
from qwend.engine.llama_sampler import Sampler, token_logprob
from qwend.engine.llama_slots import Slot, SlotStates, recurrent, unified_context
from qwend.engine.llama_stream import END, TokenStream
from qwend.errors import BackendError
from qwend.types import SamplingParams

READ_AHEAD = 2  # tokens a sequence may run ahead of its reader
# a slot's tokens past a prompt's common start that may be dropped to continue its conversation: those read
# ahead past where its reader stopped, and an answer's last word tokenized otherwise when sent back
DISPOSABLE_TOKENS = READ_AHEAD + 2
PREFILL_WHILE_DECODING = 128  # prompt tokens per step while others generate: a step stays short
# Drafts only while at most DRAFTING_STREAMS sequences generate, DRAFTS_PER_STEP tokens a step among them:
# a drafted token costs about as much compute as a prompt token (a row of logits included), and a step of
# several sequences already reads the weights once for all of them, so there drafts only add work (8
# open-ended answers at once: 64 tok/s with drafts against 63-73 without)
DRAFTING_STREAMS = 2
DRAFTS_PER_STEP = 48
MIN_RESTORED_GAIN = 32  # tokens a saved state must add to what the context holds to be worth restoring

@dataclass
class _Entry:
    stream: TokenStream
    tokens: list[int]
    logits: bool  # sample after this entry (its last token ends the prompt, or it is a generated token)
    room: int = 0  # a generated token's: how many drafted tokens may follow it in the step
    drafted: int = 0  # its last tokens are a draft: sampled after each, kept while the samples confirm them
    by_model: bool = False  # the draft model's draft, not an n-gram one


class BatchDecoder:
    def __init__(
        self, model, *, n_ctx: int, n_batch: int, parallel: int, slots: int, threads: int, reuse: bool = True,
        saved: KvTiers | None = None, draft_max: int = 0, draft_model: DraftModel | None = None,
    ) -> None:
        """`parallel` sequences run at once; `slots` (at least as many) keep their KV cells afterwards for
        prompts that share their start (unless `reuse` is off), and `saved` keeps the states they let go.
        `draft_max`: tokens drafted at most per step for a sequence whose request does not say (0: none);
        `draft_model` drafts where the n-grams of the sequence's past predict nothing (closed with this)."""
        import llama_cpp

        self._lib = llama_cpp
        self._model = model  # llama-cpp-python's LlamaModel (it outlives this decoder)
        slots = max(slots, parallel)
        # the last sequence id is scratch space for saving part of a slot
        self._ctx = unified_context(llama_cpp, model, n_ctx=n_ctx, n_batch=n_batch, sequences=slots + 1,
                                    threads=threads)
        if self._ctx is None:
            raise BackendError(f"llama.cpp could not create a context of {n_ctx} tokens with {slots} sequences")
        self.n_ctx = llama_cpp.llama_n_ctx(self._ctx)
        self.n_batch = n_batch
        self.parallel = parallel
        self.reuse = reuse
        self.saved = saved if reuse else None
        # a recurrent state holds only its last position, so a sequence is never cut back: its conversation goes
        # on from where its slot ends or from a state saved where its prompt ended (`_step`), and it is never
        # drafted for (a rejected draft's positions cannot be dropped)
        self.recurrent = recurrent(llama_cpp, model)
        self.drafts = not self.recurrent
        self.draft_max = draft_max if self.drafts else 0
        self.draft_model = draft_model if self.drafts else None
        if draft_model is not None and self.draft_model is None:
            draft_model.close()
        self._memory = llama_cpp.llama_get_memory(self._ctx)
        self._batch = llama_cpp.llama_batch_init(n_batch, 0, 1)
        self._slots = [Slot(seq_id) for seq_id in range(slots)]
        self._states = SlotStates(llama_cpp, self._ctx, self._slots, scratch=slots, saved=self.saved,
                                  whole_only=self.recurrent)
        self._opening: list[TokenStream] = []
        self._running: list[TokenStream] = []
        self._turn = itertools.count()  # rotates which prompt reads first
        self._cond = threading.Condition()
        self._stopping = False
        self._thread = threading.Thread(target=self._loop, name="llama.cpp decode", daemon=True)
        self._thread.start()

    # -- called by readers' threads

    def open(self, prompt: Sequence[int], params: SamplingParams, rules: str | None, pin: bool = False) -> TokenStream:
        """Start generating after `prompt` (at least one token), sampling as `params` say, under the GBNF
        `rules` when given. `pin` keeps the prompt's state in the saved tiers for good."""
        draft_max = params.draft_max if params.draft_max is not None and self.drafts else self.draft_max
        stream = TokenStream(self, prompt, Sampler(self._model, params, rules), pin, params.logprobs, draft_max)
        with self._cond:
            if self._stopping:
                stream.sampler.free()
                raise BackendError("the model was unloaded")
            self._opening.append(stream)
            self._cond.notify()
        return stream

    def close_stream(self, stream: TokenStream) -> None:
        with self._cond:
            stream.closed = True
            self._cond.notify()

    def wake(self) -> None:
        with self._cond:
            self._cond.notify()

    def close(self) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify()
        self._thread.join()
        for stream in self._opening + self._running:
            stream.emit(BackendError("the model was unloaded"))
            stream.sampler.free()
        if self.saved is not None:  # what the context holds outlives it on disk
            for slot in sorted(self._slots, key=lambda slot: slot.used, reverse=True):
                self._states.save(slot)
            self.saved.flush()
        self._lib.llama_batch_free(self._batch)
        self._lib.llama_free(self._ctx)
        if self.draft_model is not None:
            self.draft_model.close()

    # -- the decode loop's thread

    def _loop(self) -> None:
        while True:
            with self._cond:
                while not self._stopping and not self._ready():
                    self._cond.wait()
                if self._stopping:
                    return
                self._retire()
                self._place()
                entries = self._plan()
            for entry in entries:  # (the draft model's guesses take a while: not under the lock)
                if entry.room:
                    self._draft(entry)
            if entries:
                self._step(entries)

    def _ready(self) -> bool:
        return any(s.closed or s.pending or self._wants_token(s) for s in self._running) or (
            bool(self._opening) and (any(s.closed for s in self._opening) or self._can_place()))

    def _can_place(self) -> bool:
        return len(self._running) < self.parallel and self._free_slot() is not None

    def _wants_token(self, stream: TokenStream) -> bool:
        # after a confirmed draft, the next step runs while the reader takes the burst of tokens it got
        return stream.next_token is not None and not stream.ended and stream.unread < READ_AHEAD + stream.burst - 1

    def _free_slot(self) -> Slot | None:
        return next((slot for slot in self._slots if slot.stream is None), None)

    def _retire(self) -> None:
        """Let go of closed streams; their slots keep the KV cells for the next prompt that shares them."""
        for stream in [s for s in self._opening + self._running if s.closed]:
            if stream in self._opening:
                self._opening.remove(stream)
            else:
                self._running.remove(stream)
                self._forget_unread(stream)
                stream.slot.stream = None
                stream.slot.used = time.monotonic()
                if stream.pin and self.saved is not None and stream.slot.tokens[:len(stream.prompt)] == stream.prompt:
                    self._states.save(stream.slot, len(stream.prompt), pinned=True)
            stream.sampler.free()
            stream.emit(END)

    def _forget_unread(self, stream: TokenStream) -> None:
        """Drop the cells of tokens generated past what the closed stream's reader took (a draft confirmed
        beyond max_tokens or a stop string): its conversation's next turn goes on from what was read."""
        read = len(stream.prompt) + stream.taken
        if len(stream.slot.tokens) > read + READ_AHEAD and not self.recurrent:
            self._lib.llama_memory_seq_rm(self._memory, stream.slot.seq_id, read, -1)
            del stream.slot.tokens[read:]

    def _place(self) -> None:
        """Give waiting streams a slot, keeping or sharing the longest cached prefix of their prompt, or
        restoring a longer one from the saved tiers; then idle conversations leave the context."""
        placed = bool(self._opening) and self._can_place()
        while self._opening and self._can_place():
            stream = self._opening.pop(0)
            prompt = stream.prompt
            prefixes = self._prefixes(prompt)
            slot = self._slot_for(prefixes)
            if len(slot.tokens) - prefixes[slot] > DISPOSABLE_TOKENS:
                self._states.save(slot)  # another conversation's cells: kept in the tiers before they go
            saved, restorable = self.saved.best(prompt) if self.saved is not None else (None, 0)
            if restorable >= max(prefixes.values()) + MIN_RESTORED_GAIN:
                self._states.restore(saved, slot)
                prefixes = self._prefixes(prompt)  # the slot changed, and others may have been emptied for room
            source = slot if self.recurrent else max(self._slots, key=prefixes.__getitem__)
            keep, shared = prefixes[slot], prefixes[source]
            reuse = min(max(keep, shared), len(prompt) - 1) if self.reuse else 0  # the last token is read again
            if shared > keep and reuse > keep:
                self._lib.llama_memory_seq_rm(self._memory, slot.seq_id, -1, -1)
                self._lib.llama_memory_seq_cp(self._memory, source.seq_id, slot.seq_id, 0, reuse)
            else:
                self._lib.llama_memory_seq_rm(self._memory, slot.seq_id, reuse, -1)
            slot.tokens = prompt[:reuse]
            slot.stream = stream
            stream.place(slot, reuse)
            self._running.append(stream)
        if placed and self.saved is not None:
            self._states.trim_idle([stream.prompt for stream in self._running])

    def _prefixes(self, prompt: list[int]) -> dict[Slot, int]:
        """How many of the prompt's first tokens each slot holds (for a recurrent model: all of its tokens, and
        the prompt goes on past them, or none)."""
        shared = {slot: common_prefix(slot.tokens, prompt) for slot in self._slots}
        if self.recurrent:
            return {slot: n if n == len(slot.tokens) < len(prompt) else 0 for slot, n in shared.items()}
        return shared

    def _slot_for(self, prefixes: dict[Slot, int]) -> Slot:
        """The free slot that continues the prompt's conversation (losing at most a few tokens past their
        common start, `prefixes[slot]`), else the least recently used one: another conversation's cells stay
        for its next turn."""
        free = [slot for slot in self._slots if slot.stream is None]
        continuing = [slot for slot in free if len(slot.tokens) - prefixes[slot] <= DISPOSABLE_TOKENS]
        if continuing:
            return max(continuing, key=prefixes.__getitem__)
        return min(free, key=lambda slot: slot.used)

    def _plan(self) -> list[_Entry]:
        """This step's batch: one token for each generating sequence, then prompt chunks round-robin."""
        generating = [stream for stream in self._running if self._wants_token(stream)]
        entries = []
        for stream in generating:
            # drafts share what the batch has room for, and the window: the last cell stays for the answer
            room = min((self.n_batch - len(generating)) // len(generating), DRAFTS_PER_STEP // len(generating),
                       self.n_ctx - len(stream.slot.tokens) - 2)
            drafts = stream.drafter and not stream.undrafted and len(generating) <= DRAFTING_STREAMS
            stream.undrafted = False
            entries.append(_Entry(stream, [stream.next_token], True, room if drafts else 0))
            stream.next_token = None
        reading = [s for s in self._running if s.pending]
        budget = self.n_batch - sum(len(entry.tokens) + entry.room for entry in entries)
        if entries:
            budget = min(budget, PREFILL_WHILE_DECODING)
        short = [len(s.pending) for s in reading if len(s.pending) <= PREFILL_WHILE_DECODING]
        if short and len(short) < len(reading):
            # a short prompt beside a long one: short steps until it is read, so its answer starts after about
            # one chunk, not after the long prompt's next full ones (5 s behind a 3,000-token prompt here)
            budget = min(budget, sum(short) + PREFILL_WHILE_DECODING)
        if reading:
            first = next(self._turn) % len(reading)
            for i, stream in enumerate(reading[first:] + reading[:first]):
                # the prompt's last token is read in a step of its own, as when the rest was cached: a repeated
                # greedy prompt then gets the same logits (llama.cpp's kernels round by batch size)
                readable = len(stream.pending) - 1 or 1
                take = min(readable, math.ceil(budget / (len(reading) - i)))
                if take <= 0:
                    break
                chunk, stream.pending = stream.pending[:take], stream.pending[take:]
                entries.append(_Entry(stream, chunk, not stream.pending))
                budget -= take
        return entries

    def _draft(self, entry: _Entry) -> None:
        """Guesses to verify after the entry's token: what followed the sequence's last n-gram before, else
        the draft model's."""
        stream = entry.stream
        draft = stream.drafter.draft(entry.room)
        if not draft and self.draft_model is not None and stream.model_drafts.ready():
            limit = min(entry.room, stream.drafter.max_draft, DRAFT_MODEL_MAX)
            draft = self.draft_model.draft(stream.slot.seq_id, stream.slot.tokens + entry.tokens, limit)
            entry.by_model = True
            if not draft:  # unsure: its next guesses wait a while (it reads what it missed in one step then)
                stream.model_drafts.fared(0)
        entry.tokens += draft
        entry.drafted = len(draft)

    def _step(self, entries: list[_Entry]) -> None:
        lib, batch = self._lib, self._batch
        while True:
            batch.n_tokens = 0
            for entry in entries:
                slot = entry.stream.slot
                for i, token in enumerate(entry.tokens):
                    n = batch.n_tokens
                    batch.token[n], batch.pos[n], batch.n_seq_id[n] = token, len(slot.tokens) + i, 1
                    batch.seq_id[n][0] = slot.seq_id
                    batch.logits[n] = entry.logits and i >= len(entry.tokens) - 1 - entry.drafted
                    batch.n_tokens += 1
            status = lib.llama_decode(self._ctx, batch)
            if status == 0:
                break
            if status == 1 and self._states.evict():
                continue  # the cache was full: emptied an idle slot, try again
            failed = entries.pop() if status == 1 else None  # no room even so: the newest entry gives way
            for entry in [failed] if failed else list(entries):
                self._fail(entry.stream, BackendError(
                    "the context window is full with other conversations; retry shortly" if status == 1
                    else f"llama.cpp decode failed (status {status})"))
            if not entries or status != 1:
                return
        index = 0
        for entry in entries:
            start, index = index, index + len(entry.tokens)
            if not entry.logits:
                entry.stream.slot.tokens += entry.tokens
                entry.stream.read_more()
                if self.recurrent and len(entry.stream.pending) == 1:
                    # all but the prompt's last token read: the point its conversation's next turn goes on from,
                    # should the answer not come back token for token
                    self._states.save(entry.stream.slot)
            elif not entry.drafted:
                entry.stream.slot.tokens += entry.tokens
                entry.stream.burst = 1
                self._sample(entry.stream, index - 1)
            else:
                self._verify(entry, start)

    def _sample(self, stream: TokenStream, index: int, token: int | None = None) -> int:
        """Sample the stream's next token from the batch's logits at `index` (unless the sampler's `token` there
        is known) and hand it to its reader."""
        if token is None:
            token = stream.sampler.sample(self._ctx, index)
        if stream.logprobs is not None:  # before the token is emitted: its reader takes both
            stream._logprobs.append(token_logprob(self._ctx, self._model, index, token, stream.logprobs))
        stream.ended = self._lib.llama_vocab_is_eog(self._model.vocab, token)
        stream.next_token = token
        if stream.drafter is not None:
            stream.drafter.extend((token,))
        stream.emit(token)
        return token

    def _verify(self, entry: _Entry, start: int) -> None:
        """Sample after the entry's token and each drafted one, in order, while each sample equals the draft's
        next token; the cells of the drafted tokens past the first miss are dropped. A greedy answer stops at
        a close race (Sampler.clear): its token is read again alone, and so decided as it would be without
        drafts."""
        stream, slot = entry.stream, entry.stream.slot
        kept, unsure = 0, False
        picks = stream.sampler.picks(self._ctx, start, len(entry.tokens))
        for i in range(len(entry.tokens)):
            # (a sampled answer takes whatever it draws; only a greedy one can be unsure)
            token, clear = picks[i] if picks else (None, not stream.sampler.greedy or
                                                   stream.sampler.clear(self._ctx, start + i))
            if not clear:
                unsure = True
                break
            token = self._sample(stream, start + i, token)
            if stream.ended or i == entry.drafted or token != entry.tokens[i + 1]:
                break
            kept += 1
        slot.tokens += entry.tokens[:kept if unsure else kept + 1]
        stream.burst = kept + (not unsure)
        self._lib.llama_memory_seq_rm(self._memory, slot.seq_id, len(slot.tokens), -1)
        if unsure:  # read again alone, without a draft
            stream.next_token, stream.undrafted = entry.tokens[kept], True
        stream.drafted += entry.drafted
        stream.accepted += kept
        if entry.by_model:
            stream.model_drafts.fared(kept)
        else:
            stream.drafter.accepted(entry.drafted, kept)

    def _fail(self, stream: TokenStream, error: BackendError) -> None:
        """End a stream with an error (a failed decode left the cache as it was before it)."""
        stream.pending, stream.next_token, stream.ended = [], None, True
        stream.emit(error)

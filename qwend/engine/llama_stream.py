"""One sequence's sampled tokens, handed from the batch decoder's loop (engine/llama_batch.py) to the thread
that reads them, with what the loop keeps about the sequence while it runs."""

from __future__ import annotations

import queue
import threading
from collections import deque
from collections.abc import Sequence
from typing import Any, Protocol

from qwend.engine.speculation import Backoff, NgramDrafter
from qwend.types import PromptProgress, Speculated, TokenLogprob


class DecodeLoop(Protocol):
    """What a stream asks of the loop that fills it (BatchDecoder)."""

    def wake(self) -> None: ...

    def close_stream(self, stream: TokenStream) -> None: ...

END = object()


class TokenStream:
    """One sequence's sampled tokens, read by one thread. `cached` (known once the decode loop has placed
    the sequence) counts the prompt tokens whose KV cells were reused."""

    def __init__(self, decoder: DecodeLoop, prompt: Sequence[int], sampler, pin: bool = False,
                 logprobs: int | None = None, draft_max: int = 0) -> None:
        self.prompt = list(prompt)
        # guesses of its next tokens from its own past, verified in the decode steps (None: not drafted)
        self.drafter = NgramDrafter(self.prompt, draft_max) if draft_max > 0 else None
        # when the draft model, if any, guesses for it next: a guess costs a step of that model, and its token
        # read again when it resumes, so a draft must keep two tokens to pay
        self.model_drafts = Backoff(worth=2)
        self.drafted = self.accepted = 0  # draft tokens tried and kept, as far as the decode loop got
        self.undrafted = False  # its next step reads its token alone (engine/llama_batch.py _verify)
        self.taken = 0  # tokens its reader took
        self.burst = 1  # tokens its last step gave
        self.logprobs = logprobs  # alternatives to report with each token's log probability (None: off)
        self._logprobs: deque[TokenLogprob] = deque()  # the decode loop's, for tokens not yet read
        self.sampler = sampler  # a Sampler, freed by the decode loop
        self.pin = pin  # keep the prompt's state pinned in the saved tiers once read
        self._decoder = decoder
        self._out: queue.SimpleQueue = queue.SimpleQueue()
        self._placed = threading.Event()
        self._cached = 0
        self.closed = False
        # decode-loop state
        self.slot: Any = None  # the decode loop's slot (engine/llama_batch.py)
        self.pending: list[int] = []  # prompt tokens not yet read
        self.next_token: int | None = None  # sampled, not yet decoded
        self.ended = False  # sampled an end-of-generation token

    @property
    def cached(self) -> int:
        self._placed.wait()
        return self._cached

    def __iter__(self) -> TokenStream:
        return self

    def __next__(self) -> int:
        item = self._out.get()
        self._decoder.wake()  # it may have waited for this reader to catch up
        if item is END:
            self._out.put(END)
            raise StopIteration
        if isinstance(item, BaseException):
            raise item
        if isinstance(item, PromptProgress):
            return item  # not a token: its reader passes it on
        self.taken += 1
        return item

    def close(self) -> None:
        self._decoder.close_stream(self)

    @property
    def speculated(self) -> Speculated:
        return Speculated(self.drafted, self.accepted)

    def take_logprob(self) -> TokenLogprob | None:
        """The log probability of the token just read (when asked for)."""
        return self._logprobs.popleft() if self._logprobs else None

    # called by the decode loop
    def place(self, slot: Any, cached: int) -> None:
        self.slot, self._cached = slot, cached
        self.pending = self.prompt[cached:]
        self._placed.set()

    def emit(self, item) -> None:
        self._out.put(item)

    def read_more(self) -> None:
        """A chunk of its prompt was read, and more is to come: tell its reader how far it got."""
        self._out.put(PromptProgress(len(self.prompt) - len(self.pending), len(self.prompt)))

    @property
    def unread(self) -> int:
        return self._out.qsize()

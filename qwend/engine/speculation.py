"""Prompt-lookup drafting (n-gram speculation): guesses of a sequence's next tokens, taken from its own past.

An answer that copies from its prompt (a code edit, a rename, a quoted passage, a JSON echo) repeats long
stretches of tokens it has seen. Where the sequence's last NGRAM tokens occurred before, the tokens that
followed them then are the draft; the decode loop verifies all of them in one step (engine/llama_batch.py),
where reading several tokens costs far less than generating them one by one.

A draft is only a guess: each position is sampled from the model's own logits as usual, and a drafted token
counts only where the sampled one equals it. So a greedy answer is the answer without drafts, and a sampled
one keeps the model's distribution (for a draft of one certain guess per position, sampling and comparing is
exactly speculative rejection sampling: the guess is kept with probability p(guess), and a rejected position
is sampled from p without it).

Drafts cost where they are wrong: each drafted position is a row of logits and its share of the step. The
length adapts to what was accepted (twice the last accepted run, a little over it), a draft that kept nothing
pauses drafting for a while (Backoff), and the long NGRAM keeps chance matches in prose out: text that does not
repeat its past drafts rarely and briefly (the 1.5B's open-ended answers ran at 0.9x without the pauses).
"""

from __future__ import annotations

from collections.abc import Sequence

NGRAMS = (8, 4)  # tokens that must match before what followed them is drafted: the longest that did
MAX_DRAFT = 48  # tokens drafted at most per step (llama-server's ngram-simple drafts 48)
MIN_DRAFT = 2  # the length a draft falls back to after a miss
MAX_PAUSE = 16  # steps without drafts at most after drafts that kept nothing


class Backoff:
    """When to draft again after a miss: each draft that kept nothing pauses drafting for twice as many steps
    as the one before (1, 3, 7, 15, then MAX_PAUSE), a draft that kept `worth` tokens ends the pauses."""

    def __init__(self, worth: int = 1) -> None:
        self.worth = worth  # tokens a draft must keep to count as a hit
        self._pause = 0  # steps the last miss paused for
        self._waiting = 0  # steps left to wait

    def ready(self) -> bool:
        """Whether to draft this step (asked once a step)."""
        if self._waiting:
            self._waiting -= 1
            return False
        return True

    def fared(self, kept: int) -> None:
        self._pause = 0 if kept >= self.worth else min(MAX_PAUSE, 2 * self._pause + 1)
        self._waiting = self._pause


class NgramDrafter:
    """Drafts for one sequence: `extend` it with every token the sequence gets (prompt and answer), ask
    `draft`, and tell `accepted` how many of a draft's tokens held."""

    def __init__(self, tokens: Sequence[int] = (), max_draft: int = MAX_DRAFT,
                 ngrams: Sequence[int] = NGRAMS) -> None:
        self.max_draft = max_draft
        self.ngrams = tuple(sorted(ngrams, reverse=True))
        self.tokens: list[int] = []
        # for each n, each n-gram seen -> where the token after its latest occurrence is (never the end)
        self._after: dict[int, dict[tuple[int, ...], int]] = {n: {} for n in self.ngrams}
        self._length = MIN_DRAFT  # the next draft's length: short until drafts hold (`accepted`)
        self._backoff = Backoff()
        self.extend(tokens)

    def extend(self, tokens: Sequence[int]) -> None:
        seen = self.tokens
        for token in tokens:
            for n, after in self._after.items():
                if len(seen) >= n:  # the n-gram ending at the last token is now followed by `token`
                    after[tuple(seen[-n:])] = len(seen)
            seen.append(token)

    def draft(self, limit: int) -> list[int]:
        """Up to `limit` tokens that followed the latest earlier occurrence of the last n tokens, for the
        longest n that occurred before."""
        limit = min(limit, self._length)
        if limit <= 0 or not self._backoff.ready():
            return []
        for n, after in self._after.items():
            start = after.get(tuple(self.tokens[-n:])) if len(self.tokens) >= n else None
            if start is not None:
                return self.tokens[start: start + limit]
        return []

    def accepted(self, drafted: int, accepted: int) -> None:
        """How a draft of `drafted` tokens fared: the next one is about twice the run that held."""
        if drafted:
            self._length = max(MIN_DRAFT, min(self.max_draft, 2 * accepted + MIN_DRAFT))
            self._backoff.fared(accepted)

"""Keeping the vocabulary's control tokens out of text that users, tools and web pages wrote.

A chat template writes its own markers (`<|im_start|>`, `<|im_end|>`) around the messages, and the rendered
prompt is tokenized with those markers read as control tokens. Read that way, a user's or a fetched page's
"<|im_end|>\\n<|im_start|>system" would become real turn boundaries and forge a system message. So before
rendering, every control token's text inside the conversation is swapped for a placeholder that only this
backend knows (a nonce); after rendering, the prompt is tokenized piece by piece: the template's text with
control tokens parsed, each placeholder as the plain text it stands for.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import replace
from typing import Any

from qwend.types import Message, ToolSpec

Tokenize = Callable[[str, bool, bool], list[int]]  # (text, parse control tokens, add BOS) -> ids


class ControlTexts:
    """The texts of a vocabulary's control tokens, masked in conversations and restored when tokenizing."""

    def __init__(self, texts: Iterable[str]) -> None:
        self.texts = tuple(sorted({t for t in texts if t}, key=len, reverse=True))  # longest first
        self._find = re.compile("|".join(map(re.escape, self.texts))) if self.texts else None
        nonce = secrets.token_hex(8)
        self._open, self._close = f"\ue000{nonce}:", "\ue001"
        self._placeholder = re.compile(f"{re.escape(self._open)}(\\d+){re.escape(self._close)}")

    def mask(self, text: str) -> str:
        if self._find is None or not any(t in text for t in self.texts):
            return text
        return self._find.sub(lambda m: f"{self._open}{self.texts.index(m[0])}{self._close}", text)

    def mask_messages(self, messages: Sequence[Message]) -> list[Message]:
        return [self._mask_message(m) for m in messages]

    def mask_tools(self, tools: Sequence[ToolSpec]) -> list[ToolSpec]:
        return [ToolSpec(self.mask(t.name), self.mask(t.description), self._mask_json(t.parameters)) for t in tools]

    def unmask(self, rendered: str) -> str:
        """The rendered prompt as the model reads it (placeholders back to their texts)."""
        return self._placeholder.sub(lambda m: self.texts[int(m[1])], rendered)

    def tokens(self, rendered: str, tokenize: Tokenize, *, bos: bool = True) -> list[int]:
        """`rendered` tokenized: its template text with control tokens parsed, masked texts as plain text."""
        ids: list[int] = []
        for piece, literal in self._pieces(rendered):
            ids += tokenize(piece, not literal, bos and not ids)
        return ids

    def _pieces(self, rendered: str) -> Iterator[tuple[str, bool]]:
        start = 0
        for match in self._placeholder.finditer(rendered):
            if match.start() > start:
                yield rendered[start:match.start()], False
            yield self.texts[int(match[1])], True
            start = match.end()
        if start < len(rendered) or start == 0:  # (an empty prompt is one empty piece: BOS alone, if any)
            yield rendered[start:], False

    def _mask_message(self, message: Message) -> Message:
        mask = self.mask
        return replace(
            message, content=mask(message.content), name=message.name and mask(message.name),
            reasoning=message.reasoning and mask(message.reasoning),
            tool_call_id=message.tool_call_id and mask(message.tool_call_id),
            tool_calls=tuple(replace(c, name=mask(c.name), arguments=mask(c.arguments)) for c in message.tool_calls),
        )

    def _mask_json(self, value: Any) -> Any:
        # a tool's schema: nested at most as deep as prepare_schema allows, or written by qwend itself
        if isinstance(value, str):
            return self.mask(value)
        if isinstance(value, dict):
            return {self.mask(k): self._mask_json(v) for k, v in value.items()}
        if isinstance(value, list):
            return [self._mask_json(v) for v in value]
        return value

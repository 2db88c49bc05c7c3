"""The Backend protocol: what every inference engine offers the chat pipeline. Never sees HTTP types."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Protocol

from qwend.types import FinishReason, Message, OutputConstraint, SamplingParams, ToolSpec


@dataclass(frozen=True)
class ModelInfo:
    """Capabilities are data, so nothing above the backend branches on model names."""

    context_length: int  # the window this load was given
    trained_context_length: int
    vocab_size: int
    parameters: int
    file_size: int
    chat_template: bool  # False when the model has none and ChatML is used
    grammar: bool = False  # can enforce an OutputConstraint while decoding
    vision: bool = False  # reads Message.images


@dataclass(frozen=True)
class Prefill:
    """First item of a generation."""

    cached_tokens: int  # prompt tokens whose KV state was reused rather than evaluated


@dataclass(frozen=True)
class Piece:
    """Text decoded from `tokens` generated tokens ("" while a UTF-8 character is incomplete)."""

    text: str
    tokens: int = 1


@dataclass(frozen=True)
class Finished:
    reason: FinishReason


Generated = Prefill | Piece | Finished


class Backend(Protocol):
    info: ModelInfo

    def tokenize(self, text: str) -> list[int]:
        """Token ids of a rendered prompt (special tokens parsed, BOS as the model wants)."""

    def render(self, messages: Sequence[Message], tools: Sequence[ToolSpec] = ()) -> str:
        """The prompt for `messages` (and the tools on offer) through the model's own chat template,
        ready for the assistant turn."""

    def generate(
        self, prompt: Sequence[int], params: SamplingParams, constraint: OutputConstraint | None = None
    ) -> AsyncIterator[Generated]:
        """Prefill, Pieces, then one Finished. Closing the iterator stops generation before the next token."""

    def close(self) -> None:
        """Free the model's memory. The backend is unusable afterwards."""

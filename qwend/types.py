"""The internal vocabulary every layer shares: messages, requests and the events of a chat stream."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

Role = Literal["system", "user", "assistant", "tool"]
FinishReason = Literal["stop", "length", "cancelled"]


@dataclass(frozen=True)
class Message:
    role: Role
    content: str
    name: str | None = None


@dataclass(frozen=True)
class SamplingParams:
    """Sampling knobs; defaults are llama.cpp's. `max_tokens=None` means up to the context window."""

    temperature: float = 0.8
    top_p: float = 0.95
    top_k: int = 40
    min_p: float = 0.05
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    repeat_penalty: float = 1.0
    seed: int | None = None
    stop: tuple[str, ...] = ()
    max_tokens: int | None = None


@dataclass(frozen=True)
class ChatRequest:
    messages: tuple[Message, ...]
    model: str | None = None
    sampling: SamplingParams = field(default_factory=SamplingParams)


@dataclass(frozen=True)
class Usage:
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


# Events of one chat stream, in order: Queued* Started Token* Done.


@dataclass(frozen=True)
class Queued:
    position: int  # jobs ahead of this one, the running one included


@dataclass(frozen=True)
class Started:
    model: str
    prompt_tokens: int


@dataclass(frozen=True)
class Token:
    text: str


@dataclass(frozen=True)
class Done:
    finish_reason: FinishReason
    usage: Usage


ChatEvent = Queued | Started | Token | Done

"""The internal vocabulary every layer shares: messages, requests and the events of a chat stream."""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from typing import Any, Literal, TypeVar

Role = Literal["system", "user", "assistant", "tool"]
FinishReason = Literal["stop", "length", "tool_calls", "cancelled"]
Priority = Literal["interactive", "batch"]  # the scheduler admits every waiting interactive job before any batch one
AskedBy = TypeVar("AskedBy")  # a request with client, priority and affinity fields (Requester.attach)


@dataclass(frozen=True)
class ToolCall:
    id: str
    name: str
    arguments: str  # a JSON object, as text


@dataclass(frozen=True)
class Image:
    data: bytes  # the encoded file (JPEG, PNG, WebP), not pixels
    mime_type: str
    url: str | None = None  # an http(s) image, fetched (data filled in) once the model is known to read images


@dataclass(frozen=True)
class Message:
    role: Role
    content: str
    name: str | None = None
    tool_calls: tuple[ToolCall, ...] = ()  # assistant messages that called tools
    tool_call_id: str | None = None  # tool messages: the call this result answers
    reasoning: str | None = None
    images: tuple[Image, ...] = ()  # user messages: pictures for a vision model


@dataclass(frozen=True)
class ToolSpec:
    """A function the model may call; `parameters` is its JSON schema."""

    name: str
    description: str = ""
    parameters: dict[str, Any] = field(default_factory=lambda: {"type": "object", "properties": {}})


@dataclass(frozen=True)
class OutputConstraint:
    """What shape the answer must take. Engines that enforce grammars (llama.cpp) generate under `grammar`
    alone, as the chat pipeline chose it; the others take the rest as a hint (an upstream's tool_choice).

    calls: "none" (text only), "optional" (text, or calls to `tools`), "required" (one or more calls).
    json_schema: the answer is one JSON value valid against it ({} for any JSON object).
    """

    tools: tuple[ToolSpec, ...] = ()
    calls: Literal["none", "optional", "required"] = "none"
    parallel: bool = True
    json_schema: dict[str, Any] | None = None
    grammar: str = ""  # the GBNF that enforces it, for engines that read one (built before the job is queued)
    grammar_tokens: int | None = None  # the grammar shapes only the answer's first this-many tokens (None: all)
    first_call: str | None = None  # the tool the first call names: the model's own choice (chat/decide.py)


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
    logprobs: int | None = None  # report each token's log probability and this many alternatives (None: off)
    draft_max: int | None = None  # tokens drafted at most per step (engine/speculation.py); 0: off, None: the model's


@dataclass(frozen=True)
class SamplingOverrides:
    """What a request sets over a profile's sampling defaults (agents/profiles.py): None keeps the profile's.
    The knobs are those the profile-driven protocols (seed 000's chat, seed 003's generate) let clients set."""

    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    repeat_penalty: float | None = None
    seed: int | None = None
    max_tokens: int | None = None

    def over(self, defaults: SamplingParams) -> SamplingParams:
        given = {f.name: getattr(self, f.name) for f in fields(self) if getattr(self, f.name) is not None}
        return replace(defaults, **given)


@dataclass(frozen=True)
class TokenLogprob:
    """One generated token's log probability under the model (before penalties, grammar and temperature),
    with the most likely alternatives at that place: (token, logprob, bytes) each."""

    token: str
    logprob: float
    bytes: tuple[int, ...]
    top: tuple[tuple[str, float, tuple[int, ...]], ...] = ()


@dataclass(frozen=True)
class Requester:
    """Who asks, the one value the scheduler queues a request by: the client it takes turns between (None: the
    request is a client of its own), the priority asked for (None: none was, the request's own stands), and
    the conversation continued, for an upstream's load balancer (api/affinity.py)."""

    client: str | None = None
    priority: Priority | None = None
    affinity: str | None = None

    def attach(self, request: AskedBy) -> AskedBy:
        """`request` with these set; the priority asked for here wins over the request's own."""
        return replace(request, client=self.client, priority=self.priority or request.priority,
                       affinity=self.affinity)


@dataclass(frozen=True)
class Thinking:
    """Whether a model that reasons before it answers (Qwen3's `<think>` block) does so for this answer, and for
    how long. enabled None: the model's template decides (Qwen3 thinks unless told not to); budget: reasoning
    tokens at most, after which the model is made to answer (None: no bound)."""

    enabled: bool | None = None
    budget: int | None = None


@dataclass(frozen=True)
class ChatRequest:
    messages: tuple[Message, ...]
    model: str | None = None
    sampling: SamplingParams = field(default_factory=SamplingParams)
    tools: tuple[ToolSpec, ...] = ()
    # none: tools hidden, text. auto: text or calls. required: calls (to `tool_name` only, when given).
    # text: tools shown (their calls and results are in the conversation), but the reply is text.
    tool_choice: Literal["none", "auto", "required", "text"] = "auto"
    tool_name: str | None = None
    parallel_tool_calls: bool = True
    json_schema: dict[str, Any] | None = None  # structured output; {} for any JSON object
    constrained: bool = True  # enforce tools and JSON by grammar where the backend can
    keep_alive: float | None = None  # seconds the model stays loaded after this request (-1: until unloaded)
    # who asks (Requester.attach sets these three): the scheduler takes turns between clients (None: this
    # request is a client of its own); affinity is the conversation it continues, for an upstream's balancer
    client: str | None = None
    priority: Priority = "interactive"
    affinity: str | None = None
    pin_prompt: bool = False  # keep the prompt's KV state for good, where the engine saves states (/restore_cache)
    # a text completion (OpenAI's /v1/completions): this text is the prompt as it is, no chat template, and the
    # answer comes back as plain text; with `suffix`, the model fills in between the two (fill-in-the-middle)
    text_prompt: str | None = None
    suffix: str | None = None
    thinking: Thinking = Thinking()


@dataclass(frozen=True)
class Speculated:
    """An answer's drafted tokens (engine/speculation.py): tried, and kept because the model's own samples
    confirmed them."""

    drafted: int = 0
    accepted: int = 0

    def __add__(self, other: Speculated) -> Speculated:
        return Speculated(self.drafted + other.drafted, self.accepted + other.accepted)


@dataclass(frozen=True)
class Usage:
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int = 0
    speculated: Speculated = Speculated()

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


# Events of one chat stream, in order: Queued* Started PromptProgress* (Reasoning | Token | ToolCallStart
# ToolCallDelta* ToolCallEnd | PromptProgress)* Done.


@dataclass(frozen=True)
class Queued:
    position: int  # jobs ahead of this one, the running one included
    loading: str | None = None  # the model this request waits for while it loads


@dataclass(frozen=True)
class Started:
    model: str
    prompt_tokens: int


@dataclass(frozen=True)
class PromptProgress:
    """Prompt tokens read so far of `total` (cached ones included), while an engine reads a prompt in chunks
    (llama-server's `return_progress`): what a long prompt's answer waits on before its first token. Also an
    engine's item (engine/base.py Generated)."""

    read: int
    total: int


@dataclass(frozen=True)
class Token:
    text: str
    logprobs: tuple[TokenLogprob, ...] = ()  # of the tokens this text came from, when asked (SamplingParams)


@dataclass(frozen=True)
class Reasoning:
    text: str


@dataclass(frozen=True)
class ToolCallStart:
    index: int
    id: str
    name: str


@dataclass(frozen=True)
class ToolCallDelta:
    index: int
    arguments: str  # the next piece of the arguments' JSON text


@dataclass(frozen=True)
class ToolCallEnd:
    index: int
    call: ToolCall  # the whole call, validated


@dataclass(frozen=True)
class Done:
    finish_reason: FinishReason
    usage: Usage
    stop_sequence: str | None = None  # the request's stop string that ended the answer, where one did


ChatEvent = (Queued | Started | PromptProgress | Reasoning | Token | ToolCallStart | ToolCallDelta | ToolCallEnd
             | Done)

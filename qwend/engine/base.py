"""The Backend protocol: what every inference engine offers the chat pipeline. Never sees HTTP types."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Protocol

from qwend.engine.specials import ControlTexts
from qwend.errors import ContextOverflow, InvalidRequest
from qwend.types import (
    FinishReason, Message, OutputConstraint, PromptProgress, SamplingParams, Speculated, TokenLogprob, ToolSpec,
)

if TYPE_CHECKING:
    from qwend.engine.template import ChatTemplate


MAX_DEFAULT_CONTEXT = 32768  # the window a local load gets when none is configured: the trained one, capped


@dataclass(frozen=True)
class ModelInfo:
    """Capabilities are data, so nothing above the backend branches on model names."""

    context_length: int  # the window this load was given
    trained_context_length: int
    vocab_size: int
    parameters: int
    file_size: int
    chat_template: bool  # False when the model has none and ChatML is used
    grammar: bool = False  # enforces an OutputConstraint while decoding (others get it as a hint)
    vision: bool = False  # reads Message.images
    engine: str = "llama.cpp"  # what generates (shown in /health and model listings)
    parallel: int = 1  # answers it generates at once (the scheduler admits this many)
    pins_prompts: bool = False  # it keeps the KV state of a prompt asked to be pinned (Prompt.pin)
    embeddings: bool = False  # offers `embed(texts)` (Embedded)
    logprobs: bool = False  # reports tokens' log probabilities (Piece.logprob)
    # the model's fill-in-the-middle markers (prefix, suffix, middle), when it was trained with them
    fill_in_middle: tuple[str, str, str] | None = None
    longest_token: int = 0  # most characters one token stands for (bytes, for llama.cpp; 0: unknown): past_window
    # it reasons in a <think> block before it answers (its template says so), and offers `continued`: the
    # pipeline bounds the reasoning and generates a constrained answer after it (chat/thinking.py)
    thinking: bool = False


@dataclass(frozen=True)
class Prompt:
    """What a backend generates from. Local engines render the model's chat template and tokenize it here;
    an upstream server renders its own, so it gets the messages and tools, and the length is an estimate."""

    tokens: tuple[int, ...] = ()
    text: str = ""  # the rendered template
    messages: tuple[Message, ...] = ()
    tools: tuple[ToolSpec, ...] = ()
    estimated_tokens: int = 0
    pin: bool = False  # keep this prompt's KV state for good, where the engine saves states (llama.cpp)
    affinity: str | None = None  # the conversation it continues: an upstream server is told, to route by it
    suffix: str | None = None  # a text completion's suffix, for an upstream server (it fills in the middle itself)
    thinking: bool | None = None  # the reasoning switch it was rendered with, for an upstream server to render with

    @property
    def length(self) -> int:
        return len(self.tokens) if self.tokens else self.estimated_tokens


@dataclass(frozen=True)
class Prefill:
    """First item of a generation."""

    cached_tokens: int  # prompt tokens whose KV state was reused rather than evaluated


@dataclass(frozen=True)
class Piece:
    """Text decoded from `tokens` generated tokens ("" while a UTF-8 character is incomplete)."""

    text: str
    tokens: int = 1
    logprob: TokenLogprob | None = None  # when asked for (SamplingParams.logprobs) and the engine can tell


@dataclass(frozen=True)
class Finished:
    reason: FinishReason
    # exact counts known only once the answer is done (an upstream server's usage); None: count locally
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    speculated: Speculated | None = None  # drafted tokens, where the engine drafted (engine/speculation.py)


Generated = Prefill | PromptProgress | Piece | Finished  # PromptProgress: between Prefill and the first Piece


@dataclass(frozen=True)
class Embedded:
    """What `embed(texts)` returns, where a backend offers it (ModelInfo.embeddings): one unit-length vector
    per text, in order, and how many tokens were read."""

    vectors: list[list[float]]
    tokens: int


class Backend(Protocol):
    info: ModelInfo

    def prompt(
        self, messages: Sequence[Message], tools: Sequence[ToolSpec] = (), *, thinking: bool | None = None
    ) -> Prompt:
        """The prompt for `messages` (and the tools on offer), ready for the assistant turn; `thinking` switches
        a reasoning model's reasoning on or off (None: its template's default). Raises BackendError when the
        model's chat template refuses the conversation."""

    def text_prompt(self, text: str, suffix: str | None = None) -> Prompt:
        """A text completion's prompt: `text` as it is (special tokens parsed), or with `suffix` the model's
        fill-in-the-middle form. Raises InvalidRequest for a suffix when the model has no FIM markers."""

    def generate(
        self, prompt: Prompt, params: SamplingParams, constraint: OutputConstraint | None = None
    ) -> AsyncIterator[Generated]:
        """Prefill, Pieces, then one Finished. Closing the iterator stops generation before the next token.
        Backends whose ModelInfo.grammar is True generate exactly under `constraint.grammar` (its first
        `grammar_tokens` tokens only, where set; free text without one) and read nothing else of it: what to
        generate under is the caller's choice (chat/decide.py). The others take the constraint as a hint."""

    def close(self) -> None:
        """Free the model's memory. The backend is unusable afterwards."""

    # Backends whose ModelInfo.grammar is True also offer (called before the job is queued; raises InvalidRequest):
    #     def grammar_for(self, constraint: OutputConstraint) -> str   (the grammar, as OutputConstraint.grammar)
    # Backends whose ModelInfo.thinking is True also offer:
    #     def continued(self, prompt: Prompt, said: str) -> Prompt   (the prompt with the answer's start `said`)
    # Backends whose ModelInfo.embeddings is True also offer:
    #     async def embed(self, texts: Sequence[str]) -> Embedded
    # raising ContextOverflow for a text longer than their embedding window.


class TemplatedPrompts:
    """`prompt()` for local engines: their `template` (the model's own chat template) rendered for the
    assistant turn, then tokenized by their `tokenize(text, special, bos)`, where only the template's own
    control tokens are parsed as such (engine/specials.py); `controls` holds the vocabulary's."""

    template: ChatTemplate
    controls: ControlTexts

    def render(
        self, messages: Sequence[Message], tools: Sequence[ToolSpec] = (), *, thinking: bool | None = None
    ) -> str:
        """The template's text for the assistant turn, with control-token texts from the conversation masked;
        a ContextOverflow, before anything tokenizes it, for a text that cannot fit the window."""
        masked = self.controls.mask_messages(messages)
        rendered = self.template.render(masked, self.controls.mask_tools(tools), add_generation_prompt=True,
                                        thinking=thinking)
        if thinking is False and rendered.rstrip().endswith("<think>"):
            # a template that opens the block whatever its switch says: closed empty, as Qwen3's own switch does
            rendered = rendered.rstrip() + "\n\n</think>\n\n"
        self.check_length(rendered)
        return rendered

    def tokens(self, rendered: str, *, bos: bool = True) -> list[int]:
        """The ids of a `render()`ed text (or a piece of one)."""
        return self.controls.tokens(rendered, self.tokenize, bos=bos)

    def prompt(
        self, messages: Sequence[Message], tools: Sequence[ToolSpec] = (), *, thinking: bool | None = None
    ) -> Prompt:
        rendered = self.render(messages, tools, thinking=thinking)
        return Prompt(tuple(self.tokens(rendered)), self.controls.unmask(rendered), thinking=thinking)

    def continued(self, prompt: Prompt, said: str) -> Prompt:
        """`prompt` followed by the start of its answer, `said` (the model's reasoning, closed), for the rest
        of the answer to be generated from. The generated tokens are in the cache already; `said` is tokenized
        again, so where it splits differently only the tokens from there on are read again. Images and the
        rest of the prompt are kept (it is the same prompt, longer). Control-token texts in it stay text, as
        the model wrote them (its <think> tags are not control tokens)."""
        tokens = self.tokenize(said, False, False)
        return replace(prompt, tokens=prompt.tokens + tuple(tokens), text=prompt.text + said, pin=False)

    def text_prompt(self, text: str, suffix: str | None = None) -> Prompt:
        # a text completion's prompt is the client's own, markers and all (as llama-server reads it)
        if suffix is not None:
            markers = self.info.fill_in_middle
            if markers is None:
                raise InvalidRequest("this model has no fill-in-the-middle tokens, so it cannot take a suffix; "
                                     "a code model such as qwen2.5-coder can", param="suffix")
            prefix_marker, suffix_marker, middle_marker = markers
            text = f"{prefix_marker}{text}{suffix_marker}{suffix}{middle_marker}"
        self.check_length(text)
        return Prompt(tuple(self.tokenize(text)), text)

    def check_length(self, text: str) -> None:
        """A ContextOverflow, before tokenizing, for a text that cannot fit the window (`past_window`)."""
        longest, window = self.info.longest_token, self.info.context_length
        if past_window(text, window, longest):
            raise ContextOverflow(f"the prompt is {len(text)} characters, more than the model's context window of "
                                  f"{window} tokens can hold (at most {longest} characters a token)", param="messages")


def past_window(text: str, window: int, longest_token: int) -> bool:
    """Whether `text` cannot fit `window` tokens whatever it says: no token stands for more than `longest_token`
    characters (ModelInfo.longest_token; 0, unknown, bounds nothing)."""
    return bool(longest_token) and len(text) > window * longest_token


def common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    """How many leading tokens two sequences share: the KV state a new prompt can reuse."""
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


def answer_limit(prompt_tokens: int, params: SamplingParams, context_length: int) -> int:
    """How many tokens the answer may have: max_tokens, or what is left of the window when less."""
    room = context_length - prompt_tokens
    return room if params.max_tokens is None else min(params.max_tokens, room)

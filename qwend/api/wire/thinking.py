"""Every dialect's reasoning controls, read as one Thinking (qwend.types): OpenAI's `reasoning_effort` and
the Responses API's `reasoning.effort`, the `chat_template_kwargs` of vLLM, SGLang and llama-server, Qwen's own
`enable_thinking` and `thinking_budget` (Alibaba Cloud's API), Ollama's `think`, Anthropic's `thinking`."""

from __future__ import annotations

from typing import Any

from qwend.errors import InvalidRequest
from qwend.types import Thinking

# reasoning tokens at most for each effort (None: unbounded). Qwen3 has no effort of its own, only the switch
# and a budget; these bound a small model that would otherwise think for thousands of tokens
EFFORT_BUDGETS: dict[str, int | None] = {
    "none": 0, "off": 0, "minimal": 256, "low": 1024, "medium": 4096, "high": None, "xhigh": None, "on": None,
}


def thinking_of(
    *, enabled: bool | None = None, budget: int | None = None, effort: str | None = None, param: str = "reasoning_effort",
) -> Thinking:
    """A switch and a budget as asked; an effort fills what they leave unset (an effort of none: no reasoning)."""
    if budget is not None and budget < 0:
        raise InvalidRequest("a thinking budget is a number of tokens, 0 or more", param=param)
    if effort is None:
        return Thinking(enabled, budget)
    if effort not in EFFORT_BUDGETS:
        raise InvalidRequest(f"unknown reasoning effort {effort!r}; one of {', '.join(EFFORT_BUDGETS)}", param=param)
    bound = EFFORT_BUDGETS[effort]  # 0: off, which a switch asked for overrides
    return Thinking(bound != 0 if enabled is None else enabled, bound if budget is None and bound != 0 else budget)


def template_switch(kwargs: dict[str, Any] | None, param: str = "chat_template_kwargs") -> bool | None:
    """`enable_thinking` of a request's `chat_template_kwargs`: the one template variable read from a request
    (the others are ignored: what a template sees is never the client's to set)."""
    value = (kwargs or {}).get("enable_thinking")
    if value is not None and not isinstance(value, bool):
        raise InvalidRequest("enable_thinking must be true or false", param=f"{param}.enable_thinking")
    return value

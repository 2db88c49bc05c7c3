"""Chat prompts through the model's own template, compiled in Jinja2's immutable sandbox.

Templates come only from model files (GGUF metadata), never from requests: a template is code
(llama-cpp-python CVE-2024-34359 ran one unsandboxed).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from jinja2 import TemplateError
from jinja2.ext import loopcontrols
from jinja2.sandbox import ImmutableSandboxedEnvironment

from qwend.engine.grammar import FUNCTION_OPEN, PARAMETER_OPEN, CallForm
from qwend.errors import BackendError
from qwend.types import Message, ToolSpec

# Used only when a model ships no template: Qwen's ChatML, which every Qwen model speaks.
CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def _raise_exception(message: str) -> None:
    raise TemplateError(message)


def _tojson(value: Any, indent: int | None = None, ensure_ascii: bool = False, sort_keys: bool = False) -> str:
    # transformers' tojson: unlike Jinja2's own it does not HTML-escape, which Qwen templates rely on
    return json.dumps(value, indent=indent, ensure_ascii=ensure_ascii, sort_keys=sort_keys)


class ChatTemplate:
    def __init__(self, source: str | None, *, bos_token: str = "", eos_token: str = "") -> None:
        env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[loopcontrols])
        env.filters["tojson"] = _tojson
        env.globals["raise_exception"] = _raise_exception
        env.globals["strftime_now"] = lambda fmt: datetime.now().strftime(fmt)
        self.is_builtin = source is None
        # the form the template teaches for tool calls (engine/grammar.py): Qwen3-Coder's tags, else JSON
        self.call_form: CallForm = "xml" if source and FUNCTION_OPEN in source and PARAMETER_OPEN in source else "json"
        # the model reasons in a <think> block before it answers (Qwen3, QwQ); the template may switch it
        # (`enable_thinking`), and may open the block itself in the generation prompt (Qwen3.5)
        self.thinks = bool(source) and "<think>" in source
        self._template = env.from_string(source or CHATML_TEMPLATE)
        self._bos_token = bos_token
        self._eos_token = eos_token

    def render(
        self, messages: Sequence[Message], tools: Sequence[ToolSpec] = (), *, add_generation_prompt: bool = True,
        thinking: bool | None = None,
    ) -> str:
        """`thinking` is the template's `enable_thinking` (Qwen3's switch); None leaves it undefined, so the
        template's own default holds."""
        switch = {} if thinking is None else {"enable_thinking": thinking}
        try:
            return self._template.render(
                messages=[_to_template_message(m) for m in messages],
                tools=[to_openai_tool(t) for t in tools] or None,
                add_generation_prompt=add_generation_prompt,
                bos_token=self._bos_token,
                eos_token=self._eos_token,
                **switch,
            )
        except TemplateError as exc:
            raise BackendError(f"the model's chat template failed: {exc}") from exc


def to_openai_tool(tool: ToolSpec) -> dict[str, Any]:
    return {
        "type": "function",
        "function": {"name": tool.name, "description": tool.description, "parameters": tool.parameters},
    }


def _to_template_message(message: Message) -> dict[str, Any]:
    out: dict[str, Any] = {"role": message.role, "content": _template_content(message)}
    if message.name:
        out["name"] = message.name
    if message.tool_calls:
        # templates follow transformers: arguments as an object, which they serialise themselves
        out["tool_calls"] = [
            {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": _as_object(c.arguments)}}
            for c in message.tool_calls
        ]
    if message.tool_call_id:
        out["tool_call_id"] = message.tool_call_id
    if message.reasoning:
        out["reasoning_content"] = message.reasoning
    return out


def _template_content(message: Message) -> str | list[dict[str, str]]:
    """Text, or for a message with images content parts as transformers passes them: an image part for each
    picture, then the text (vision templates such as Qwen2-VL's emit a placeholder for each image part)."""
    if not message.images:
        return message.content
    parts: list[dict[str, str]] = [{"type": "image"} for _ in message.images]
    if message.content:
        parts.append({"type": "text", "text": message.content})
    return parts


def _as_object(arguments: str) -> Any:
    try:
        return json.loads(arguments)
    except (ValueError, RecursionError):  # RecursionError: a client's arguments nested thousands deep
        return arguments

"""Ollama's native API, inward: wire models and pure translators to the internal types (what goes back out is
ollama_replies.py, the model listings ollama_models.py)."""

from __future__ import annotations

import binascii
import json
import math
import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from qwend.api.wire.images import from_base64, sniff_mime_type
from qwend.api.wire.thinking import thinking_of
from qwend.chat.schemas import prepare_schema
from qwend.errors import InvalidRequest
from qwend.types import ChatRequest, Image, Message, SamplingParams, Thinking, ToolCall, ToolSpec

MAX_STOPS = 16


class _Wire(BaseModel):
    # clients send fields we do not use; they are not errors. NaN and Infinity are not JSON numbers: refused
    model_config = ConfigDict(extra="allow", allow_inf_nan=False)


class Options(_Wire):
    """The runtime options qwend applies; load-time ones (num_ctx, num_gpu, ...) are accepted and ignored."""

    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, ge=0, le=1)
    top_k: int | None = Field(None, ge=0)
    min_p: float | None = Field(None, ge=0, le=1)
    num_predict: int | None = Field(None, ge=-2, description="-1 (and -2): no limit but the context window")
    stop: str | list[str] | None = None
    seed: int | None = Field(None, description="negative: a random seed")
    repeat_penalty: float | None = Field(None, gt=0)
    draft_max: int | None = Field(None, ge=0, le=256, description="tokens drafted at most per step by "
                                  "speculation, 0: off (qwend extension)")
    presence_penalty: float | None = Field(None, ge=-2, le=2)
    frequency_penalty: float | None = Field(None, ge=-2, le=2)


class ToolCallFunction(_Wire):
    name: str
    arguments: dict[str, Any] | str = Field(default_factory=dict)


class ToolCallIn(_Wire):
    id: str | None = None
    function: ToolCallFunction


class ChatMessage(_Wire):
    role: Literal["system", "user", "assistant", "tool"]
    content: str | None = ""
    thinking: str | None = None
    images: list[str] | None = None
    tool_calls: list[ToolCallIn] | None = None
    tool_name: str | None = None
    tool_call_id: str | None = None  # newer Ollama clients echo the call id; older ones pair by order


class FunctionDefinition(_Wire):
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    description: str | None = ""
    parameters: dict[str, Any] | None = None


class ToolDefinition(_Wire):
    type: Literal["function"] = "function"
    function: FunctionDefinition


class _Generation(_Wire):
    model: str | None = Field(None, description="qwend extension: empty or missing means the default model")
    format: Literal["", "json"] | dict[str, Any] | None = None
    options: Options | None = None
    stream: bool = True
    think: bool | Literal["low", "medium", "high"] | None = None
    keep_alive: float | str | None = Field(
        None, description='how long the model stays loaded after this request: seconds or a duration ("5m", '
        '"1h"); negative keeps it, 0 unloads it (default: the daemon\'s keep_alive)')
    logprobs: bool | None = None


class ChatBody(_Generation):
    messages: list[ChatMessage] = Field(default_factory=list)  # empty: only load the model
    tools: list[ToolDefinition] | None = None


class GenerateBody(_Generation):
    prompt: str = ""  # empty (and no images): only load the model
    suffix: str | None = None
    system: str | None = None
    template: str | None = None
    context: list[int] | None = None
    raw: bool = False
    images: list[str] | None = None


class LegacyEmbeddingsBody(_Wire):
    """`POST /api/embeddings`, Ollama's first embedding route (LangChain's and litellm's older providers)."""

    model: str | None = None
    prompt: str = ""  # empty: only load the model (the answer's vector is then empty, as Ollama's)
    options: Options | None = None
    keep_alive: float | str | None = None


class ShowBody(_Wire):
    model: str | None = None
    name: str | None = None  # Ollama's deprecated spelling of `model`
    verbose: bool = False


class PullBody(_Wire):
    model: str | None = None
    name: str | None = None
    stream: bool = True
    insecure: bool = False


class DeleteBody(_Wire):
    model: str | None = None
    name: str | None = None


# ---- requests -> ChatRequest ----


def chat_request(body: ChatBody, model: str) -> ChatRequest:
    _refuse_logprobs(body)
    tools = _tools(body.tools or ())
    return ChatRequest(messages=_messages(body.messages), model=model, sampling=sampling(body.options),
                       tools=tools, json_schema=_json_schema(body.format),
                       keep_alive=keep_alive_seconds(body.keep_alive), thinking=_thinking(body.think))


def generate_request(body: GenerateBody, model: str) -> ChatRequest:
    _refuse_logprobs(body)
    if body.template:
        raise InvalidRequest("template is not supported: qwend renders prompts only with the model's own chat "
                             "template and never runs a template sent in a request", param="template")
    if body.context:
        raise InvalidRequest("context is not supported: send the conversation as messages to /api/chat",
                             param="context")
    if body.raw or body.suffix:  # the text as it is (no template), or fill-in-the-middle around `suffix`
        if body.images:
            raise InvalidRequest("images need the chat template: send them without raw and suffix", param="images")
        return ChatRequest((), model=model, sampling=sampling(body.options), text_prompt=body.prompt,
                           suffix=body.suffix or None, json_schema=_json_schema(body.format),
                           keep_alive=keep_alive_seconds(body.keep_alive))
    messages = [Message("system", body.system)] if body.system else []
    messages.append(Message("user", body.prompt, images=_images(body.images, "images")))
    return ChatRequest(messages=tuple(messages), model=model, sampling=sampling(body.options),
                       json_schema=_json_schema(body.format), keep_alive=keep_alive_seconds(body.keep_alive),
                       thinking=_thinking(body.think))


def _thinking(think: bool | str | None) -> Thinking:
    """Ollama's `think`: a switch, or an effort (low, medium, high) that bounds the reasoning."""
    return Thinking(think) if think is None or isinstance(think, bool) else thinking_of(effort=think, param="think")


_DURATION = re.compile(r"(-?\d+(?:\.\d+)?)(ms|s|m|h)")
_UNIT_SECONDS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600}
MAX_KEEP_ALIVE_S = 100 * 365 * 24 * 3600  # longer is forever: its expiry (in /api/ps) would not be a date any more


def keep_alive_seconds(value: float | str | None) -> float | None:
    """Ollama's keep_alive (seconds, or a Go duration such as "5m" or "1h30m") in seconds."""
    if value is None:
        return None
    seconds = value if isinstance(value, (int, float)) else _duration_seconds(value)
    if math.isnan(seconds):  # "nan" reads as a float
        raise InvalidRequest(f"keep_alive {value!r} is not a duration (e.g. 300, \"5m\", \"1h\", -1)",
                             param="keep_alive")
    return -1 if seconds > MAX_KEEP_ALIVE_S else seconds


def _duration_seconds(value: str) -> float:
    text = value.strip()
    try:
        return float(text)
    except ValueError:
        pass
    parts = _DURATION.findall(text)
    if not parts or "".join(n + u for n, u in parts) != text:
        raise InvalidRequest(f"keep_alive {value!r} is not a duration (e.g. 300, \"5m\", \"1h\", -1)",
                             param="keep_alive")
    return sum(float(n) * _UNIT_SECONDS[u] for n, u in parts)


def only_loads(body: ChatBody | GenerateBody) -> bool:
    """Ollama loads the model and answers done_reason "load" for a request with nothing to answer."""
    if isinstance(body, ChatBody):
        return not body.messages
    return not body.prompt and not body.images


def sampling(options: Options | None) -> SamplingParams:
    defaults, o = SamplingParams(), options or Options()
    stops = [o.stop] if isinstance(o.stop, str) else list(o.stop or [])
    if len(stops) > MAX_STOPS:
        raise InvalidRequest(f"at most {MAX_STOPS} stop strings are allowed", param="options.stop")
    if o.num_predict == 0:
        raise InvalidRequest("options.num_predict must be at least 1, or -1 for no limit", param="options.num_predict")
    return SamplingParams(
        temperature=_pick(o.temperature, defaults.temperature),
        top_p=_pick(o.top_p, defaults.top_p),
        top_k=_pick(o.top_k, defaults.top_k),
        min_p=_pick(o.min_p, defaults.min_p),
        presence_penalty=_pick(o.presence_penalty, defaults.presence_penalty),
        frequency_penalty=_pick(o.frequency_penalty, defaults.frequency_penalty),
        repeat_penalty=_pick(o.repeat_penalty, defaults.repeat_penalty),
        draft_max=o.draft_max,
        seed=o.seed if o.seed is not None and o.seed >= 0 else None,
        stop=tuple(s for s in stops if s),
        max_tokens=o.num_predict if o.num_predict is not None and o.num_predict > 0 else None,
    )


def _pick(value, default):
    return default if value is None else value


def _refuse_logprobs(body: _Generation) -> None:
    if body.logprobs:
        raise InvalidRequest("logprobs are not supported yet", param="logprobs")


def _json_schema(format_: str | dict[str, Any] | None) -> dict[str, Any] | None:
    if not format_:
        return None
    if format_ == "json":
        return {}
    return prepare_schema(format_, param="format")


def _tools(definitions) -> tuple[ToolSpec, ...]:
    tools = []
    for i, tool in enumerate(definitions):
        parameters = _union_types(tool.function.parameters or {"type": "object", "properties": {}})
        where = f"tools[{i}].function.parameters"
        tools.append(ToolSpec(tool.function.name, tool.function.description or "",
                              prepare_schema(parameters, param=where)))
    if len({t.name for t in tools}) != len(tools):
        raise InvalidRequest("tool names must be unique", param="tools")
    return tuple(tools)


def _union_types(parameters: dict[str, Any]) -> dict[str, Any]:
    """The ollama Python client writes an optional or union argument's type as "integer, string"; JSON
    schema spells that ["integer", "string"]."""
    properties = parameters.get("properties")
    if not isinstance(properties, dict):
        return parameters
    fixed = {}
    for name, prop in properties.items():
        if isinstance(prop, dict) and isinstance(prop.get("type"), str) and "," in prop["type"]:
            prop = {**prop, "type": [t.strip() for t in prop["type"].split(",") if t.strip()]}
        fixed[name] = prop
    return {**parameters, "properties": fixed}


def _messages(messages: list[ChatMessage]) -> tuple[Message, ...]:
    """Ollama's calls carry no ids: each call gets one, and each tool message answers the earliest unanswered
    call of the assistant message before it (the one it names, where it names one)."""
    out: list[Message] = []
    unanswered: list[ToolCall] = []
    for i, m in enumerate(messages):
        images = _images(m.images, f"messages[{i}].images")
        if m.role == "assistant":
            calls = tuple(
                ToolCall(c.id or f"call_{i}_{j}", c.function.name,
                         _arguments(c.function.arguments, f"messages[{i}].tool_calls[{j}].function.arguments"))
                for j, c in enumerate(m.tool_calls or ())
            )
            unanswered = list(calls)
            out.append(Message("assistant", m.content or "", tool_calls=calls, reasoning=m.thinking or None,
                               images=images))
        elif m.role == "tool":
            call = _answered_call(unanswered, m.tool_call_id, m.tool_name)
            out.append(Message("tool", m.content or "", name=m.tool_name or (call.name if call else None),
                               tool_call_id=call.id if call else m.tool_call_id))
        else:
            unanswered = []  # results only answer the calls right before them
            out.append(Message(m.role, m.content or "", images=images))
    return tuple(out)


def _answered_call(unanswered: list[ToolCall], call_id: str | None, name: str | None) -> ToolCall | None:
    for matches in (lambda c: c.id == call_id, lambda c: c.name == name, lambda c: True):
        for call in unanswered:
            if matches(call):
                unanswered.remove(call)
                return call
    return None


def _arguments(arguments: dict[str, Any] | str, param: str) -> str:
    if isinstance(arguments, dict):
        return json.dumps(arguments, ensure_ascii=False)
    try:
        if isinstance(json.loads(arguments), dict):
            return arguments
    except (ValueError, RecursionError):  # RecursionError: nested thousands deep
        pass
    raise InvalidRequest("tool call arguments must be a JSON object", param=param)


def _images(images: list[str] | None, param: str) -> tuple[Image, ...]:
    decoded = []
    for j, data in enumerate(images or ()):
        try:
            mime_type = sniff_mime_type(data)
        except (binascii.Error, ValueError):
            raise InvalidRequest("the image is not valid base64", param=f"{param}[{j}]") from None
        decoded.append(from_base64(data, mime_type, param=f"{param}[{j}]"))
    return tuple(decoded)

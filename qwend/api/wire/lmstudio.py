"""Seed 002 (the LM Studio proxy) wire models and pure translators to and from the internal types."""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any, Literal

from fastapi.routing import RouteContext, iter_route_contexts
from pydantic import AliasChoices, BaseModel, ConfigDict, Field, field_validator
from starlette.routing import BaseRoute, WebSocketRoute

from qwend.api.wire.codec import DETAIL, Codec, NdjsonResponse
from qwend.api.wire.images import from_base64, from_data_url
from qwend.api.wire.thinking import thinking_of
from qwend.chat.service import Completion
from qwend.errors import InvalidRequest
from qwend.types import ChatRequest, FinishReason, Image, Message, SamplingParams, Usage

UNLIMITED = -1  # LM Studio's maxTokens for "until the model stops or the context is full"


class _Wire(BaseModel):
    # clients send fields we do not use (LM Studio load options, other config keys); they are not errors.
    # Fields are read by their camelCase alias or by their Python name.
    model_config = ConfigDict(extra="allow", validate_by_name=True, validate_by_alias=True, allow_inf_nan=False)


class ImageIn(_Wire):
    data_base64: str = Field(min_length=1, description="The encoded file in base64, or a data: URL")
    mime_type: str = "image/jpeg"


class ChatMessageIn(_Wire):
    role: Literal["system", "user", "assistant"]
    content: str
    images: list[ImageIn] | None = None


class ChatConfig(_Wire):
    temperature: float | None = Field(None, ge=0, le=2)
    max_tokens: int | None = Field(None, alias="maxTokens", description="-1: no limit (LM Studio's convention)")
    top_p: float | None = Field(None, alias="topP", ge=0, le=1)
    presence_penalty: float | None = Field(None, alias="presencePenalty", ge=-2, le=2)
    frequency_penalty: float | None = Field(None, alias="frequencyPenalty", ge=-2, le=2)

    @field_validator("max_tokens")
    @classmethod
    def _positive_or_unlimited(cls, value: int | None) -> int | None:
        if value is not None and value < 1 and value != UNLIMITED:
            raise ValueError(f"maxTokens must be at least 1 (or {UNLIMITED} for no limit)")
        return value


class ChatBody(_Wire):
    # `model`, as OpenAI clients name it, is read too: ignoring it would quietly answer with another model
    model_key: str | None = Field(None, min_length=1, validation_alias=AliasChoices("model_key", "model"))
    messages: list[ChatMessageIn] = Field(min_length=1)
    config: ChatConfig | None = None
    reasoning: str | None = Field(None, description="off, low, medium, high or on, as LM Studio's own API")


class LoadBody(_Wire):
    model_key: str = Field(min_length=1)
    exclusive: bool = False


class UnloadBody(_Wire):
    model_key: str | None = Field(None, min_length=1)
    unload_all: bool = False


def to_chat_request(body: ChatBody, *, default_model: str | None, images_allowed: bool) -> ChatRequest:
    """`default_model` answers bodies without model_key (None: the daemon's default); text-only routes
    pass images_allowed=False so a picture is refused rather than silently dropped."""
    messages = tuple(_to_message(m, i, images_allowed) for i, m in enumerate(body.messages))
    return ChatRequest(messages=messages, model=body.model_key or default_model, sampling=_sampling(body.config),
                       thinking=thinking_of(effort=body.reasoning, param="reasoning"))


def _sampling(config: ChatConfig | None) -> SamplingParams:
    if config is None:
        return SamplingParams()
    given = {
        "temperature": config.temperature,
        "top_p": config.top_p,
        "presence_penalty": config.presence_penalty,
        "frequency_penalty": config.frequency_penalty,
    }
    sampling = replace(SamplingParams(), **{k: v for k, v in given.items() if v is not None})
    if config.max_tokens is not None and config.max_tokens != UNLIMITED:
        sampling = replace(sampling, max_tokens=config.max_tokens)
    return sampling


def _to_message(message: ChatMessageIn, index: int, images_allowed: bool) -> Message:
    if message.images and not images_allowed:
        raise InvalidRequest(
            f"messages[{index}] has images, but the text-only /chat/regular routes take none; send them to "
            "/chat/vision (or to /chat with a vision model's model_key)",
            param=f"messages[{index}].images",
        )
    images = tuple(_to_image(image, f"messages[{index}].images[{j}]") for j, image in enumerate(message.images or ()))
    return Message(role=message.role, content=message.content, images=images)


def _to_image(image: ImageIn, param: str) -> Image:
    try:
        # the seed builds `data:{mime_type};base64,{data}` itself, so clients may already send that form
        if image.data_base64.startswith("data:"):
            return from_data_url(image.data_base64, param=param)
        return from_base64(image.data_base64.strip(), image.mime_type, param=param)
    except InvalidRequest as exc:  # this protocol's {"detail"} body has no param field: say where in the text
        raise InvalidRequest(f"{param}: {exc.message}", param=param) from None


def stop_reason(reason: FinishReason) -> str:
    # a cancelled answer only reaches a client that is still reading; to it the answer simply ended
    return "stop" if reason == "cancelled" else reason


def response_body(completion: Completion) -> dict[str, Any]:
    return {
        "model": completion.model,
        "content": completion.text,
        "stop_reason": stop_reason(completion.finish_reason),
        "predicted_tokens": completion.usage.completion_tokens,
    }


def _line(body: dict[str, Any]) -> str:
    return json.dumps(body, ensure_ascii=False) + "\n"


def fragment(text: str) -> dict[str, Any]:
    return {"type": "fragment", "content": text}


def done(model: str, reason: FinishReason, usage: Usage) -> dict[str, Any]:
    return {"type": "done", "model": model, "predicted_tokens": usage.completion_tokens,
            "stop_reason": stop_reason(reason)}


# NDJSON fragments; errors are FastAPI's `{"detail": ...}` before the stream and an error line after
LMSTUDIO: Codec[dict[str, Any]] = Codec(
    response=NdjsonResponse, encode=_line, error_body=DETAIL.error_body,
    stream_error=lambda failure: _line({"type": "error", "detail": failure.message}),
)


def load_body(body: LoadBody, model: str, *, already_loaded: bool, unloaded: list[str]) -> dict[str, Any]:
    return {"loaded": True, "model_key": body.model_key, "model": model, "exclusive": body.exclusive,
            "already_loaded": already_loaded, "unloaded": unloaded}


def load_failure_body(model_key: str, reason: str) -> dict[str, Any]:
    return {"loaded": False, "model_key": model_key, "error": f"Failed to load model: {reason}"}


def unload_target(body: UnloadBody) -> str | None:
    """The model to unload, or None for all of them."""
    if body.unload_all and body.model_key:
        raise InvalidRequest("send either model_key or unload_all: true, not both", param="model_key")
    if body.unload_all:
        return None
    if not body.model_key:
        raise InvalidRequest("send model_key (the model to unload) or unload_all: true", param="model_key")
    return body.model_key


def unload_body(target: str | None, unloaded: list[str]) -> dict[str, Any]:
    body: dict[str, Any] = {"unloaded": bool(unloaded), "models": unloaded}
    if target is None:
        body["unload_all"] = True
        if not unloaded:
            body["message"] = "no model was loaded"
    else:
        body["model_key"] = target
        if not unloaded:
            body["message"] = f"model {target!r} was not loaded"
    return body


def help_body(routes: list[BaseRoute], *, name: str, version: str, description: str) -> dict[str, Any]:
    """Every route of the app, grouped by its router's first tag, in the order the routers were mounted."""
    contexts = [c for c in iter_route_contexts(routes) if c.path is not None]
    # websocket routes carry no tags: they join the protocol of the module that defines them
    module_tags: dict[str, str] = {}
    for context in contexts:
        if tags := getattr(context, "tags", None):
            module_tags.setdefault(_module(context), str(tags[0]))
    groups: dict[str, list[dict[str, str]]] = {}
    for context in contexts:
        tags = getattr(context, "tags", None)
        group = str(tags[0]) if tags else module_tags.get(_module(context), "other")
        for method in _methods(context):
            groups.setdefault(group, []).append({"method": method, "path": context.path, "summary": _summary(context)})
    if "other" in groups:  # FastAPI's own documentation routes come first in the app; the protocols matter more
        groups["other"] = groups.pop("other")
    return {
        "name": name,
        "version": version,
        "description": description,
        "openapi": "/openapi.json",
        "routes": sum(len(entries) for entries in groups.values()),
        "endpoints": groups,
    }


def _module(context: RouteContext) -> str:
    return getattr(context.endpoint, "__module__", "") or ""


def _methods(context: RouteContext) -> list[str]:
    if isinstance(context.original_route, WebSocketRoute):  # FastAPI's websocket routes derive from it too
        return ["WEBSOCKET"]
    methods = set(context.methods or {"*"})  # a mount answers whatever its app does
    if "GET" in methods:
        methods.discard("HEAD")  # implied by GET for every route, so it adds nothing to read
    return sorted(methods)


def _summary(context: RouteContext) -> str:
    if summary := getattr(context, "summary", None):
        return summary
    doc = getattr(context.endpoint, "__doc__", None)
    if doc and doc.strip():
        return " ".join(doc.strip().split("\n\n")[0].split())  # the first paragraph, on one line
    return str(context.name or "").replace("_", " ")

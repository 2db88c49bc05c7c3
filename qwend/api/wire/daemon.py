"""Wire bodies of seed 000's chat and session routes, and the encoders of their answers."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from qwend.agents.loop import ToolResultEvent, TurnEnd
from qwend.api.wire.codec import DETAIL, Codec, sse, sse_event
from qwend.chat.schemas import is_plain_json
from qwend.sessions.store import SessionRecord, StoredMessage
from qwend.types import ToolCall, Usage

ModelSize = Literal["small", "medium", "large"]


class _Turn(BaseModel):
    model_config = ConfigDict(extra="ignore", allow_inf_nan=False)  # NaN and Infinity are not JSON numbers

    message: str = Field(description="The user's message.")
    stream: bool = Field(False, description="Answer as an SSE progress stream (GUIDE section 5 events).")
    model_size: ModelSize | None = Field(None, description="small, medium or large; see QWEND_MODEL_<SIZE>.")
    model: str | None = Field(None, description="A model name; wins over model_size.")
    temperature: float | None = Field(None, ge=0, le=2, description="Overrides the profile's temperature.")
    max_tokens: int | None = Field(None, ge=1, description="Most tokens per generated reply.")
    enable_thinking: bool | None = Field(None, description="A reasoning model reasons first (default: its own way).")
    thinking_budget: int | None = Field(None, ge=0, description="Reasoning tokens at most, then the answer.")

    @field_validator("model_size", mode="before")
    @classmethod
    def _lower(cls, value: Any) -> Any:
        return value.lower() if isinstance(value, str) else value


class ChatBody(_Turn):
    """`POST /v1/chat`: one stateless turn."""

    profile: str = Field("general", description="The agent profile (GET /v1/profiles).")


class SessionChatBody(_Turn):
    """`POST /v1/sessions/{id}/chat`: one turn in a session (its profile is the session's)."""


class CreateSessionBody(BaseModel):
    """`POST /v1/sessions`."""

    profile_name: str = Field("general", description="The session's profile.")
    model: str | None = Field(None, description="A model for every turn; default the profile's.")
    model_size: ModelSize | None = Field(None, description="Or a size, resolved now.")
    title: str | None = Field(None, max_length=200)
    metadata: dict[str, Any] = Field(default_factory=dict)

    @field_validator("metadata")
    @classmethod
    def _plain_json(cls, value: dict[str, Any]) -> dict[str, Any]:
        if not is_plain_json(value):  # stored, it would make every listing of sessions fail
            raise ValueError("metadata holds NaN or Infinity, which JSON does not allow")
        return value


class UpdateSessionBody(BaseModel):
    """`PATCH /v1/sessions/{id}`: rename a session."""

    model_config = ConfigDict(extra="ignore")

    title: str = Field(min_length=1, max_length=200, description="The session's new title.")

    @field_validator("title")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("the title is blank")
        return value.strip()


def session_body(session: SessionRecord, messages: list[StoredMessage] | None = None) -> dict[str, Any]:
    body = {
        "session_id": session.id, "profile_name": session.profile, "model": session.model, "title": session.title,
        "created_at": session.created_at, "updated_at": session.updated_at, "metadata": session.metadata,
    }
    if messages is not None:
        body["messages"] = [message_body(m) for m in messages]
        body["folded_messages"] = sum(1 for m in messages if m.folded)
    return body


def message_body(message: StoredMessage) -> dict[str, Any]:
    return {
        "id": message.id, "turn": message.turn, "role": message.role, "content": message.content,
        "reasoning": message.reasoning or None, "tool_calls": [call_body(c) for c in message.tool_calls],
        "tool_call_id": message.tool_call_id, "name": message.name, "prompt_tokens": message.prompt_tokens,
        "completion_tokens": message.completion_tokens, "folded": message.folded, "stopped": message.stopped,
        "created_at": message.created_at,
    }


def call_body(call: ToolCall) -> dict[str, Any]:
    return {"id": call.id, "name": call.name, "arguments": call.arguments}


def tool_result_body(event: ToolResultEvent) -> dict[str, Any]:
    return {"id": event.call.id, "name": event.call.name, **event.result.to_dict()}


def usage_body(usage: Usage, steps: int) -> dict[str, Any]:
    return {
        "prompt_tokens": usage.prompt_tokens, "completion_tokens": usage.completion_tokens,
        "total_tokens": usage.total_tokens, "cached_tokens": usage.cached_tokens, "steps": steps,
    }


def turn_body(end: TurnEnd, *, model: str, profile: str, session_id: str | None) -> dict[str, Any]:
    """The non-streaming answer: the final text plus every tool call with its result."""
    return {
        "response": end.answer,
        "session_id": session_id,
        "profile": profile,
        "model": model,
        "tool_calls": [{**call_body(r.call), "result": r.result.to_dict()} for r in end.tool_results],
        "finish_reason": end.finish_reason,
        "usage": usage_body(end.usage, end.steps),
    }


# SSE of the native event vocabulary (api/sessions.py); an error in a started stream is an `error` event with
# the `detail` FastAPI answers before it, and the error's code
NATIVE: Codec[tuple[str, dict[str, Any]]] = Codec(
    response=sse, encode=lambda named: sse_event(*named, ensure_ascii=False), error_body=DETAIL.error_body,
    stream_error=lambda failure: sse_event("error", {"detail": failure.message, "code": failure.code},
                                           ensure_ascii=False),
)

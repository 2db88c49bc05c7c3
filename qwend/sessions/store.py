"""The session store interface and its records.

A session is persisted chat history. Messages are written a whole turn at a time (`append_turn`), so a
crash never leaves half a turn behind; `fold` replaces old messages with a summary in what the model sees
while the history still shows them.
"""

from __future__ import annotations

import builtins
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, get_args

from qwend.types import ToolCall

StoredRole = Literal["system", "user", "assistant", "tool", "summary"]
STORED_ROLES: frozenset[str] = frozenset(get_args(StoredRole))


@dataclass(frozen=True)
class SessionRecord:
    """One session's row: who it belongs to and when it last changed (unix seconds)."""

    id: str  # uuid4 hex
    profile: str
    model: str | None
    title: str | None
    created_at: float
    updated_at: float
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class StoredMessage:
    """One message of a session's history.

    `folded` is True once a summary replaced the message in what the model sees; it still shows in the
    history. `id`, `turn` and `created_at` are set by the store; whatever a caller passes there is ignored.
    """

    role: StoredRole
    content: str
    reasoning: str = ""
    tool_calls: tuple[ToolCall, ...] = ()
    tool_call_id: str | None = None
    name: str | None = None  # the tool's name, for role "tool"
    prompt_tokens: int = 0
    completion_tokens: int = 0
    folded: bool = False
    id: int | None = None
    turn: int | None = None
    created_at: float | None = None

    def __post_init__(self) -> None:
        if self.role not in STORED_ROLES:
            raise ValueError(f"role must be one of {sorted(STORED_ROLES)}, not {self.role!r}")


class SessionStore(Protocol):
    """Where sessions live. Every method raises `SessionNotFound` for an unknown session id.

    Implementations must make `append_turn` and `fold` atomic: all of it is stored, or none of it.
    """

    async def create(self, profile: str, model: str | None = None, title: str | None = None,
                     metadata: dict[str, Any] | None = None) -> SessionRecord:
        """Start an empty session and return its record."""
        ...

    async def get(self, session_id: str) -> SessionRecord:
        """The session's record."""
        ...

    async def list(self) -> builtins.list[SessionRecord]:
        """Every session, the most recently updated first."""
        ...

    async def count(self) -> int:
        """How many sessions there are."""
        ...

    async def update(self, session_id: str, *, title: str | None = None,
                     metadata: dict[str, Any] | None = None) -> SessionRecord:
        """Change the given fields (None leaves a field as it is; metadata is replaced whole)."""
        ...

    async def delete(self, session_id: str) -> None:
        """Remove the session and all its messages."""
        ...

    async def messages(self, session_id: str) -> builtins.list[StoredMessage]:
        """The whole history in conversation order, folded messages and summaries included."""
        ...

    async def append_turn(self, session_id: str,
                          messages: Sequence[StoredMessage]) -> builtins.list[StoredMessage]:
        """Store one turn atomically: the messages get the next turn number, in the order given.

        Returns them with id, turn and created_at filled in; the session's updated_at changes.
        """
        ...

    async def fold(self, session_id: str, through_message_id: int, summary: StoredMessage) -> StoredMessage:
        """Atomically mark every message up to and including `through_message_id` folded, and store
        `summary` (role "summary") right after them, before the messages that stay unfolded."""
        ...

    async def close(self) -> None:
        """Release the store's resources; it cannot be used afterwards."""
        ...

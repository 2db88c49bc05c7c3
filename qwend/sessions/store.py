"""The session store interface and its records.

A session is persisted chat history, in SQLite (one daemon) or PostgreSQL (several daemons sharing it). Messages are written a whole turn at a time (`append_turn`), so a
crash never leaves half a turn behind; `fold` replaces old messages with a summary in what the model sees
while the history still shows them.
"""

from __future__ import annotations

import builtins
import json
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, get_args

from qwend.errors import ResponseNotFound, SessionNotFound
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
    owner: str | None = None  # the API key that created it (Caller.owner); None: made without keys


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


@dataclass(frozen=True)
class StoredResponse:
    """One response of OpenAI's Responses API: its answer as the API shows it (`body`), and the items it
    added to its conversation (its input items, then every item it produced, server-side tool calls and
    their results included), which a later response with `previous_id` set to this one continues."""

    id: str
    previous_id: str | None
    body: dict[str, Any]
    items: list[dict[str, Any]]
    created_at: float
    owner: str | None = None  # as SessionRecord.owner


@dataclass(frozen=True)
class Caller:
    """Whose sessions and stored responses a request may reach. `owner` is its API key's id, recorded on
    what it creates; an operator's key reaches everyone's, and without keys (one user) so does everyone."""

    owner: str | None = None
    operator: bool = True

    def sees(self, owner: str | None) -> bool:
        """Whether something owned by `owner` exists for this caller; what was made before owners were
        recorded (None) is an operator's only, once keys are configured."""
        return self.operator or (owner is not None and owner == self.owner)

    @property
    def listed(self) -> str | None:
        """What `SessionStore.list` is filtered by: this caller's own, or None for all."""
        return None if self.operator else self.owner or ""


ToolSwitches = Callable[[dict[str, bool]], None]  # told tool name -> enabled, for some or all tools


def session_not_found(session_id: str) -> SessionNotFound:
    return SessionNotFound(f"session {session_id!r} does not exist", param="session_id")


def response_not_found(response_id: str) -> ResponseNotFound:
    return ResponseNotFound(f"response {response_id!r} does not exist (or was not stored: store false)",
                            param="response_id")


def response_from_row(row: Mapping[str, Any]) -> StoredResponse:
    return StoredResponse(row["id"], row["previous_id"], json.loads(row["body"]), json.loads(row["items"]),
                          row["created_at"], row["owner"])


def record_from_row(row: Mapping[str, Any]) -> SessionRecord:
    """A sessions row (sqlite3.Row or a psycopg dict row) as a record."""
    return SessionRecord(id=row["id"], profile=row["profile"], model=row["model"], title=row["title"],
                         created_at=row["created_at"], updated_at=row["updated_at"],
                         metadata=json.loads(row["metadata"]), owner=row["owner"])


async def session_for(store: SessionStore, session_id: str, caller: Caller) -> SessionRecord:
    """The session, if `caller` may reach it; another key's session raises SessionNotFound exactly as an
    unknown id does, so its existence is not revealed."""
    session = await store.get(session_id)
    if not caller.sees(session.owner):
        raise session_not_found(session_id)
    return session


async def response_for(store: SessionStore, response_id: str, caller: Caller) -> StoredResponse:
    """A stored response, if `caller` may reach it; else ResponseNotFound, as for an unknown id."""
    response = await store.response(response_id)
    if not caller.sees(response.owner):
        raise response_not_found(response_id)
    return response


def message_from_row(row: Mapping[str, Any]) -> StoredMessage:
    """A messages row (sqlite3.Row or a psycopg dict row) as a StoredMessage."""
    calls = tuple(ToolCall(c["id"], c["name"], c["arguments"]) for c in json.loads(row["tool_calls"]))
    return StoredMessage(role=row["role"], content=row["content"], reasoning=row["reasoning"], tool_calls=calls,
                         tool_call_id=row["tool_call_id"], name=row["name"], prompt_tokens=row["prompt_tokens"],
                         completion_tokens=row["completion_tokens"], folded=bool(row["folded"]), id=row["id"],
                         turn=row["turn"], created_at=row["created_at"])


def calls_json(message: StoredMessage) -> str:
    """How a message's tool calls are stored: a JSON list, in both databases."""
    return json.dumps([{"id": c.id, "name": c.name, "arguments": c.arguments} for c in message.tool_calls])


class SessionStore(Protocol):
    """Where sessions, and the state daemons sharing the database share, live. Every session method raises
    `SessionNotFound` for an unknown session id. Sessions and responses record their owner, but only `list`
    filters by it: routes reach a session or response through `session_for` / `response_for`.

    Implementations must make `append_turn` and `fold` atomic: all of it is stored, or none of it.
    """

    async def start(self, tool_switches: ToolSwitches) -> None:
        """Connect (where that needs the event loop) and bring the schema up to date; then tell
        `tool_switches` every stored switch, and again whenever another daemon changes one."""
        ...

    async def create(self, profile: str, model: str | None = None, title: str | None = None,
                     metadata: dict[str, Any] | None = None, owner: str | None = None) -> SessionRecord:
        """Start an empty session owned by `owner` and return its record."""
        ...

    async def get(self, session_id: str) -> SessionRecord:
        """The session's record, whoever owns it (`session_for` checks a caller may reach it)."""
        ...

    async def list(self, owner: str | None = None) -> builtins.list[SessionRecord]:
        """Every session (or, given `owner`, that owner's only), the most recently updated first."""
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

    def turn_lock(self, session_id: str) -> AbstractAsyncContextManager[None]:
        """Held while a turn of the session runs, so that daemons sharing the database run a session's turns
        one at a time (within one daemon, `SessionTurns` already does)."""
        ...

    async def save_tool_switch(self, name: str, enabled: bool) -> None:
        """Remember that a tool was switched on or off; every daemon sharing the database is told."""
        ...

    async def save_response(self, response: StoredResponse) -> None:
        """Store a response, or replace it (a response in progress is stored again when it ends)."""
        ...

    async def response(self, response_id: str) -> StoredResponse:
        """A stored response, whoever owns it (`response_for` checks); raises ResponseNotFound."""
        ...

    async def delete_response(self, response_id: str) -> None:
        """Forget a response (responses that continue it keep their own items); raises ResponseNotFound."""
        ...

    async def close(self) -> None:
        """Release the store's resources; it cannot be used afterwards."""
        ...

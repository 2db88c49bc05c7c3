"""The session store interface and its records.

A session is persisted chat history, in SQLite (one daemon) or PostgreSQL (several daemons sharing it); the
database holding it (database.py) holds tool switches (switches.py) and stored responses (responses.py) too.
Messages are written a whole turn at a time (`append_turn`), so a crash never leaves half a turn behind; `fold`
replaces old messages with a summary in what the model sees while the history still shows them.
"""

from __future__ import annotations

import builtins
import json
from collections.abc import Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, get_args

from qwend.errors import SessionNotFound
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
    history. `stopped` marks an answer cut short (the client stopped it or left): kept as far as it came.
    `id`, `turn` and `created_at` are set by the store; whatever a caller passes there is ignored.
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
    stopped: bool = False
    id: int | None = None
    turn: int | None = None
    created_at: float | None = None

    def __post_init__(self) -> None:
        if self.role not in STORED_ROLES:
            raise ValueError(f"role must be one of {sorted(STORED_ROLES)}, not {self.role!r}")


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


def session_not_found(session_id: str) -> SessionNotFound:
    return SessionNotFound(f"session {session_id!r} does not exist", param="session_id")


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


def message_from_row(row: Mapping[str, Any]) -> StoredMessage:
    """A messages row (sqlite3.Row or a psycopg dict row) as a StoredMessage."""
    calls = tuple(ToolCall(c["id"], c["name"], c["arguments"]) for c in json.loads(row["tool_calls"]))
    return StoredMessage(role=row["role"], content=row["content"], reasoning=row["reasoning"], tool_calls=calls,
                         tool_call_id=row["tool_call_id"], name=row["name"], prompt_tokens=row["prompt_tokens"],
                         completion_tokens=row["completion_tokens"], folded=bool(row["folded"]),
                         stopped=bool(row["stopped"]), id=row["id"],
                         turn=row["turn"], created_at=row["created_at"])


def calls_json(message: StoredMessage) -> str:
    """How a message's tool calls are stored: a JSON list, in both databases."""
    return json.dumps([{"id": c.id, "name": c.name, "arguments": c.arguments} for c in message.tool_calls])


class SessionStore(Protocol):
    """Where sessions and their messages live. Every method raises `SessionNotFound` for an unknown session
    id. Sessions record their owner, but only `list` filters by it: routes reach a session through
    `session_for`.

    Implementations must make `append_turn` and `fold` atomic: all of it is stored, or none of it.
    """

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

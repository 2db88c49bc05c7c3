"""Sessions and their messages in a SQLite file."""

from __future__ import annotations

import builtins
import json
import math
import sqlite3
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import replace
from typing import Any

from qwend.errors import InvalidRequest
from qwend.sessions.sqlite.connection import SqliteConnection, transaction
from qwend.sessions.store import (
    SessionRecord, StoredMessage, calls_json, message_from_row, record_from_row, session_not_found,
)


def _session(db: sqlite3.Connection, session_id: str) -> SessionRecord:
    row = db.execute("SELECT * FROM sessions WHERE id = ?", (session_id,)).fetchone()
    if row is None:
        raise session_not_found(session_id)
    return record_from_row(row)


def _insert(db: sqlite3.Connection, session_id: str, turn: int, position: float, message: StoredMessage,
            now: float) -> StoredMessage:
    cursor = db.execute(
        "INSERT INTO messages (session_id, turn, position, role, content, reasoning, tool_calls, tool_call_id, "
        "name, prompt_tokens, completion_tokens, folded, stopped, created_at) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
        (session_id, turn, position, message.role, message.content, message.reasoning, calls_json(message),
         message.tool_call_id, message.name, message.prompt_tokens, message.completion_tokens,
         int(message.folded), int(message.stopped), now))
    return replace(message, id=cursor.lastrowid, turn=turn, created_at=now)


class SqliteSessionStore:
    """A SessionStore in the `sessions` and `messages` tables.

    Messages are ordered by a REAL `position`: turns take whole numbers, a summary takes the midpoint between
    the last message it replaces and the next one.
    """

    def __init__(self, connection: SqliteConnection) -> None:
        self._connection = connection

    async def create(self, profile: str, model: str | None = None, title: str | None = None,
                     metadata: dict[str, Any] | None = None, owner: str | None = None) -> SessionRecord:
        """Start an empty session owned by `owner` and return its record."""
        now = time.time()
        record = SessionRecord(id=uuid.uuid4().hex, profile=profile, model=model, title=title, created_at=now,
                               updated_at=now, metadata=dict(metadata or {}), owner=owner)
        encoded = json.dumps(record.metadata)

        def create(db: sqlite3.Connection) -> SessionRecord:
            with transaction(db):
                db.execute("INSERT INTO sessions (id, profile, model, title, created_at, updated_at, metadata, "
                           "owner) VALUES (?,?,?,?,?,?,?,?)", (record.id, profile, model, title, now, now, encoded,
                                                               owner))
            return record

        return await self._connection.run(create)

    async def get(self, session_id: str) -> SessionRecord:
        """The session's record."""
        return await self._connection.run(_session, session_id)

    async def list(self, owner: str | None = None) -> builtins.list[SessionRecord]:
        """Every session (or `owner`'s only), the most recently updated first."""
        def list_(db: sqlite3.Connection) -> builtins.list[SessionRecord]:
            rows = db.execute("SELECT * FROM sessions WHERE ? IS NULL OR owner = ? "
                              "ORDER BY updated_at DESC, created_at DESC, rowid DESC", (owner, owner))
            return [record_from_row(row) for row in rows]

        return await self._connection.run(list_)

    async def count(self) -> int:
        """How many sessions there are."""
        return await self._connection.run(lambda db: db.execute("SELECT COUNT(*) FROM sessions").fetchone()[0])

    async def update(self, session_id: str, *, title: str | None = None,
                     metadata: dict[str, Any] | None = None) -> SessionRecord:
        """Change the given fields (metadata is replaced whole) and bump updated_at."""
        encoded = None if metadata is None else json.dumps(metadata)

        def update(db: sqlite3.Connection) -> SessionRecord:
            with transaction(db):
                old = _session(db, session_id)
                db.execute("UPDATE sessions SET title = ?, metadata = COALESCE(?, metadata), updated_at = ? "
                           "WHERE id = ?", (old.title if title is None else title, encoded, time.time(), session_id))
                return _session(db, session_id)

        return await self._connection.run(update)

    async def delete(self, session_id: str) -> None:
        """Remove the session; its messages go with it (ON DELETE CASCADE)."""
        def delete(db: sqlite3.Connection) -> None:
            with transaction(db):
                _session(db, session_id)
                db.execute("DELETE FROM sessions WHERE id = ?", (session_id,))

        await self._connection.run(delete)

    async def messages(self, session_id: str) -> builtins.list[StoredMessage]:
        """The whole history in conversation order, folded messages and summaries included."""
        def messages(db: sqlite3.Connection) -> builtins.list[StoredMessage]:
            _session(db, session_id)
            rows = db.execute("SELECT * FROM messages WHERE session_id = ? ORDER BY position", (session_id,))
            return [message_from_row(row) for row in rows]

        return await self._connection.run(messages)

    async def append_turn(self, session_id: str,
                          messages: Sequence[StoredMessage]) -> builtins.list[StoredMessage]:
        """Store one turn atomically under the next turn number, in the order given; returns it stored."""
        if not messages:
            raise ValueError("a turn needs at least one message")
        batch = tuple(messages)

        def append(db: sqlite3.Connection) -> builtins.list[StoredMessage]:
            now = time.time()
            with transaction(db):
                _session(db, session_id)
                turn, top = db.execute("SELECT COALESCE(MAX(turn), 0) + 1, COALESCE(MAX(position), 0) "
                                       "FROM messages WHERE session_id = ?", (session_id,)).fetchone()
                base = math.floor(top)
                stored = [_insert(db, session_id, turn, base + i, m, now) for i, m in enumerate(batch, start=1)]
                db.execute("UPDATE sessions SET updated_at = ? WHERE id = ?", (now, session_id))
            return stored

        return await self._connection.run(append)

    async def fold(self, session_id: str, through_message_id: int, summary: StoredMessage) -> StoredMessage:
        """Atomically fold every message up to `through_message_id` and store `summary` right after them.

        The summary takes the turn of the message it is placed after. Raises InvalidRequest when that
        message is not in the session.
        """
        if summary.role != "summary":
            raise ValueError(f"a fold stores a message of role 'summary', not {summary.role!r}")

        def fold(db: sqlite3.Connection) -> StoredMessage:
            now = time.time()
            with transaction(db):
                _session(db, session_id)
                row = db.execute("SELECT position, turn FROM messages WHERE id = ? AND session_id = ?",
                                 (through_message_id, session_id)).fetchone()
                if row is None:
                    raise InvalidRequest(f"message {through_message_id} is not in session {session_id!r}",
                                         param="through_message_id")
                after = row["position"]
                (following,) = db.execute("SELECT MIN(position) FROM messages WHERE session_id = ? "
                                          "AND position > ?", (session_id, after)).fetchone()
                position = after + 0.5 if following is None else (after + following) / 2
                db.execute("UPDATE messages SET folded = 1 WHERE session_id = ? AND position <= ?",
                           (session_id, after))
                stored = _insert(db, session_id, row["turn"], position, replace(summary, folded=False), now)
                db.execute("UPDATE sessions SET updated_at = ? WHERE id = ?", (now, session_id))
            return stored

        return await self._connection.run(fold)

    @asynccontextmanager
    async def turn_lock(self, session_id: str) -> AsyncIterator[None]:
        """Nothing to do: one daemon owns a SQLite file, and its SessionTurns orders a session's turns."""
        yield

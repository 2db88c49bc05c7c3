"""Sessions and their messages in PostgreSQL, and the order of each session's turns across the daemons
sharing it: an advisory lock per session."""

from __future__ import annotations

import asyncio
import builtins
import hashlib
import json
import math
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager, suppress
from dataclasses import replace
from typing import Any

import psycopg

from qwend.errors import InvalidRequest
from qwend.sessions.postgres.connections import Connection, PostgresConnections
from qwend.sessions.store import (
    SessionRecord, StoredMessage, calls_json, message_from_row, record_from_row, session_not_found,
)

LOCK_POLL_S = 0.05  # how often a turn waiting for another daemon's turn of the same session looks again


def _lock_key(session_id: str) -> int:
    """The session's advisory lock: a signed 64-bit number from its id."""
    return int.from_bytes(hashlib.sha256(f"qwend-turn:{session_id}".encode()).digest()[:8], "big", signed=True)


async def _session(db: Connection, session_id: str, *, for_update: bool = False) -> SessionRecord:
    # FOR UPDATE: turns and folds of one session are written one transaction at a time, on any daemon
    lock = " FOR UPDATE" if for_update else ""
    row = await (await db.execute(f"SELECT * FROM sessions WHERE id = %s{lock}", (session_id,))).fetchone()
    if row is None:
        raise session_not_found(session_id)
    return record_from_row(row)


async def _insert(db: Connection, session_id: str, turn: int, position: float, message: StoredMessage,
                  now: float) -> StoredMessage:
    cursor = await db.execute(
        "INSERT INTO messages (session_id, turn, position, role, content, reasoning, tool_calls, tool_call_id, "
        "name, prompt_tokens, completion_tokens, folded, stopped, created_at) "
        "VALUES (%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s) RETURNING id",
        (session_id, turn, position, message.role, message.content, message.reasoning, calls_json(message),
         message.tool_call_id, message.name, message.prompt_tokens, message.completion_tokens, message.folded,
         message.stopped, now))
    row = await cursor.fetchone()
    return replace(message, id=row["id"], turn=turn, created_at=now)


class PostgresSessionStore:
    """A SessionStore in the `sessions` and `messages` tables. Calls borrow a pooled connection; the advisory
    locks of the sessions whose turns this daemon runs are held on a connection of its own (they go with it
    if the daemon dies)."""

    def __init__(self, connections: PostgresConnections) -> None:
        self._connections = connections
        self._locks: Connection | None = None
        self._lock_guard = asyncio.Lock()  # one (re)connect of the lock connection at a time

    async def create(self, profile: str, model: str | None = None, title: str | None = None,
                     metadata: dict[str, Any] | None = None, owner: str | None = None) -> SessionRecord:
        """Start an empty session owned by `owner` and return its record."""
        now = time.time()
        record = SessionRecord(id=uuid.uuid4().hex, profile=profile, model=model, title=title, created_at=now,
                               updated_at=now, metadata=dict(metadata or {}), owner=owner)
        async with self._connections.pooled() as db:
            await db.execute("INSERT INTO sessions (id, profile, model, title, created_at, updated_at, metadata, "
                             "owner) VALUES (%s,%s,%s,%s,%s,%s,%s,%s)",
                             (record.id, profile, model, title, now, now, json.dumps(record.metadata), owner))
        return record

    async def get(self, session_id: str) -> SessionRecord:
        """The session's record."""
        async with self._connections.pooled() as db:
            return await _session(db, session_id)

    async def list(self, owner: str | None = None) -> builtins.list[SessionRecord]:
        """Every session (or `owner`'s only), the most recently updated first."""
        async with self._connections.pooled() as db:
            cursor = await db.execute("SELECT * FROM sessions WHERE %(owner)s::text IS NULL OR owner = %(owner)s "
                                      "ORDER BY updated_at DESC, created_at DESC, seq DESC", {"owner": owner})
            return [record_from_row(row) for row in await cursor.fetchall()]

    async def count(self) -> int:
        """How many sessions there are."""
        async with self._connections.pooled() as db:
            return (await (await db.execute("SELECT COUNT(*) AS n FROM sessions")).fetchone())["n"]

    async def update(self, session_id: str, *, title: str | None = None,
                     metadata: dict[str, Any] | None = None) -> SessionRecord:
        """Change the given fields (metadata is replaced whole) and bump updated_at."""
        encoded = None if metadata is None else json.dumps(metadata)
        async with self._connections.pooled() as db:
            row = await (await db.execute(
                "UPDATE sessions SET title = COALESCE(%s, title), metadata = COALESCE(%s, metadata), "
                "updated_at = %s WHERE id = %s RETURNING *", (title, encoded, time.time(), session_id))).fetchone()
        if row is None:
            raise session_not_found(session_id)
        return record_from_row(row)

    async def delete(self, session_id: str) -> None:
        """Remove the session; its messages go with it (ON DELETE CASCADE)."""
        async with self._connections.pooled() as db:
            cursor = await db.execute("DELETE FROM sessions WHERE id = %s", (session_id,))
        if cursor.rowcount == 0:
            raise session_not_found(session_id)

    async def messages(self, session_id: str) -> builtins.list[StoredMessage]:
        """The whole history in conversation order, folded messages and summaries included."""
        async with self._connections.pooled() as db, db.transaction():  # one snapshot: the session and its rows
            await _session(db, session_id)
            cursor = await db.execute("SELECT * FROM messages WHERE session_id = %s ORDER BY position",
                                      (session_id,))
            return [message_from_row(row) for row in await cursor.fetchall()]

    async def append_turn(self, session_id: str,
                          messages: Sequence[StoredMessage]) -> builtins.list[StoredMessage]:
        """Store one turn atomically under the next turn number, in the order given; returns it stored."""
        if not messages:
            raise ValueError("a turn needs at least one message")
        now = time.time()
        async with self._connections.pooled() as db, db.transaction():
            await _session(db, session_id, for_update=True)
            row = await (await db.execute(
                "SELECT COALESCE(MAX(turn), 0) + 1 AS turn, COALESCE(MAX(position), 0) AS top FROM messages "
                "WHERE session_id = %s", (session_id,))).fetchone()
            base = math.floor(row["top"])
            stored = [await _insert(db, session_id, row["turn"], base + i, m, now)
                      for i, m in enumerate(messages, start=1)]
            await db.execute("UPDATE sessions SET updated_at = %s WHERE id = %s", (now, session_id))
        return stored

    async def fold(self, session_id: str, through_message_id: int, summary: StoredMessage) -> StoredMessage:
        """Atomically fold every message up to `through_message_id` and store `summary` right after them."""
        if summary.role != "summary":
            raise ValueError(f"a fold stores a message of role 'summary', not {summary.role!r}")
        now = time.time()
        async with self._connections.pooled() as db, db.transaction():
            await _session(db, session_id, for_update=True)
            row = await (await db.execute("SELECT position, turn FROM messages WHERE id = %s AND session_id = %s",
                                          (through_message_id, session_id))).fetchone()
            if row is None:
                raise InvalidRequest(f"message {through_message_id} is not in session {session_id!r}",
                                     param="through_message_id")
            after = row["position"]
            following = (await (await db.execute(
                "SELECT MIN(position) AS p FROM messages WHERE session_id = %s AND position > %s",
                (session_id, after))).fetchone())["p"]
            position = after + 0.5 if following is None else (after + following) / 2
            await db.execute("UPDATE messages SET folded = TRUE WHERE session_id = %s AND position <= %s",
                             (session_id, after))
            stored = await _insert(db, session_id, row["turn"], position, replace(summary, folded=False), now)
            await db.execute("UPDATE sessions SET updated_at = %s WHERE id = %s", (now, session_id))
        return stored

    @asynccontextmanager
    async def turn_lock(self, session_id: str) -> AsyncIterator[None]:
        """The session's advisory lock, held on this daemon's lock connection while the turn runs. It is
        tried rather than waited for, so one connection serves every session; a daemon that dies lets go
        of its locks with its connection."""
        key = _lock_key(session_id)
        while not await self._try_lock(key):
            await asyncio.sleep(LOCK_POLL_S)
        try:
            yield
        finally:
            await self._lock_query("SELECT pg_advisory_unlock(%s) AS done", key)

    async def _try_lock(self, key: int) -> bool:
        attempt = asyncio.ensure_future(self._lock_query("SELECT pg_try_advisory_lock(%s) AS done", key))
        try:
            return await asyncio.shield(attempt)
        except asyncio.CancelledError:  # the turn was given up while asking: a lock it got is let go again
            with suppress(psycopg.Error):
                if await attempt:
                    await self._lock_query("SELECT pg_advisory_unlock(%s) AS done", key)
            raise

    async def _lock_query(self, query: str, key: int) -> bool:
        try:
            async with self._lock_guard:
                if self._locks is None or self._locks.closed:
                    self._locks = await self._connections.dedicated()
            row = await (await self._locks.execute(query, (key,))).fetchone()
        except psycopg.OperationalError as exc:
            raise self._connections.unavailable(exc) from None
        return bool(row["done"])

    async def close(self) -> None:
        """Close the lock connection, letting go of every turn lock this daemon holds."""
        if self._locks is not None:
            await self._locks.close()

"""SessionStore on PostgreSQL (psycopg 3): several daemons share one database, and so their sessions, the
order of each session's turns (an advisory lock) and which tools are switched on (LISTEN/NOTIFY)."""

from __future__ import annotations

import asyncio
import builtins
import hashlib
import json
import logging
import math
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager, suppress
from dataclasses import replace
from typing import Any

import psycopg
from psycopg import AsyncConnection
from psycopg.conninfo import conninfo_to_dict
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from qwend.errors import DatabaseUnavailable, InvalidRequest, QwendError
from qwend.sessions.store import (
    SessionRecord, StoredMessage, StoredResponse, ToolSwitches, calls_json, message_from_row, record_from_row,
    response_from_row, response_not_found, session_not_found,
)

log = logging.getLogger(__name__)

Connection = AsyncConnection[dict[str, Any]]
CONNECT_TIMEOUT_S = 10.0
LOCK_POLL_S = 0.05  # how often a turn waiting for another daemon's turn of the same session looks again
MIGRATION_LOCK = 0x7177656E64  # an advisory lock key of our own ("qwend"): one daemon migrates at a time
SWITCHES_CHANNEL = "qwend_tool_switches"


async def _v1_initial(db: Connection) -> None:
    # The same tables as the SQLite store's (JSON kept as text, so both share one row decoder); `seq` orders
    # sessions created in the same instant, as SQLite's rowid does.
    await db.execute("""CREATE TABLE sessions (
        id TEXT PRIMARY KEY, seq BIGINT GENERATED ALWAYS AS IDENTITY, profile TEXT NOT NULL, model TEXT,
        title TEXT, created_at DOUBLE PRECISION NOT NULL, updated_at DOUBLE PRECISION NOT NULL,
        metadata TEXT NOT NULL DEFAULT '{}')""")
    await db.execute("CREATE INDEX sessions_by_updated ON sessions (updated_at)")
    await db.execute("""CREATE TABLE messages (
        id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        session_id TEXT NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
        turn INTEGER NOT NULL, position DOUBLE PRECISION NOT NULL,
        role TEXT NOT NULL CHECK (role IN ('system', 'user', 'assistant', 'tool', 'summary')),
        content TEXT NOT NULL, reasoning TEXT NOT NULL DEFAULT '', tool_calls TEXT NOT NULL DEFAULT '[]',
        tool_call_id TEXT, name TEXT,
        prompt_tokens INTEGER NOT NULL DEFAULT 0, completion_tokens INTEGER NOT NULL DEFAULT 0,
        folded BOOLEAN NOT NULL DEFAULT FALSE, created_at DOUBLE PRECISION NOT NULL)""")
    await db.execute("CREATE UNIQUE INDEX messages_by_position ON messages (session_id, position)")
    await db.execute("""CREATE TABLE tool_switches (
        name TEXT PRIMARY KEY, enabled BOOLEAN NOT NULL, updated_at DOUBLE PRECISION NOT NULL)""")


async def _v2_responses(db: Connection) -> None:
    await db.execute("""CREATE TABLE responses (id TEXT PRIMARY KEY, previous_id TEXT,
        created_at DOUBLE PRECISION NOT NULL, body TEXT NOT NULL, items TEXT NOT NULL)""")


async def _v3_owners(db: Connection) -> None:
    # NULL: made before owners were recorded (or without API keys)
    await db.execute("ALTER TABLE sessions ADD COLUMN owner TEXT")
    await db.execute("CREATE INDEX sessions_by_owner ON sessions (owner, updated_at)")
    await db.execute("ALTER TABLE responses ADD COLUMN owner TEXT")


# Schema version N is reached by applying MIGRATIONS[N-1]; append new steps, never edit applied ones.
MIGRATIONS: tuple[Callable[[Connection], Awaitable[None]], ...] = (_v1_initial, _v2_responses, _v3_owners)


def describe(url: str) -> str:
    """The database a URL names, without its password: safe for logs and error messages."""
    try:
        parts = conninfo_to_dict(url)
    except psycopg.ProgrammingError:
        return "(an unreadable database URL)"
    return f"{parts.get('host', 'localhost')}:{parts.get('port', 5432)}/{parts.get('dbname', '')}"


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
        "name, prompt_tokens, completion_tokens, folded, created_at) "
        "VALUES (%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s) RETURNING id",
        (session_id, turn, position, message.role, message.content, message.reasoning, calls_json(message),
         message.tool_call_id, message.name, message.prompt_tokens, message.completion_tokens, message.folded,
         now))
    row = await cursor.fetchone()
    return replace(message, id=row["id"], turn=turn, created_at=now)


async def _switches(db: Connection) -> dict[str, bool]:
    rows = await (await db.execute("SELECT name, enabled FROM tool_switches")).fetchall()
    return {row["name"]: row["enabled"] for row in rows}


class PostgresSessionStore:
    """A SessionStore in a PostgreSQL database, shared by every daemon given the same URL.

    Calls borrow a connection from a pool. Two more connections are the daemon's own: one holds the advisory
    locks of the sessions whose turns it runs (they go with it if it dies), one listens for tool switches.
    """

    def __init__(self, url: str, *, pool_size: int = 10) -> None:
        self.url = url
        self.where = describe(url)
        self._pool: AsyncConnectionPool = AsyncConnectionPool(
            url, min_size=1, max_size=pool_size, open=False, name="qwend-sessions",
            kwargs={"autocommit": True, "row_factory": dict_row},
            check=AsyncConnectionPool.check_connection)  # a restarted server leaves dead connections behind
        self._locks: Connection | None = None
        self._lock_guard = asyncio.Lock()  # one (re)connect of the lock connection at a time
        self._listener: asyncio.Task | None = None

    async def start(self, tool_switches: ToolSwitches) -> None:
        """Connect, migrate, tell `tool_switches` the stored switches and listen for other daemons' changes."""
        try:
            await self._pool.open(wait=True, timeout=CONNECT_TIMEOUT_S)
        except PoolTimeout:
            await self._pool.close()
            raise QwendError(f"could not connect to the PostgreSQL database at {self.where} within "
                             f"{CONNECT_TIMEOUT_S:g} s (QWEND_DATABASE_URL)") from None
        await self._migrate()
        async with self._db() as db:
            tool_switches(await _switches(db))
        self._listener = asyncio.create_task(self._listen(tool_switches), name="qwend-tool-switches")

    @asynccontextmanager
    async def _db(self) -> AsyncIterator[Connection]:
        """A pooled connection; a database that cannot be reached is a 503, not a 500."""
        try:
            async with self._pool.connection(timeout=CONNECT_TIMEOUT_S) as db:
                yield db
        except (psycopg.OperationalError, PoolTimeout) as exc:
            raise self._unavailable(exc) from None

    def _unavailable(self, exc: Exception) -> DatabaseUnavailable:
        reason = str(exc).strip() or type(exc).__name__
        return DatabaseUnavailable(f"the session database at {self.where} cannot be reached: {reason}")

    async def _migrate(self) -> None:
        migrations = MIGRATIONS  # read at call time, so a test can add a step
        async with self._db() as db:
            while True:
                async with db.transaction():
                    # under a lock held to the transaction's end: daemons starting at once apply each step once
                    await db.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK,))
                    await db.execute("CREATE TABLE IF NOT EXISTS qwend_schema (version INTEGER NOT NULL)")
                    row = await (await db.execute("SELECT version FROM qwend_schema")).fetchone()
                    version = row["version"] if row else 0
                    if row is None:
                        await db.execute("INSERT INTO qwend_schema VALUES (0)")
                    if version > len(migrations):
                        raise QwendError(f"the database at {self.where} has schema version {version}; this qwend "
                                         f"knows up to {len(migrations)}")
                    if version == len(migrations):
                        return
                    await migrations[version](db)
                    await db.execute("UPDATE qwend_schema SET version = %s", (version + 1,))

    async def _listen(self, tool_switches: ToolSwitches) -> None:
        """Apply other daemons' tool switches as they are made; after a lost connection, all of them again."""
        while True:
            try:
                async with await AsyncConnection.connect(self.url, autocommit=True, row_factory=dict_row) as db:
                    await db.execute(f"LISTEN {SWITCHES_CHANNEL}")
                    tool_switches(await _switches(db))  # what changed while it was not listening
                    async for note in db.notifies():
                        change = json.loads(note.payload)
                        tool_switches({change["name"]: change["enabled"]})
            except psycopg.Error as exc:
                log.warning("lost the tool-switch listener's connection to %s (%s); reconnecting", self.where, exc)
                await asyncio.sleep(1.0)

    async def create(self, profile: str, model: str | None = None, title: str | None = None,
                     metadata: dict[str, Any] | None = None, owner: str | None = None) -> SessionRecord:
        """Start an empty session owned by `owner` and return its record."""
        now = time.time()
        record = SessionRecord(id=uuid.uuid4().hex, profile=profile, model=model, title=title, created_at=now,
                               updated_at=now, metadata=dict(metadata or {}), owner=owner)
        async with self._db() as db:
            await db.execute("INSERT INTO sessions (id, profile, model, title, created_at, updated_at, metadata, "
                             "owner) VALUES (%s,%s,%s,%s,%s,%s,%s,%s)",
                             (record.id, profile, model, title, now, now, json.dumps(record.metadata), owner))
        return record

    async def get(self, session_id: str) -> SessionRecord:
        """The session's record."""
        async with self._db() as db:
            return await _session(db, session_id)

    async def list(self, owner: str | None = None) -> builtins.list[SessionRecord]:
        """Every session (or `owner`'s only), the most recently updated first."""
        async with self._db() as db:
            cursor = await db.execute("SELECT * FROM sessions WHERE %(owner)s::text IS NULL OR owner = %(owner)s "
                                      "ORDER BY updated_at DESC, created_at DESC, seq DESC", {"owner": owner})
            return [record_from_row(row) for row in await cursor.fetchall()]

    async def count(self) -> int:
        """How many sessions there are."""
        async with self._db() as db:
            return (await (await db.execute("SELECT COUNT(*) AS n FROM sessions")).fetchone())["n"]

    async def update(self, session_id: str, *, title: str | None = None,
                     metadata: dict[str, Any] | None = None) -> SessionRecord:
        """Change the given fields (metadata is replaced whole) and bump updated_at."""
        encoded = None if metadata is None else json.dumps(metadata)
        async with self._db() as db:
            row = await (await db.execute(
                "UPDATE sessions SET title = COALESCE(%s, title), metadata = COALESCE(%s, metadata), "
                "updated_at = %s WHERE id = %s RETURNING *", (title, encoded, time.time(), session_id))).fetchone()
        if row is None:
            raise session_not_found(session_id)
        return record_from_row(row)

    async def delete(self, session_id: str) -> None:
        """Remove the session; its messages go with it (ON DELETE CASCADE)."""
        async with self._db() as db:
            cursor = await db.execute("DELETE FROM sessions WHERE id = %s", (session_id,))
        if cursor.rowcount == 0:
            raise session_not_found(session_id)

    async def messages(self, session_id: str) -> builtins.list[StoredMessage]:
        """The whole history in conversation order, folded messages and summaries included."""
        async with self._db() as db, db.transaction():  # one snapshot: the session and its rows
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
        async with self._db() as db, db.transaction():
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
        async with self._db() as db, db.transaction():
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
                    self._locks = await AsyncConnection.connect(self.url, autocommit=True, row_factory=dict_row)
            row = await (await self._locks.execute(query, (key,))).fetchone()
        except psycopg.OperationalError as exc:
            raise self._unavailable(exc) from None
        return bool(row["done"])

    async def save_tool_switch(self, name: str, enabled: bool) -> None:
        """Store the switch and tell every daemon listening on this database."""
        async with self._db() as db, db.transaction():
            await db.execute("INSERT INTO tool_switches VALUES (%s, %s, %s) ON CONFLICT (name) DO UPDATE SET "
                             "enabled = excluded.enabled, updated_at = excluded.updated_at",
                             (name, enabled, time.time()))
            await db.execute("SELECT pg_notify(%s, %s)",
                             (SWITCHES_CHANNEL, json.dumps({"name": name, "enabled": enabled})))

    async def save_response(self, response: StoredResponse) -> None:
        """Store a response, or replace it."""
        async with self._db() as db:
            await db.execute(
                "INSERT INTO responses (id, previous_id, created_at, body, items, owner) "
                "VALUES (%s,%s,%s,%s,%s,%s) ON CONFLICT (id) DO UPDATE SET "
                "body = excluded.body, items = excluded.items",
                (response.id, response.previous_id, response.created_at, json.dumps(response.body),
                 json.dumps(response.items), response.owner))

    async def response(self, response_id: str) -> StoredResponse:
        """A stored response; raises ResponseNotFound."""
        async with self._db() as db:
            row = await (await db.execute("SELECT * FROM responses WHERE id = %s", (response_id,))).fetchone()
        if row is None:
            raise response_not_found(response_id)
        return response_from_row(row)

    async def delete_response(self, response_id: str) -> None:
        """Forget a response; raises ResponseNotFound."""
        async with self._db() as db:
            cursor = await db.execute("DELETE FROM responses WHERE id = %s", (response_id,))
        if cursor.rowcount == 0:
            raise response_not_found(response_id)

    async def close(self) -> None:
        """Stop listening and close every connection; the store cannot be used afterwards."""
        if self._listener is not None:
            self._listener.cancel()
            with suppress(asyncio.CancelledError):
                await self._listener
        if self._locks is not None:
            await self._locks.close()
        await self._pool.close()

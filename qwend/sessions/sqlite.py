"""SessionStore on the standard library's sqlite3: one file, one connection, explicit transactions."""

from __future__ import annotations

import builtins
import json
import math
import sqlite3
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any, TypeVar

import anyio.to_thread

from qwend.errors import InvalidRequest, QwendError
from qwend.sessions.store import (
    SessionRecord, StoredMessage, StoredResponse, ToolSwitches, calls_json, message_from_row, record_from_row,
    response_from_row, response_not_found, session_not_found,
)

T = TypeVar("T")
BUSY_TIMEOUT_S = 10.0


def _v1_initial(db: sqlite3.Connection) -> None:
    db.execute("""CREATE TABLE sessions (
        id TEXT PRIMARY KEY, profile TEXT NOT NULL, model TEXT, title TEXT,
        created_at REAL NOT NULL, updated_at REAL NOT NULL, metadata TEXT NOT NULL DEFAULT '{}')""")
    db.execute("CREATE INDEX sessions_by_updated ON sessions (updated_at)")
    # position is REAL so a summary can be slotted between two turns without renumbering anything.
    db.execute("""CREATE TABLE messages (
        id INTEGER PRIMARY KEY,
        session_id TEXT NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
        turn INTEGER NOT NULL, position REAL NOT NULL,
        role TEXT NOT NULL CHECK (role IN ('system', 'user', 'assistant', 'tool', 'summary')),
        content TEXT NOT NULL, reasoning TEXT NOT NULL DEFAULT '', tool_calls TEXT NOT NULL DEFAULT '[]',
        tool_call_id TEXT, name TEXT,
        prompt_tokens INTEGER NOT NULL DEFAULT 0, completion_tokens INTEGER NOT NULL DEFAULT 0,
        folded INTEGER NOT NULL DEFAULT 0, created_at REAL NOT NULL)""")
    db.execute("CREATE UNIQUE INDEX messages_by_position ON messages (session_id, position)")


def _v2_tool_switches(db: sqlite3.Connection) -> None:
    db.execute("CREATE TABLE tool_switches (name TEXT PRIMARY KEY, enabled INTEGER NOT NULL, updated_at REAL NOT NULL)")


def _v3_responses(db: sqlite3.Connection) -> None:
    db.execute("""CREATE TABLE responses (id TEXT PRIMARY KEY, previous_id TEXT, created_at REAL NOT NULL,
        body TEXT NOT NULL, items TEXT NOT NULL)""")


def _v4_owners(db: sqlite3.Connection) -> None:
    # NULL: made before owners were recorded (or without API keys)
    db.execute("ALTER TABLE sessions ADD COLUMN owner TEXT")
    db.execute("CREATE INDEX sessions_by_owner ON sessions (owner, updated_at)")
    db.execute("ALTER TABLE responses ADD COLUMN owner TEXT")


# Schema version N is reached by applying MIGRATIONS[N-1]; append new steps, never edit applied ones.
MIGRATIONS: tuple[Callable[[sqlite3.Connection], None], ...] = (
    _v1_initial, _v2_tool_switches, _v3_responses, _v4_owners)


@contextmanager
def _transaction(db: sqlite3.Connection) -> Iterator[None]:
    # IMMEDIATE takes the write lock up front, so a transaction never fails halfway on a lock upgrade.
    db.execute("BEGIN IMMEDIATE")
    try:
        yield
        db.execute("COMMIT")
    except BaseException:
        if db.in_transaction:
            db.execute("ROLLBACK")
        raise


def _migrate(db: sqlite3.Connection, path: Path) -> None:
    migrations = MIGRATIONS  # read at call time, so a test can add a step
    while True:
        # The version is read inside the write transaction, so two processes opening at once never both
        # apply the same step.
        with _transaction(db):
            version = db.execute("PRAGMA user_version").fetchone()[0]
            if version > len(migrations):
                raise QwendError(f"{path} has schema version {version}; this qwend knows up to {len(migrations)}")
            if version == len(migrations):
                return
            migrations[version](db)
            db.execute(f"PRAGMA user_version = {version + 1}")


def _session(db: sqlite3.Connection, session_id: str) -> SessionRecord:
    row = db.execute("SELECT * FROM sessions WHERE id = ?", (session_id,)).fetchone()
    if row is None:
        raise session_not_found(session_id)
    return record_from_row(row)


def _insert(db: sqlite3.Connection, session_id: str, turn: int, position: float, message: StoredMessage,
            now: float) -> StoredMessage:
    cursor = db.execute(
        "INSERT INTO messages (session_id, turn, position, role, content, reasoning, tool_calls, tool_call_id, "
        "name, prompt_tokens, completion_tokens, folded, created_at) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
        (session_id, turn, position, message.role, message.content, message.reasoning, calls_json(message),
         message.tool_call_id, message.name, message.prompt_tokens, message.completion_tokens,
         int(message.folded), now))
    return replace(message, id=cursor.lastrowid, turn=turn, created_at=now)


class SqliteSessionStore:
    """A SessionStore in one SQLite file.

    One connection serves every call under a lock, each call on a worker thread so the event loop never
    waits on disk. Messages are ordered by a REAL `position`: turns take whole numbers, a summary takes
    the midpoint between the last message it replaces and the next one.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        from qwend.private_files import private_sqlite

        private_sqlite(path)  # conversations: 0600 from the start (its -wal and -shm files follow its mode)
        self._lock = threading.Lock()
        # isolation_level=None: sqlite3 opens no implicit transactions; ours are explicit BEGIN/COMMIT.
        self._db = sqlite3.connect(path, timeout=BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=False)
        try:
            self._db.row_factory = sqlite3.Row
            self._db.execute("PRAGMA journal_mode=WAL")
            # WAL + NORMAL: a commit survives a crash of this process (SIGKILL is one); only an OS crash or
            # power cut can lose the last few commits, and even then the file is never corrupt.
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute("PRAGMA foreign_keys=ON")
            self._db.execute(f"PRAGMA busy_timeout={int(BUSY_TIMEOUT_S * 1000)}")
            _migrate(self._db, path)
        except BaseException:
            self._db.close()
            raise

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        def locked() -> T:
            with self._lock:
                return fn(self._db, *args)

        return await anyio.to_thread.run_sync(locked)

    async def create(self, profile: str, model: str | None = None, title: str | None = None,
                     metadata: dict[str, Any] | None = None, owner: str | None = None) -> SessionRecord:
        """Start an empty session owned by `owner` and return its record."""
        now = time.time()
        record = SessionRecord(id=uuid.uuid4().hex, profile=profile, model=model, title=title, created_at=now,
                               updated_at=now, metadata=dict(metadata or {}), owner=owner)
        encoded = json.dumps(record.metadata)

        def create(db: sqlite3.Connection) -> SessionRecord:
            with _transaction(db):
                db.execute("INSERT INTO sessions (id, profile, model, title, created_at, updated_at, metadata, "
                           "owner) VALUES (?,?,?,?,?,?,?,?)", (record.id, profile, model, title, now, now, encoded,
                                                               owner))
            return record

        return await self._run(create)

    async def get(self, session_id: str) -> SessionRecord:
        """The session's record."""
        return await self._run(_session, session_id)

    async def list(self, owner: str | None = None) -> builtins.list[SessionRecord]:
        """Every session (or `owner`'s only), the most recently updated first."""
        def list_(db: sqlite3.Connection) -> builtins.list[SessionRecord]:
            rows = db.execute("SELECT * FROM sessions WHERE ? IS NULL OR owner = ? "
                              "ORDER BY updated_at DESC, created_at DESC, rowid DESC", (owner, owner))
            return [record_from_row(row) for row in rows]

        return await self._run(list_)

    async def count(self) -> int:
        """How many sessions there are."""
        return await self._run(lambda db: db.execute("SELECT COUNT(*) FROM sessions").fetchone()[0])

    async def update(self, session_id: str, *, title: str | None = None,
                     metadata: dict[str, Any] | None = None) -> SessionRecord:
        """Change the given fields (metadata is replaced whole) and bump updated_at."""
        encoded = None if metadata is None else json.dumps(metadata)

        def update(db: sqlite3.Connection) -> SessionRecord:
            with _transaction(db):
                old = _session(db, session_id)
                db.execute("UPDATE sessions SET title = ?, metadata = COALESCE(?, metadata), updated_at = ? "
                           "WHERE id = ?", (old.title if title is None else title, encoded, time.time(), session_id))
                return _session(db, session_id)

        return await self._run(update)

    async def delete(self, session_id: str) -> None:
        """Remove the session; its messages go with it (ON DELETE CASCADE)."""
        def delete(db: sqlite3.Connection) -> None:
            with _transaction(db):
                _session(db, session_id)
                db.execute("DELETE FROM sessions WHERE id = ?", (session_id,))

        await self._run(delete)

    async def messages(self, session_id: str) -> builtins.list[StoredMessage]:
        """The whole history in conversation order, folded messages and summaries included."""
        def messages(db: sqlite3.Connection) -> builtins.list[StoredMessage]:
            _session(db, session_id)
            rows = db.execute("SELECT * FROM messages WHERE session_id = ? ORDER BY position", (session_id,))
            return [message_from_row(row) for row in rows]

        return await self._run(messages)

    async def append_turn(self, session_id: str,
                          messages: Sequence[StoredMessage]) -> builtins.list[StoredMessage]:
        """Store one turn atomically under the next turn number, in the order given; returns it stored."""
        if not messages:
            raise ValueError("a turn needs at least one message")
        batch = tuple(messages)

        def append(db: sqlite3.Connection) -> builtins.list[StoredMessage]:
            now = time.time()
            with _transaction(db):
                _session(db, session_id)
                turn, top = db.execute("SELECT COALESCE(MAX(turn), 0) + 1, COALESCE(MAX(position), 0) "
                                       "FROM messages WHERE session_id = ?", (session_id,)).fetchone()
                base = math.floor(top)
                stored = [_insert(db, session_id, turn, base + i, m, now) for i, m in enumerate(batch, start=1)]
                db.execute("UPDATE sessions SET updated_at = ? WHERE id = ?", (now, session_id))
            return stored

        return await self._run(append)

    async def fold(self, session_id: str, through_message_id: int, summary: StoredMessage) -> StoredMessage:
        """Atomically fold every message up to `through_message_id` and store `summary` right after them.

        The summary takes the turn of the message it is placed after. Raises InvalidRequest when that
        message is not in the session.
        """
        if summary.role != "summary":
            raise ValueError(f"a fold stores a message of role 'summary', not {summary.role!r}")

        def fold(db: sqlite3.Connection) -> StoredMessage:
            now = time.time()
            with _transaction(db):
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

        return await self._run(fold)

    async def start(self, tool_switches: ToolSwitches) -> None:
        """Tell `tool_switches` the stored switches (the file was opened and migrated by the constructor)."""
        rows = await self._run(lambda db: db.execute("SELECT name, enabled FROM tool_switches").fetchall())
        tool_switches({name: bool(enabled) for name, enabled in rows})

    @asynccontextmanager
    async def turn_lock(self, session_id: str) -> AsyncIterator[None]:
        """Nothing to do: one daemon owns a SQLite file, and its SessionTurns orders a session's turns."""
        yield

    async def save_tool_switch(self, name: str, enabled: bool) -> None:
        """Remember the switch across restarts."""
        def save(db: sqlite3.Connection) -> None:
            with _transaction(db):
                db.execute("INSERT INTO tool_switches VALUES (?,?,?) ON CONFLICT (name) DO UPDATE SET "
                           "enabled = excluded.enabled, updated_at = excluded.updated_at",
                           (name, int(enabled), time.time()))

        await self._run(save)

    async def save_response(self, response: StoredResponse) -> None:
        """Store a response, or replace it."""
        row = (response.id, response.previous_id, response.created_at, json.dumps(response.body),
               json.dumps(response.items), response.owner)

        def save(db: sqlite3.Connection) -> None:
            with _transaction(db):
                db.execute("INSERT OR REPLACE INTO responses (id, previous_id, created_at, body, items, owner) "
                           "VALUES (?,?,?,?,?,?)", row)

        await self._run(save)

    async def response(self, response_id: str) -> StoredResponse:
        """A stored response; raises ResponseNotFound."""
        row = await self._run(lambda db: db.execute("SELECT * FROM responses WHERE id = ?",
                                                    (response_id,)).fetchone())
        if row is None:
            raise response_not_found(response_id)
        return response_from_row(row)

    async def delete_response(self, response_id: str) -> None:
        """Forget a response; raises ResponseNotFound."""
        def delete(db: sqlite3.Connection) -> int:
            with _transaction(db):
                return db.execute("DELETE FROM responses WHERE id = ?", (response_id,)).rowcount

        if not await self._run(delete):
            raise response_not_found(response_id)

    async def close(self) -> None:
        """Close the connection; the store cannot be used afterwards."""
        await self._run(sqlite3.Connection.close)

"""A SQLite database: its schema (opened and migrated by the constructor) and the three stores on its one
connection."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path

from qwend.errors import QwendError
from qwend.sessions.sqlite.connection import SqliteConnection, transaction
from qwend.sessions.sqlite.responses import SqliteResponseStore
from qwend.sessions.sqlite.sessions import SqliteSessionStore
from qwend.sessions.sqlite.switches import SqliteToolSwitches


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


def _v5_stopped(db: sqlite3.Connection) -> None:
    db.execute("ALTER TABLE messages ADD COLUMN stopped INTEGER NOT NULL DEFAULT 0")  # an answer cut short


# Schema version N is reached by applying MIGRATIONS[N-1]; append new steps, never edit applied ones.
MIGRATIONS: tuple[Callable[[sqlite3.Connection], None], ...] = (
    _v1_initial, _v2_tool_switches, _v3_responses, _v4_owners, _v5_stopped)


def _migrate(db: sqlite3.Connection, path: Path) -> None:
    migrations = MIGRATIONS  # read at call time, so a test can add a step
    while True:
        # The version is read inside the write transaction, so two processes opening at once never both
        # apply the same step.
        with transaction(db):
            version = db.execute("PRAGMA user_version").fetchone()[0]
            if version > len(migrations):
                raise QwendError(f"{path} has schema version {version}; this qwend knows up to {len(migrations)}")
            if version == len(migrations):
                return
            migrations[version](db)
            db.execute(f"PRAGMA user_version = {version + 1}")


class SqliteDatabase:
    """A Database in one SQLite file, opened and migrated when constructed; its stores share one connection."""

    def __init__(self, path: Path) -> None:
        self.path = path
        connection = SqliteConnection(path)
        try:
            connection.call(_migrate, path)
        except BaseException:
            connection.call(sqlite3.Connection.close)
            raise
        self._connection = connection
        self.sessions = SqliteSessionStore(connection)
        self.switches = SqliteToolSwitches(connection)
        self.responses = SqliteResponseStore(connection)

    async def start(self) -> None:
        """Nothing left to do: the constructor opened and migrated the file."""

    async def close(self) -> None:
        """Close the connection; none of the stores can be used afterwards."""
        await self._connection.close()

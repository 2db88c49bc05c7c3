"""A PostgreSQL database: its schema (migrated by `start`, once between daemons starting together) and the
three stores on its connections."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from qwend.errors import QwendError
from qwend.sessions.postgres.connections import Connection, PostgresConnections
from qwend.sessions.postgres.responses import PostgresResponseStore
from qwend.sessions.postgres.sessions import PostgresSessionStore
from qwend.sessions.postgres.switches import PostgresToolSwitches

MIGRATION_LOCK = 0x7177656E64  # an advisory lock key of our own ("qwend"): one daemon migrates at a time


async def _v1_initial(db: Connection) -> None:
    # The same tables as the SQLite database's (JSON kept as text, so both share one row decoder); `seq` orders
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


async def _v4_stopped(db: Connection) -> None:
    await db.execute("ALTER TABLE messages ADD COLUMN stopped BOOLEAN NOT NULL DEFAULT FALSE")  # an answer cut short


# Schema version N is reached by applying MIGRATIONS[N-1]; append new steps, never edit applied ones.
MIGRATIONS: tuple[Callable[[Connection], Awaitable[None]], ...] = (_v1_initial, _v2_responses, _v3_owners,
                                                                   _v4_stopped)


class PostgresDatabase:
    """A Database in PostgreSQL, shared by every daemon given the same URL.

    Calls borrow a connection from a pool. Two more connections are the daemon's own: the session store's
    holds the advisory locks of the sessions whose turns it runs (they go with it if it dies), the tool
    switch store's listens for other daemons' switches.
    """

    def __init__(self, url: str, *, pool_size: int = 10) -> None:
        self.url = url
        self._connections = PostgresConnections(url, pool_size=pool_size)
        self.where = self._connections.where
        self.sessions = PostgresSessionStore(self._connections)
        self.switches = PostgresToolSwitches(self._connections)
        self.responses = PostgresResponseStore(self._connections)

    async def start(self) -> None:
        """Connect and migrate."""
        await self._connections.open()
        await self._migrate()

    async def _migrate(self) -> None:
        migrations = MIGRATIONS  # read at call time, so a test can add a step
        async with self._connections.pooled() as db:
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

    async def close(self) -> None:
        """Stop listening and close every connection; none of the stores can be used afterwards."""
        await self.switches.close()
        await self.sessions.close()
        await self._connections.close()

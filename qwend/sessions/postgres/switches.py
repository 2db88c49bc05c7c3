"""Tool switches in PostgreSQL: a switch is stored and announced with NOTIFY in one transaction, and every daemon
LISTENs, so all of them agree."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from contextlib import suppress

import psycopg

from qwend.sessions.postgres.connections import Connection, PostgresConnections
from qwend.sessions.switches import ToolSwitches

log = logging.getLogger(__name__)

SWITCHES_CHANNEL = "qwend_tool_switches"


async def _switches(db: Connection) -> dict[str, bool]:
    rows = await (await db.execute("SELECT name, enabled FROM tool_switches")).fetchall()
    return {row["name"]: row["enabled"] for row in rows}


class PostgresToolSwitches:
    """A ToolSwitchStore in the `tool_switches` table; other daemons' switches arrive on a connection of this
    daemon's own that listens for them."""

    def __init__(self, connections: PostgresConnections) -> None:
        self._connections = connections
        self._listener: asyncio.Task | None = None

    async def follow(self, apply: ToolSwitches) -> None:
        """Tell `apply` the stored switches, then listen for other daemons' changes until `close`."""
        async with self._connections.pooled() as db:
            apply(await _switches(db))
        self._listener = asyncio.create_task(self._listen(apply), name="qwend-tool-switches")

    async def _listen(self, apply: ToolSwitches) -> None:
        """Apply other daemons' tool switches as they are made; after a lost connection, all of them again."""
        while True:
            try:
                async with await self._connections.dedicated() as db:
                    await db.execute(f"LISTEN {SWITCHES_CHANNEL}")
                    apply(await _switches(db))  # what changed while it was not listening
                    async for note in db.notifies():
                        change = json.loads(note.payload)
                        apply({change["name"]: change["enabled"]})
            except psycopg.Error as exc:
                log.warning("lost the tool-switch listener's connection to %s (%s); reconnecting",
                            self._connections.where, exc)
                await asyncio.sleep(1.0)

    async def save(self, name: str, enabled: bool) -> None:
        """Store the switch and tell every daemon listening on this database."""
        async with self._connections.pooled() as db, db.transaction():
            await db.execute("INSERT INTO tool_switches VALUES (%s, %s, %s) ON CONFLICT (name) DO UPDATE SET "
                             "enabled = excluded.enabled, updated_at = excluded.updated_at",
                             (name, enabled, time.time()))
            await db.execute("SELECT pg_notify(%s, %s)",
                             (SWITCHES_CHANNEL, json.dumps({"name": name, "enabled": enabled})))

    async def close(self) -> None:
        """Stop listening."""
        if self._listener is not None:
            self._listener.cancel()
            with suppress(asyncio.CancelledError):
                await self._listener

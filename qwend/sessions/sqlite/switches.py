"""Tool switches in a SQLite file: one daemon owns the file, so there is no one else to tell."""

from __future__ import annotations

import sqlite3
import time

from qwend.sessions.sqlite.connection import SqliteConnection, transaction
from qwend.sessions.switches import ToolSwitches


class SqliteToolSwitches:
    """A ToolSwitchStore in the `tool_switches` table."""

    def __init__(self, connection: SqliteConnection) -> None:
        self._connection = connection

    async def follow(self, apply: ToolSwitches) -> None:
        """Tell `apply` the stored switches; nothing changes them but this daemon."""
        rows = await self._connection.run(lambda db: db.execute("SELECT name, enabled FROM tool_switches").fetchall())
        apply({name: bool(enabled) for name, enabled in rows})

    async def save(self, name: str, enabled: bool) -> None:
        """Remember the switch across restarts."""
        def save(db: sqlite3.Connection) -> None:
            with transaction(db):
                db.execute("INSERT INTO tool_switches VALUES (?,?,?) ON CONFLICT (name) DO UPDATE SET "
                           "enabled = excluded.enabled, updated_at = excluded.updated_at",
                           (name, int(enabled), time.time()))

        await self._connection.run(save)

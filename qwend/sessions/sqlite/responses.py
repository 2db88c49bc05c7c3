"""Stored responses in a SQLite file."""

from __future__ import annotations

import json
import sqlite3

from qwend.sessions.responses import StoredResponse, response_from_row, response_not_found
from qwend.sessions.sqlite.connection import SqliteConnection, transaction


class SqliteResponseStore:
    """A ResponseStore in the `responses` table."""

    def __init__(self, connection: SqliteConnection) -> None:
        self._connection = connection

    async def save(self, response: StoredResponse) -> None:
        """Store a response, or replace it."""
        row = (response.id, response.previous_id, response.created_at, json.dumps(response.body),
               json.dumps(response.items), response.owner)

        def save(db: sqlite3.Connection) -> None:
            with transaction(db):
                db.execute("INSERT OR REPLACE INTO responses (id, previous_id, created_at, body, items, owner) "
                           "VALUES (?,?,?,?,?,?)", row)

        await self._connection.run(save)

    async def get(self, response_id: str) -> StoredResponse:
        """A stored response; raises ResponseNotFound."""
        row = await self._connection.run(lambda db: db.execute("SELECT * FROM responses WHERE id = ?",
                                                               (response_id,)).fetchone())
        if row is None:
            raise response_not_found(response_id)
        return response_from_row(row)

    async def delete(self, response_id: str) -> None:
        """Forget a response; raises ResponseNotFound."""
        def delete(db: sqlite3.Connection) -> int:
            with transaction(db):
                return db.execute("DELETE FROM responses WHERE id = ?", (response_id,)).rowcount

        if not await self._connection.run(delete):
            raise response_not_found(response_id)

"""Stored responses in PostgreSQL: any daemon sharing the database reads what another stored."""

from __future__ import annotations

import json

from qwend.sessions.postgres.connections import PostgresConnections
from qwend.sessions.responses import StoredResponse, response_from_row, response_not_found


class PostgresResponseStore:
    """A ResponseStore in the `responses` table."""

    def __init__(self, connections: PostgresConnections) -> None:
        self._connections = connections

    async def save(self, response: StoredResponse) -> None:
        """Store a response, or replace it."""
        async with self._connections.pooled() as db:
            await db.execute(
                "INSERT INTO responses (id, previous_id, created_at, body, items, owner) "
                "VALUES (%s,%s,%s,%s,%s,%s) ON CONFLICT (id) DO UPDATE SET "
                "body = excluded.body, items = excluded.items",
                (response.id, response.previous_id, response.created_at, json.dumps(response.body),
                 json.dumps(response.items), response.owner))

    async def get(self, response_id: str) -> StoredResponse:
        """A stored response; raises ResponseNotFound."""
        async with self._connections.pooled() as db:
            row = await (await db.execute("SELECT * FROM responses WHERE id = %s", (response_id,))).fetchone()
        if row is None:
            raise response_not_found(response_id)
        return response_from_row(row)

    async def delete(self, response_id: str) -> None:
        """Forget a response; raises ResponseNotFound."""
        async with self._connections.pooled() as db:
            cursor = await db.execute("DELETE FROM responses WHERE id = %s", (response_id,))
        if cursor.rowcount == 0:
            raise response_not_found(response_id)

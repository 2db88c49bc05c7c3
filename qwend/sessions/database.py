"""The database a daemon keeps its state in, and the stores on it: sessions (store.py), tool switches
(switches.py) and stored responses (responses.py). SQLite by default, PostgreSQL for several daemons; each
backend's package (sqlite/, postgres/) implements all three on its one connection or pool, so that psycopg
loads only when PostgreSQL is chosen."""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

from qwend.sessions.responses import ResponseStore
from qwend.sessions.store import SessionStore
from qwend.sessions.switches import ToolSwitchStore


class Database(Protocol):
    """One database: its connections, its schema, and a store for each thing it holds."""

    @property
    def sessions(self) -> SessionStore:
        """Sessions and their messages."""
        ...

    @property
    def switches(self) -> ToolSwitchStore:
        """Tool switches."""
        ...

    @property
    def responses(self) -> ResponseStore:
        """Responses API responses."""
        ...

    async def start(self) -> None:
        """Connect (where that needs the event loop) and bring the schema up to date."""
        ...

    async def close(self) -> None:
        """Release the database's resources; none of its stores can be used afterwards."""
        ...


def open_database(database: str | Path, *, pool_size: int = 10) -> Database:
    """The database `database` names: a postgresql:// URL (several daemons may share it) or a SQLite file's
    path."""
    if isinstance(database, str) and database.startswith(("postgresql://", "postgres://")):
        from qwend.sessions.postgres.database import PostgresDatabase  # psycopg loads only when chosen

        return PostgresDatabase(database, pool_size=pool_size)
    from qwend.sessions.sqlite.database import SqliteDatabase

    return SqliteDatabase(Path(database))

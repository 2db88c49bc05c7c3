"""The session store for a database setting: SQLite by default, PostgreSQL for several daemons. Kept apart from
the protocol (store.py), which both stores implement, so that neither imports the other's module."""

from __future__ import annotations

from pathlib import Path

from qwend.sessions.store import SessionStore


def open_store(database: str | Path, *, pool_size: int = 10) -> SessionStore:
    """The store for `database`: a postgresql:// URL (several daemons may share it) or a SQLite file's path."""
    if isinstance(database, str) and database.startswith(("postgresql://", "postgres://")):
        from qwend.sessions.postgres import PostgresSessionStore  # psycopg loads only when chosen

        return PostgresSessionStore(database, pool_size=pool_size)
    from qwend.sessions.sqlite import SqliteSessionStore

    return SqliteSessionStore(Path(database))

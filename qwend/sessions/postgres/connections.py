"""The connections every store on a PostgreSQL database shares: a pool for calls, and connections of the
daemon's own for what must outlive a call (advisory locks, LISTEN)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import psycopg
from psycopg import AsyncConnection
from psycopg.conninfo import conninfo_to_dict
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from qwend.errors import DatabaseUnavailable, QwendError

Connection = AsyncConnection[dict[str, Any]]
CONNECT_TIMEOUT_S = 10.0


def describe(url: str) -> str:
    """The database a URL names, without its password: safe for logs and error messages."""
    try:
        parts = conninfo_to_dict(url)
    except psycopg.ProgrammingError:
        return "(an unreadable database URL)"
    return f"{parts.get('host', 'localhost')}:{parts.get('port', 5432)}/{parts.get('dbname', '')}"


class PostgresConnections:
    """A pool of autocommit connections with dict rows, opened by `open`, and more such connections on request."""

    def __init__(self, url: str, *, pool_size: int = 10) -> None:
        self.url = url
        self.where = describe(url)
        self._pool: AsyncConnectionPool = AsyncConnectionPool(
            url, min_size=1, max_size=pool_size, open=False, name="qwend-sessions",
            kwargs={"autocommit": True, "row_factory": dict_row},
            check=AsyncConnectionPool.check_connection)  # a restarted server leaves dead connections behind

    async def open(self) -> None:
        """Connect the pool; a server that does not answer in time is a clear error."""
        try:
            await self._pool.open(wait=True, timeout=CONNECT_TIMEOUT_S)
        except PoolTimeout:
            await self._pool.close()
            raise QwendError(f"could not connect to the PostgreSQL database at {self.where} within "
                             f"{CONNECT_TIMEOUT_S:g} s (QWEND_DATABASE_URL)") from None

    @asynccontextmanager
    async def pooled(self) -> AsyncIterator[Connection]:
        """A pooled connection; a database that cannot be reached is a 503, not a 500."""
        try:
            async with self._pool.connection(timeout=CONNECT_TIMEOUT_S) as db:
                yield db
        except (psycopg.OperationalError, PoolTimeout) as exc:
            raise self.unavailable(exc) from None

    async def dedicated(self) -> Connection:
        """A connection of its own, outside the pool: the caller closes it."""
        return await AsyncConnection.connect(self.url, autocommit=True, row_factory=dict_row)

    def unavailable(self, exc: Exception) -> DatabaseUnavailable:
        reason = str(exc).strip() or type(exc).__name__
        return DatabaseUnavailable(f"the session database at {self.where} cannot be reached: {reason}")

    async def close(self) -> None:
        await self._pool.close()

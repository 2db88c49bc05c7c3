"""The one connection to a SQLite file that every store on it shares, and its explicit transactions."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import anyio.to_thread

T = TypeVar("T")
BUSY_TIMEOUT_S = 10.0


@contextmanager
def transaction(db: sqlite3.Connection) -> Iterator[None]:
    """BEGIN IMMEDIATE ... COMMIT, or ROLLBACK on any error."""
    # IMMEDIATE takes the write lock up front, so a transaction never fails halfway on a lock upgrade.
    db.execute("BEGIN IMMEDIATE")
    try:
        yield
        db.execute("COMMIT")
    except BaseException:
        if db.in_transaction:
            db.execute("ROLLBACK")
        raise


class SqliteConnection:
    """One connection serving every call under a lock, each `run` on a worker thread so the event loop
    never waits on disk."""

    def __init__(self, path: Path) -> None:
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
        except BaseException:
            self._db.close()
            raise

    def call(self, fn: Callable[..., T], *args: Any) -> T:
        """`fn(connection, *args)` on this thread, under the lock: for what runs before the event loop."""
        with self._lock:
            return fn(self._db, *args)

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """`fn(connection, *args)` on a worker thread, under the lock."""
        return await anyio.to_thread.run_sync(self.call, fn, *args)

    async def close(self) -> None:
        await self.run(sqlite3.Connection.close)

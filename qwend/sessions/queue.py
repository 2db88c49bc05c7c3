"""Turns of one session run one at a time, in arrival order, and a waiting turn knows its place."""

from __future__ import annotations

import asyncio
from contextlib import asynccontextmanager


class SessionTurns:
    """Turns of one session run one at a time, in arrival order (asyncio.Lock wakes waiters FIFO)."""

    def __init__(self) -> None:
        self._locks: dict[str, asyncio.Lock] = {}
        self._users: dict[str, int] = {}  # holders and waiters, to drop idle locks

    def ahead(self, session_id: str) -> int:
        return self._users.get(session_id, 0)

    async def drained(self, timeout: float) -> None:
        """Wait, `timeout` seconds at most, until no turn holds or waits for a session: a turn the stopping
        daemon cancelled stores itself as far as it came before the database closes."""
        deadline = asyncio.get_running_loop().time() + timeout
        while self._users and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.05)

    @asynccontextmanager
    async def hold(self, session_id: str):
        lock = self._locks.setdefault(session_id, asyncio.Lock())
        self._users[session_id] = self._users.get(session_id, 0) + 1
        try:
            async with lock:
                yield
        finally:
            self._users[session_id] -= 1
            if not self._users[session_id]:
                del self._users[session_id], self._locks[session_id]

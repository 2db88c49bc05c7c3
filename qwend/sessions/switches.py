"""The tool switch store interface: which tools an operator switched on or off, kept across restarts and,
in a shared database, agreed between the daemons sharing it."""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

ToolSwitches = Callable[[dict[str, bool]], None]  # told tool name -> enabled, for some or all tools


class ToolSwitchStore(Protocol):
    """Where tool switches live."""

    async def follow(self, apply: ToolSwitches) -> None:
        """Tell `apply` every stored switch now, and again whenever another daemon changes one (until the
        database is closed)."""
        ...

    async def save(self, name: str, enabled: bool) -> None:
        """Remember that a tool was switched on or off; every daemon sharing the database is told."""
        ...

"""Everything a running daemon holds, built once in the app lifespan: no module-level state."""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field

from qwend.engine.manager import ModelManager
from qwend.models.store import ModelStore
from qwend.settings import Settings


@dataclass
class Runtime:
    settings: Settings
    store: ModelStore
    models: ModelManager
    started_at: float = field(default_factory=time.time)
    tool_parse_outcomes: Counter[str] = field(default_factory=Counter)  # parsed / repaired / fell_back / ...

    @classmethod
    def create(cls, settings: Settings) -> Runtime:
        store = ModelStore(settings.store_dir, settings.models_dir)
        return cls(settings, store, ModelManager(settings, store))

    async def close(self) -> None:
        self.models.close()

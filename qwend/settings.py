"""One configuration tree: flags override `QWEND_*` environment variables, which override `.env`."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_MODEL = "qwen2.5-coder:0.5b"


def default_data_dir() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share"
    return Path(base) / "qwend"


class Settings(BaseSettings):
    """Everything qwend reads from its environment. Every field is `QWEND_<NAME>`."""

    model_config = SettingsConfigDict(env_prefix="QWEND_", env_file=".env", extra="ignore")

    # server
    host: str = Field("127.0.0.1", description="Address to bind; loopback by default.")
    port: int = Field(5997, ge=1, le=65535, description="TCP port to serve on.")
    log_level: Literal["debug", "info", "warning", "error"] = Field("info", description="Log verbosity.")

    # models on disk
    data_dir: Path = Field(default_factory=default_data_dir, description="Where pulled models and state live.")
    models_dir: Path = Field(
        Path("models"), description="A folder of GGUF files usable by file name (seed 004's `models/`)."
    )
    model: str = Field(DEFAULT_MODEL, description="Model loaded at start and used when a request names none.")
    pull_missing: bool = Field(True, description="Fetch the start model on `serve` when it is not on disk.")

    # llama.cpp
    context_length: int | None = Field(
        None, ge=256, description="Context window in tokens; default the model's trained length, capped at 32768."
    )
    threads: int | None = Field(None, ge=1, description="CPU threads for generation; default all cores.")
    batch_size: int = Field(512, ge=32, description="Prompt tokens evaluated per llama.cpp batch.")
    gpu_layers: int = Field(-1, description="Layers offloaded to a GPU when llama.cpp was built with one; -1 all.")

    # scheduling
    queue_size: int = Field(16, ge=0, description="Jobs that may wait per model before requests get 503 busy.")

    @property
    def store_dir(self) -> Path:
        return self.data_dir / "models"

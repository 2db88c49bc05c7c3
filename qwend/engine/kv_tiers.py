"""Saved KV state of llama.cpp sequences, kept outside the context: a conversation whose cells were taken by
others, or that outlived the daemon, still has its next turn read only what is new.

Two tiers, both least recently used first out:
- RAM, bounded in bytes; what no longer fits is written to disk;
- disk, under `<data_dir>/kv-cache/<model key>/`, bounded in bytes; what no longer fits is deleted.
Pinned states (a system prompt and tool schemas warmed by `/restore_cache`) are never dropped.

A file holds a header line (the model key, the tokens, the payload's size and sha256) and the payload (what
`llama_state_seq_get_data` wrote). The model key names the model file and llama.cpp's version. A file whose
header or checksum does not hold, or that names another model, is deleted, never loaded.

Used from one thread (the decode loop), so it keeps no lock.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from qwend.engine.base import common_prefix
from qwend.private_files import create_private, private_dir

MAGIC = b"QWENDKV1\n"
log = logging.getLogger(__name__)


def model_key(path: Path, engine_version: str) -> str:
    """Names the weights a state was computed with: a changed file or llama.cpp release makes old states
    unusable (a misfit is rejected by llama.cpp too, but cannot always be told from a fit)."""
    stat = path.stat()
    identity = f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}|{engine_version}"
    return hashlib.sha256(identity.encode()).hexdigest()[:24]


@dataclass(eq=False)
class SavedState:
    tokens: tuple[int, ...]
    size: int
    used: float  # when last saved or restored
    pinned: bool = False
    data: bytearray | None = None  # held in RAM
    path: Path | None = None  # written to disk


class KvTiers:
    def __init__(
        self, directory: Path | None, key: str, *, ram_bytes: int, disk_bytes: int, whole_only: bool = False,
    ) -> None:
        """`directory` None (or `disk_bytes` 0) keeps states in RAM only. `whole_only`: a state serves only a
        prompt that goes on past all of it (a recurrent model's: its state is at its last token, and cannot
        be cut back to a shorter start), and a longer one does not make it redundant."""
        self.key = key
        self.whole_only = whole_only
        self.ram_bytes, self.disk_bytes = ram_bytes, disk_bytes
        self._dir = directory / key if directory is not None and disk_bytes > 0 else None
        self._states: list[SavedState] = []
        if self._dir is not None:
            private_dir(self._dir.parent)  # what the model was told can be read back from these: this user's only
            private_dir(self._dir)
            self._states = [state for file in sorted(self._dir.glob("*.kv")) if (state := self._index(file))]

    @property
    def states(self) -> list[SavedState]:
        return list(self._states)

    def best(self, prompt: Sequence[int]) -> tuple[SavedState | None, int]:
        """The saved state sharing the longest start with `prompt`, and how many tokens it shares."""
        found, longest = None, 0
        for state in self._states:
            if (n := common_prefix(state.tokens, prompt)) > longest and self._serves(state, n, len(prompt)):
                found, longest = state, n
        return found, longest

    def _serves(self, state: SavedState, shared: int, prompt_length: int) -> bool:
        return not self.whole_only or shared == len(state.tokens) < prompt_length

    def covers(self, tokens: Sequence[int]) -> bool:
        """Whether a saved state already holds these tokens (or more that start with them, where a state can
        be cut back)."""
        tokens = tuple(tokens)
        if self.whole_only:
            return any(s.tokens == tokens for s in self._states)
        return any(len(s.tokens) >= len(tokens) and s.tokens[:len(tokens)] == tokens for s in self._states)

    def put(self, tokens: Sequence[int], data: bytearray, *, pinned: bool = False) -> None:
        """Keep the state of `tokens`; states it extends are dropped (unless pinned)."""
        tokens = tuple(tokens)
        same = next((s for s in self._states if s.tokens == tokens), None)
        if same is not None and (same.pinned or not pinned):
            same.used = time.time()
            return
        if not self.whole_only:  # (a recurrent state's shorter starts are the points a conversation goes back to)
            for old in [s for s in self._states if not s.pinned and tokens[:len(s.tokens)] == s.tokens]:
                self._drop(old)
        self._states.append(SavedState(tokens, len(data), time.time(), pinned, data=data))
        self._fit()

    def read(self, state: SavedState) -> bytearray | None:
        """The state's bytes, from RAM or checked from disk; None (and the state forgotten) when the file is
        gone or fails its checks."""
        state.used = time.time()
        if state.data is not None:
            return state.data
        data = self._load(state.path, payload=True)
        if data is None:
            self._drop(state)
            return None
        return data[1]

    def flush(self) -> None:
        """Write every state held only in RAM to disk (the daemon is stopping)."""
        for state in sorted(self._states, key=lambda s: s.used, reverse=True):
            if state.path is None and self._dir is not None:
                self._write(state)
        self._fit()

    # -- internals

    def _fit(self) -> None:
        """Spill RAM over its bound to disk, then delete disk over its bound, least recently used first."""
        in_ram = sorted((s for s in self._states if s.data is not None and not s.pinned), key=lambda s: s.used)
        ram = sum(s.size for s in self._states if s.data is not None)
        for state in in_ram:
            if ram <= self.ram_bytes:
                break
            if self._dir is not None and (state.path is not None or self._write(state)):
                state.data = None
            else:
                self._drop(state)
            ram -= state.size
        on_disk = sorted((s for s in self._states if s.path is not None and s.data is None and not s.pinned),
                         key=lambda s: s.used)
        disk = sum(s.size for s in self._states if s.path is not None)
        for state in on_disk:
            if disk <= self.disk_bytes:
                break
            self._drop(state)
            disk -= state.size

    def _drop(self, state: SavedState) -> None:
        if state in self._states:
            self._states.remove(state)
        if state.path is not None:
            state.path.unlink(missing_ok=True)

    def _write(self, state: SavedState) -> bool:
        header = {"model": self.key, "tokens": list(state.tokens), "size": state.size, "pinned": state.pinned,
                  "sha256": hashlib.sha256(state.data).hexdigest()}
        path = self._dir / f"{hashlib.sha256(repr(state.tokens).encode()).hexdigest()[:32]}.kv"
        partial = path.with_suffix(".partial")
        try:
            with open(create_private(partial, os.O_WRONLY | os.O_TRUNC), "wb") as file:
                file.write(MAGIC + json.dumps(header).encode() + b"\n")
                file.write(state.data)
            partial.replace(path)  # a stop mid-write leaves no half file under the real name
        except OSError as exc:
            log.warning("could not save a KV state to %s: %s", path, exc)
            partial.unlink(missing_ok=True)
            return False
        state.path = path
        return True

    def _index(self, file: Path) -> SavedState | None:
        loaded = self._load(file, payload=False)
        if loaded is None:
            return None
        header, _ = loaded
        return SavedState(header["tokens"], header["size"], file.stat().st_mtime, header["pinned"], path=file)

    def _load(self, file: Path, *, payload: bool) -> tuple[dict, bytearray | None] | None:
        """A file's header (and checked payload); a file that fails a check is deleted."""
        try:
            with file.open("rb") as stream:
                if stream.readline() != MAGIC:
                    raise ValueError("not a qwend KV state")
                header = json.loads(stream.readline())
                if header.get("model") != self.key:
                    raise ValueError("saved for another model")
                header["tokens"] = tuple(int(token) for token in header["tokens"])
                header["size"], header["pinned"] = int(header["size"]), bool(header["pinned"])
                if not payload:
                    return header, None
                data = bytearray(header["size"])
                if stream.readinto(data) != header["size"] or stream.read(1):
                    raise ValueError("truncated or overlong")
                if hashlib.sha256(data).hexdigest() != header["sha256"]:
                    raise ValueError("checksum mismatch")
                return header, data
        except (OSError, ValueError, KeyError, TypeError) as exc:  # json's errors are ValueErrors
            log.warning("discarding KV state %s: %s", file, exc)
            file.unlink(missing_ok=True)
            return None

"""The rules a model name must follow before it is turned into a path, and the one containment check every
path derived from a name goes through.

Names come from clients (a request's `model`, `DELETE /api/delete`, `/api/pull`, load calls) and are turned
into files and folders in two roots, the store and the models folder. So:

- a name holds no control characters (NUL included), no backslash, and at most MAX_NAME_CHARS characters:
  anything else is refused as an invalid request (400), before the file system is touched;
- `hf:OWNER/REPO[:FILE]` follows the Hugging Face repository-id rules (ASCII letters, digits, `_`, `.` and
  `-`, a letter, digit or `_` at both ends of each part, no `--` or `..`, at most 96 characters), and FILE is
  a plain `.gguf` file name: no folders (the strict choice: nothing in it can climb out of the repository's
  folder), else 400;
- a file or folder in the models folder or the store is named by one plain component;
- whatever the name becomes is resolved (symlinks and `..`) and must lie strictly inside the real path of
  its root (`inside`); a path that leaves it is not found (404), like any name that matches nothing.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from qwend.errors import InvalidRequest

MAX_NAME_CHARS = 1024  # a hub name is at most 3 + 96 + 1 + 255; a configured folder path may be longer
MAX_REPO_CHARS = 96  # huggingface_hub's validate_repo_id
MAX_FILE_CHARS = 255  # one file name on common file systems (bytes, as Linux counts them)

_REPO_PART = re.compile(r"[A-Za-z0-9_](?:[A-Za-z0-9_.-]*[A-Za-z0-9_])?")
HUB_FILE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.+-]*\.gguf", re.IGNORECASE)
LOCAL_GGUF = re.compile(r"\w[\w.+-]*\.gguf", re.IGNORECASE)  # a file in the models folder or the store
LOCAL_FOLDER = re.compile(r"\w[\w.+ -]*")  # a Hugging Face folder there (transformers, MLX)
HUB_SYNTAX = "hf:OWNER/REPO or hf:OWNER/REPO:FILE.gguf (FILE a plain file name, no folders)"


def is_hub_repo(name: str) -> bool:
    """Whether `name` reads as OWNER/REPO, a Hugging Face repository written without `hf:` (each part checked
    alone and bounded first: the part pattern backtracks on long runs)."""
    parts = name.split("/")
    return len(parts) == 2 and all(len(p) <= MAX_REPO_CHARS and _REPO_PART.fullmatch(p) for p in parts)


def check_name(name: str) -> None:
    """Refuse, as an invalid request, a name no model can have: too long, or with control characters or
    backslashes (a NUL cuts a path short in C; a backslash separates folders on Windows)."""
    if len(name) > MAX_NAME_CHARS:
        raise InvalidRequest(f"the model name is {len(name):,} characters long; at most {MAX_NAME_CHARS:,} are "
                             "accepted", param="model")
    if any(ord(c) < 32 or ord(c) == 127 or c == "\\" for c in name):
        raise InvalidRequest(f"the model name {name[:80]!r} holds a control character or a backslash",
                             param="model")


def parse_hub_name(name: str) -> tuple[str, str | None]:
    """`hf:OWNER/REPO[:FILE]` as (OWNER/REPO, FILE or None); InvalidRequest, saying which rule, otherwise."""
    repo, _, filename = name.removeprefix("hf:").partition(":")

    def refuse(reason: str) -> InvalidRequest:
        return InvalidRequest(f"invalid Hugging Face model name {name[:120]!r}: {reason}; write {HUB_SYNTAX}",
                              param="model")

    parts = repo.split("/")
    if len(parts) != 2 or not all(parts):
        raise refuse("the repository must be OWNER/REPO")
    if not all(_REPO_PART.fullmatch(part) for part in parts):
        raise refuse("OWNER and REPO are ASCII letters, digits, '_', '.' and '-', not starting or ending with "
                      "'.' or '-'")
    if "--" in repo or ".." in repo:
        raise refuse("'--' and '..' are not allowed in a repository id")
    if len(repo) > MAX_REPO_CHARS:
        raise refuse(f"a repository id has at most {MAX_REPO_CHARS} characters")
    if ":" in name.removeprefix("hf:") and not HUB_FILE.fullmatch(filename):
        raise refuse("FILE must be a plain .gguf file name (letters, digits, '_', '.', '+', '-')")
    if len(filename) > MAX_FILE_CHARS:
        raise refuse(f"a file name has at most {MAX_FILE_CHARS} characters")
    return repo, filename or None


def inside(root: Path, *parts: str) -> Path | None:
    """`root/parts...` as a real path (symlinks and `..` resolved) when it lies strictly inside the real path
    of `root`; None when it leaves it (or is `root` itself, or cannot be resolved: a symlink loop, a part
    longer than any file name can be)."""
    if any(len(os.fsencode(part)) > MAX_FILE_CHARS for part in parts):
        return None
    try:
        real_root = root.expanduser().resolve()
        path = real_root.joinpath(*parts).resolve()
    except (OSError, RuntimeError, ValueError):  # RuntimeError: a symlink loop (Python 3.11)
        return None
    return path if path != real_root and path.is_relative_to(real_root) else None


def real_path(name: str) -> Path | None:
    """A configured path's real path (relative ones from the working directory); None when it has none."""
    try:
        return Path(name).expanduser().resolve()
    except (OSError, RuntimeError, ValueError):
        return None

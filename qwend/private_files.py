"""What holds conversations, keys or logs is readable by the daemon's user alone: the data folder 0700, the
log files, the SQLite database, the key file and saved KV states 0600. New ones are created so; ones an older
qwend left world-readable (0755/0644) are tightened when the daemon starts."""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

from qwend.settings import Settings

log = logging.getLogger(__name__)

PRIVATE_DIR = 0o700
PRIVATE_FILE = 0o600
SQLITE_SIDE_FILES = ("-wal", "-shm", "-journal")


def private_dir(path: Path) -> Path:
    """`path` made (with any missing parents) and, new or old, open to this user alone. A shared folder
    (sticky bit, like /tmp) named as one is left as it is: closing it would lock out everyone else."""
    path.mkdir(parents=True, exist_ok=True, mode=PRIVATE_DIR)
    mode = path.stat().st_mode
    if mode & stat.S_ISVTX:
        log.warning("%s is a shared folder (sticky bit); it is not made private", path)
    elif stat.S_IMODE(mode) != PRIVATE_DIR:  # mkdir's mode does nothing to a folder that was there before
        _chmod(path, PRIVATE_DIR)
    return path


def private_file(path: Path) -> None:
    """Tighten `path` to 0600 if it exists."""
    try:
        mode = path.lstat().st_mode
    except FileNotFoundError:
        return
    if stat.S_ISREG(mode) and stat.S_IMODE(mode) != PRIVATE_FILE:
        _chmod(path, PRIVATE_FILE)


def create_private(path: str | Path, flags: int) -> int:
    """`os.open(path, flags | O_CREAT)` with 0600 for a new file, and an old file tightened to it."""
    fd = os.open(path, flags | os.O_CREAT, PRIVATE_FILE)
    try:
        if stat.S_IMODE(os.fstat(fd).st_mode) != PRIVATE_FILE:
            os.fchmod(fd, PRIVATE_FILE)
    except OSError:  # (a file someone else owns): it still opens. No log line: the log file opens through here
        pass
    return fd


def private_sqlite(path: Path) -> None:
    """The SQLite file created 0600 before SQLite opens it (its -wal and -shm files take the database's
    mode), and side files an older qwend left readable tightened."""
    os.close(create_private(path, os.O_RDWR))
    for suffix in SQLITE_SIDE_FILES:
        private_file(path.with_name(path.name + suffix))


def secure_data_dir(settings: Settings) -> None:
    """Make the data folder private, and tighten what an older qwend wrote in or for it: the key file, the
    log file and its rotated copies, the SQLite database, the saved KV states."""
    private_dir(settings.data_dir)
    private_file(settings.api_keys_file)
    if settings.log_path is not None:
        for file in [settings.log_path, *settings.log_path.parent.glob(settings.log_path.name + ".*")]:
            private_file(file)
    database = str(settings.database)
    if not database.startswith(("postgresql://", "postgres://")):
        for suffix in ("", *SQLITE_SIDE_FILES):
            private_file(Path(database + suffix))
    if settings.saved_kv_dir.is_dir():
        private_dir(settings.saved_kv_dir)
        for entry in settings.saved_kv_dir.rglob("*"):
            if entry.is_dir() and not entry.is_symlink():
                private_dir(entry)
            else:
                private_file(entry)


def _chmod(path: Path, mode: int) -> None:
    try:
        path.chmod(mode)
    except OSError as exc:  # (not ours to change): the daemon still runs, and says so
        log.warning("could not make %s private: %s", path, exc)

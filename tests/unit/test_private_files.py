"""No key reaches a log line (uvicorn's WebSocket lines carry the URL's query, where a browser puts
`?api_key=`), and what holds conversations, keys or logs is this user's alone: the data folder 0700, the log
files, the SQLite database, the key file and saved KV states 0600, old installs' looser modes tightened."""

import io
import json
import logging
import os
import stat
from pathlib import Path

import pytest

from qwend.access import create_key
from qwend.engine.kv_tiers import KvTiers
from qwend.logs import configure_logging, redact
from qwend.private_files import secure_data_dir
from qwend.sessions.sqlite.database import SqliteDatabase
from qwend.sessions.store import StoredMessage
from qwend.settings import Settings

SECRET = "qwend-Zm9vYmFyLXNlY3JldC1rZXk"


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def loose_umask():
    """The umask most systems run with, whatever this test process had: new files 0644 unless made private."""
    old = os.umask(0o022)
    yield
    os.umask(old)


@pytest.fixture
def logging_to(tmp_path):
    """configure_logging for a data dir under tmp_path; the root logger put back afterwards."""
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    settings = Settings(_env_file=None, data_dir=tmp_path / "data", log_file_mb=1, log_file_backups=2)
    configure_logging(settings)
    yield settings
    for handler in root.handlers:
        handler.close()
    root.handlers = saved[0]
    root.setLevel(saved[1])


@pytest.mark.parametrize(("line", "clean"), [
    (f'127.0.0.1:5000 - "WebSocket /ws/abc?api_key={SECRET}" [accepted]',
     '127.0.0.1:5000 - "WebSocket /ws/abc" [accepted]'),
    (f'127.0.0.1:5000 - "WebSocket /api/chat/ws?x=1&api_key={SECRET}" 403',
     '127.0.0.1:5000 - "WebSocket /api/chat/ws" 403'),
    (f"fetching https://example.com/a?token={SECRET} failed", "fetching https://example.com/a failed"),
    (f"bad request: api_key={SECRET} and key={SECRET}", "bad request: api_key=[redacted] and key=[redacted]"),
    ("POST /v1/chat/completions 200 12 ms", "POST /v1/chat/completions 200 12 ms"),
])
def test_redact_drops_queries_and_secret_values(line, clean):
    assert redact(line) == clean


def test_no_key_reaches_the_console_or_the_log_file(logging_to):
    console = io.StringIO()
    next(h for h in logging.getLogger().handlers if not hasattr(h, "doRollover")).setStream(console)
    # what uvicorn's WebSocket protocol writes when it accepts (or refuses) a connection
    uvicorn_error = logging.getLogger("uvicorn.error")
    uvicorn_error.warning('%s - "WebSocket %s" [accepted]', ("127.0.0.1", 5000), f"/ws/abc?api_key={SECRET}")
    uvicorn_error.warning('%s - "WebSocket %s" 403', ("127.0.0.1", 5000), f"/api/chat/ws?api_key={SECRET}")
    try:
        raise ValueError(f"could not reach http://127.0.0.1/x?api_key={SECRET}")
    except ValueError:
        logging.getLogger("qwend.test").exception("failed")
    for handler in logging.getLogger().handlers:
        handler.flush()
    console = console.getvalue()
    written = logging_to.log_path.read_text()
    assert '"WebSocket /ws/abc" [accepted]' in console and "could not reach http://127.0.0.1/x" in console
    assert SECRET not in console and SECRET not in written
    lines = [json.loads(line) for line in written.splitlines()]
    assert lines[0]["message"] == "('127.0.0.1', 5000) - \"WebSocket /ws/abc\" [accepted]"
    assert "ValueError: could not reach http://127.0.0.1/x" in lines[-1]["exception"]


def test_the_log_file_and_its_rotated_copies_are_private(logging_to, loose_umask):
    configure_logging(logging_to)  # (again, under the loose umask)
    path = logging_to.log_path
    logging.getLogger("qwend.test").warning("first")
    rotating = next(h for h in logging.getLogger().handlers if hasattr(h, "doRollover"))
    rotating.doRollover()
    logging.getLogger("qwend.test").warning("second")
    assert mode(path) == 0o600 and mode(path.with_name(path.name + ".1")) == 0o600


def test_new_files_are_private(tmp_path, loose_umask):
    data = tmp_path / "data"
    create_key(data / "api-keys", "laptop")
    assert mode(data) == 0o700 and mode(data / "api-keys") == 0o600
    KvTiers(data / "kv-cache", "m", ram_bytes=0, disk_bytes=1 << 20).put((1, 2, 3), bytearray(b"state"))
    (saved,) = (data / "kv-cache" / "m").glob("*.kv")
    assert mode(saved) == 0o600 and mode(data / "kv-cache") == 0o700 and mode(data / "kv-cache" / "m") == 0o700


async def test_the_session_database_and_its_wal_files_are_private(tmp_path, loose_umask):
    path = tmp_path / "qwend.db"
    db = SqliteDatabase(path)
    try:
        record = await db.sessions.create("default", title="private")
        await db.sessions.append_turn(record.id, [StoredMessage("user", "my secret plans")])
        files = [path, path.with_name("qwend.db-wal"), path.with_name("qwend.db-shm")]
        assert all(file.exists() and mode(file) == 0o600 for file in files)
    finally:
        await db.close()


def test_an_old_install_is_tightened_at_start(tmp_path):
    settings = Settings(_env_file=None, data_dir=tmp_path / "data")
    data = settings.data_dir
    (data / "kv-cache" / "m").mkdir(parents=True)
    old = [settings.api_keys_file, settings.log_path, data / "inference_server.log.1", data / "qwend.db",
           data / "qwend.db-wal", data / "qwend.db-shm", data / "kv-cache" / "m" / "a.kv"]
    for file in old:
        file.write_text("x")
        file.chmod(0o644)
    for folder in (data, data / "kv-cache", data / "kv-cache" / "m"):
        folder.chmod(0o755)
    secure_data_dir(settings)
    assert mode(data) == 0o700 and mode(data / "kv-cache") == 0o700 and mode(data / "kv-cache" / "m") == 0o700
    assert {file.name: mode(file) for file in old} == {file.name: 0o600 for file in old}


def test_a_shared_folder_is_not_locked(tmp_path):
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o1777)  # like /tmp, named as a data folder by mistake
    secure_data_dir(Settings(_env_file=None, data_dir=shared))
    assert stat.S_IMODE(shared.stat().st_mode) == 0o1777

"""A real `qwend serve` with an API key, its console at info: a key a browser puts in a WebSocket URL
(`?api_key=`) reaches neither the console nor `inference_server.log`, and the data folder, the log and the
session database are the daemon user's alone, even where an older qwend left them readable."""

import json
import stat

import httpx
import pytest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from tests.conftest import Daemon

KEY = "qwend-secret-that-must-never-be-logged-7f3a"
WRONG = "qwend-wrong-key-that-must-never-be-logged-9c1b"


def mode(path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_websocket_keys_stay_out_of_the_logs_and_the_files_are_private(model_path, tmp_path):
    server = Daemon(tmp_path, QWEND_API_KEYS=KEY)
    log = server.data_dir / "inference_server.log"
    for old in (log, server.data_dir / "qwend.db"):  # what an older qwend left: 0644 files in a 0755 folder
        old.touch()
        old.chmod(0o644)
    server.data_dir.chmod(0o755)
    server.start(with_model=False, log_level="info")
    try:
        ws_url = server.url.replace("http://", "ws://")
        sid = httpx.post(f"{server.url}/create_session", json={},
                         headers={"Authorization": f"Bearer {KEY}"}).json()["session_id"]
        for path in (f"/ws/{sid}", "/api/chat/ws"):
            with connect(f"{ws_url}{path}?api_key={KEY}", origin="http://localhost:3000", open_timeout=30):
                pass
            with pytest.raises(InvalidStatus):
                connect(f"{ws_url}{path}?api_key={WRONG}", origin="http://localhost:3000", open_timeout=30)
    finally:
        server.stop()
    console = (tmp_path / "daemon.log").read_text()
    written = log.read_text()
    assert f'"WebSocket /ws/{sid}" [accepted]' in console  # uvicorn's line is there, without its query
    messages = [json.loads(line)["message"] for line in written.splitlines()]
    assert any(m.endswith('"WebSocket /api/chat/ws" [accepted]') for m in messages)
    for secret in (KEY, WRONG):
        assert secret not in console and secret not in written
    assert "api_key" not in console and "api_key" not in written
    assert mode(server.data_dir) == 0o700 and mode(log) == 0o600
    database = server.data_dir / "qwend.db"
    assert mode(database) == 0o600
    for side in ("qwend.db-wal", "qwend.db-shm"):
        assert not (server.data_dir / side).exists() or mode(server.data_dir / side) == 0o600

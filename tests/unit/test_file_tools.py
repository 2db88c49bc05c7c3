"""File tools: off by default, and confined to the workspace however a path tries to leave it."""

import pytest

from qwend.runtime import Runtime
from qwend.settings import Settings


@pytest.fixture
def workspace(tmp_path):
    return tmp_path / "workspace"


@pytest.fixture
def registry(tmp_path, workspace):
    settings = Settings(_env_file=None, data_dir=tmp_path, enable_file_operations=True, workspace_dir=workspace)
    return Runtime.create(settings).tools


async def test_write_read_and_list(registry, workspace):
    wrote = await registry.invoke("write_file", {"path": "notes/today.txt", "content": "héllo"})
    assert wrote.success and wrote.result == "wrote 6 bytes to notes/today.txt"
    assert (workspace / "notes" / "today.txt").read_text() == "héllo"
    assert (await registry.invoke("read_file", {"path": "notes/today.txt"})).result == "héllo"
    assert (await registry.invoke("list_files", {})).result == [{"path": "notes", "type": "folder", "size": 0}]
    assert (await registry.invoke("list_files", {"path": "notes"})).result == [
        {"path": "notes/today.txt", "type": "file", "size": 6}
    ]


@pytest.mark.parametrize("path", ["../secret.txt", "/etc/passwd", "notes/../../secret.txt", "link/secret.txt", "link"])
async def test_paths_outside_the_workspace_are_refused(registry, tmp_path, workspace, path):
    (tmp_path / "secret.txt").write_text("top secret")
    workspace.mkdir()
    (workspace / "link").symlink_to(tmp_path)
    for tool, arguments in (("read_file", {"path": path}), ("write_file", {"path": path, "content": "x"}),
                            ("list_files", {"path": path})):
        result = await registry.invoke(tool, arguments)
        assert result.success is False and "outside the workspace" in result.error, (tool, path)
    assert (tmp_path / "secret.txt").read_text() == "top secret"

"""File tools confined to one workspace folder (`QWEND_WORKSPACE_DIR`); off unless ENABLE_FILE_OPERATIONS.

Paths are resolved (symlinks included) before use and must stay inside the workspace, so `..`, absolute
paths and links that point out are all refused the same way.
"""

from __future__ import annotations

from pathlib import Path

from qwend.tools.base import ToolContext, ToolError, tool

MAX_READ_BYTES = 1 << 20
MAX_WRITE_BYTES = 1 << 20
MAX_ENTRIES = 500


@tool(timeout=10, group="files")
def read_file(path: str, context: ToolContext) -> str:
    """Read a text file from the workspace.

    Args:
        path: File path relative to the workspace folder.
    """
    target = _inside(context, path)
    if not target.is_file():
        raise ToolError(f"{path} is not a file in the workspace")
    if target.stat().st_size > MAX_READ_BYTES:
        raise ToolError(f"{path} is larger than {MAX_READ_BYTES} bytes")
    return target.read_text(encoding="utf-8", errors="replace")


@tool(timeout=10, group="files")
def write_file(path: str, content: str, context: ToolContext) -> str:
    """Write a text file in the workspace, creating folders as needed and replacing an existing file.

    Args:
        path: File path relative to the workspace folder.
        content: The text to write.
    """
    data = content.encode()
    if len(data) > MAX_WRITE_BYTES:
        raise ToolError(f"content is larger than {MAX_WRITE_BYTES} bytes")
    target = _inside(context, path)
    if target == _workspace(context) or target.is_dir():
        raise ToolError(f"{path} is a folder")
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(data)
    return f"wrote {len(data)} bytes to {target.relative_to(_workspace(context))}"


@tool(timeout=10, group="files")
def list_files(context: ToolContext, path: str = ".") -> list[dict[str, str | int]]:
    """List a folder of the workspace.

    Args:
        path: Folder path relative to the workspace folder.
    """
    folder = _inside(context, path)
    if not folder.is_dir():
        raise ToolError(f"{path} is not a folder in the workspace")
    root = _workspace(context)
    entries = sorted(folder.iterdir())[:MAX_ENTRIES]
    return [
        {"path": str(e.relative_to(root)), "type": "folder" if e.is_dir() else "file",
         "size": e.stat().st_size if e.is_file() else 0}
        for e in entries
    ]


def _workspace(context: ToolContext) -> Path:
    root = context.settings.workspace.expanduser().resolve()
    root.mkdir(parents=True, exist_ok=True)
    return root


def _inside(context: ToolContext, path: str) -> Path:
    root = _workspace(context)
    target = (root / path).resolve()
    if not target.is_relative_to(root):
        raise ToolError(f"{path} is outside the workspace")
    return target

"""Logging: the console for people, a rotating file of JSON lines for tools (seed 003's
`inference_server.log`), and the id of the request each line was written for."""

from __future__ import annotations

import json
import logging
from contextvars import ContextVar
from datetime import datetime, timezone
from logging.handlers import RotatingFileHandler

from qwend.settings import Settings

# the request a line belongs to: set by the request-log middleware for the task (and the tasks it starts)
# that serves the request; a context variable is the one kind of module-level state that is per request
request_id: ContextVar[str] = ContextVar("request_id", default="-")

ACCESS_FIELDS = ("method", "path", "status", "duration_ms", "client")


class _WithRequestId(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = request_id.get()
        return True


class JsonLines(logging.Formatter):
    """One JSON object per line: time, level, logger, request_id, message, and an access line's fields."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": datetime.fromtimestamp(record.created, timezone.utc).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "request_id": getattr(record, "request_id", "-"),
            "message": record.getMessage(),
        }
        entry.update({name: getattr(record, name) for name in ACCESS_FIELDS if hasattr(record, name)})
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


def configure_logging(settings: Settings) -> None:
    """The root logger's handlers, replaced (so calling it twice does not double every line). The console
    shows `log_level`; the file keeps info too (one line per request) whatever the console shows."""
    level = logging.getLevelName(settings.log_level.upper())
    console = logging.StreamHandler()
    console.setLevel(level)
    console.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s [%(request_id)s]: %(message)s"))
    handlers: list[logging.Handler] = [console]
    path = settings.log_path
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        file = RotatingFileHandler(path, maxBytes=settings.log_file_mb << 20, backupCount=settings.log_file_backups,
                                   encoding="utf-8")
        file.setFormatter(JsonLines())
        file.setLevel(min(level, logging.INFO))
        handlers.append(file)
    root = logging.getLogger()
    root.handlers = handlers
    for handler in handlers:
        handler.addFilter(_WithRequestId())
    root.setLevel(min(level, logging.INFO))

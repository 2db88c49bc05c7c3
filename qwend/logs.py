"""Logging: the console for people, a rotating file of JSON lines for tools (seed 003's
`inference_server.log`), and the id of the request each line was written for."""

from __future__ import annotations

import json
import logging
import os
import re
from contextvars import ContextVar
from datetime import datetime, timezone
from logging.handlers import RotatingFileHandler

from qwend.private_files import create_private
from qwend.settings import Settings

# the request a line belongs to: set by the request-log middleware for the task (and the tasks it starts)
# that serves the request; a context variable is the one kind of module-level state that is per request
request_id: ContextVar[str] = ContextVar("request_id", default="-")

ACCESS_FIELDS = ("method", "path", "status", "duration_ms", "client")
# a query string can carry a key (a browser's WebSocket sends `?api_key=`, and uvicorn logs the path it accepted
# or refused with its query): every line loses every URL's query, and a `name=value` naming a secret its value
QUERY = re.compile(r"(/[^\s?\"'<>]*)\?[^\s\"'<>]*")
SECRET_PAIR = re.compile(r"\b((?:api[_-]?key|key|token|access[_-]?token|secret|password)=)[^\s&\"'<>]+", re.I)


def redact(text: str) -> str:
    """`text` without URL query strings or secret-looking `name=value` values."""
    return SECRET_PAIR.sub(r"\1[redacted]", QUERY.sub(r"\1", text))


class _WithRequestId(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = request_id.get()
        return True


class _Redacted(logging.Filter):
    """Every line a handler writes passes `redact`: uvicorn's and libraries' lines too, tracebacks included."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
            if (clean := redact(message)) != message:
                record.msg, record.args = clean, None
            if record.exc_info and not record.exc_text:  # formatters use exc_text when it is set
                record.exc_text = redact(logging.Formatter().formatException(record.exc_info))
        except Exception:  # (a line with bad arguments): the handler reports it as it would have
            pass
        return True


class _PrivateRotatingFile(RotatingFileHandler):
    """Opens its file (and, after a rollover, the new one) 0600: log lines can say what clients asked."""

    def _open(self):
        fd = create_private(self.baseFilename, os.O_WRONLY | os.O_APPEND)
        return open(fd, self.mode, encoding=self.encoding, errors=self.errors)


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
            entry["exception"] = record.exc_text or self.formatException(record.exc_info)
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
        file = _PrivateRotatingFile(path, maxBytes=settings.log_file_mb << 20,
                                    backupCount=settings.log_file_backups, encoding="utf-8")
        file.setFormatter(JsonLines())
        file.setLevel(min(level, logging.INFO))
        handlers.append(file)
    root = logging.getLogger()
    root.handlers = handlers
    # uvicorn's loggers write through these handlers too, so its lines (a WebSocket's URL) pass the redaction:
    # its own logging config, where something installed it, had them print on their own
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logging.getLogger(name).handlers = []
        logging.getLogger(name).propagate = True
    for handler in handlers:
        handler.addFilter(_WithRequestId())
        handler.addFilter(_Redacted())
    root.setLevel(min(level, logging.INFO))

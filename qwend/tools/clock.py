"""`get_current_datetime`: the time now, timezone-aware."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from qwend.tools.base import ToolError, tool


@tool(timeout=5)
def get_current_datetime(timezone: str | None = None) -> dict[str, str | int]:
    """Get the current date and time.

    Args:
        timezone: An IANA timezone name such as "Europe/Paris" or "UTC"; default the machine's local zone.
    """
    if timezone:
        try:
            zone = ZoneInfo(timezone)
        except (ZoneInfoNotFoundError, ValueError):
            raise ToolError(f"unknown timezone {timezone!r}; use an IANA name such as 'Europe/Paris'") from None
        now = datetime.now(zone)
    else:
        now = datetime.now().astimezone()
    return {
        "datetime": now.isoformat(timespec="seconds"),
        "date": now.date().isoformat(),
        "time": now.strftime("%H:%M:%S"),
        "weekday": now.strftime("%A"),
        "timezone": timezone or now.tzname() or "local",
        "utc_offset": now.strftime("%z"),
        "unix": int(now.timestamp()),
    }

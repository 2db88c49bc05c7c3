"""The browser UI at `/ui`: the static files of qwend/web, served with a strict Content-Security-Policy.

The page renders model output, which is untrusted: DOMPurify sanitizes it, and the policy is the second
wall. Scripts, styles, connections and images come from this daemon only (images also as `data:` URLs), so
a Markdown image or link a prompt injection writes cannot carry a conversation to another host.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from starlette.datastructures import MutableHeaders
from starlette.staticfiles import StaticFiles
from starlette.types import Message, Receive, Scope, Send

WEB = Path(__file__).resolve().parent.parent / "web"
CSP = "; ".join([
    "default-src 'self'", "img-src 'self' data:", "script-src 'self'", "style-src 'self'", "connect-src 'self'",
    "object-src 'none'", "base-uri 'none'", "form-action 'none'", "frame-ancestors 'none'",
])
HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-cache",  # revalidate (ETag): a daemon upgrade shows its new page at once
}


class UiFiles(StaticFiles):
    """StaticFiles whose every answer, 304s and redirects included, carries `HEADERS`."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def secured(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in HEADERS.items():
                    headers[name] = value
            await send(message)

        await super().__call__(scope, receive, secured)


def mount_ui(app: FastAPI) -> None:
    """Serve the UI at `/ui/` (`/ui` redirects there); the access guard lets its files through without a key."""
    app.mount("/ui", UiFiles(directory=WEB, html=True), name="ui")

"""`web_fetch`: a URL's text, with size and time limits, and no way into the machine's own network (SSRF: every
hop goes through qwend/net.py)."""

from __future__ import annotations

import ipaddress

import anyio
import httpx

from qwend.net import FetchRefused, fetch_public
from qwend.tools.base import ToolContext, ToolError, tool

BLOCKS = ("p", "div", "br", "li", "tr", "h1", "h2", "h3", "h4", "h5", "h6", "pre", "blockquote", "section",
          "article", "header", "footer", "table", "ul", "ol", "dt", "dd")
TEXT_TYPES = ("text/", "application/json", "application/xml", "application/xhtml+xml", "application/javascript")


def _check_text(response: httpx.Response) -> None:
    content_type = response.headers.get("content-type", "text/plain").lower()
    if not (content_type.startswith(TEXT_TYPES) or "+json" in content_type or "+xml" in content_type):
        raise ToolError(f"{response.url} is {content_type.split(';')[0]}, not text")


@tool(timeout=30, group="web")
async def web_fetch(url: str, context: ToolContext, max_chars: int = 20000) -> dict:
    """Fetch a web page or text document over http(s) and return its readable text.

    Args:
        url: The http or https URL to fetch.
        max_chars: Most characters of text to return.
    """
    settings = context.settings
    allowed = [ipaddress.ip_network(n, strict=False) for n in settings.fetch_allow_networks]
    try:
        with anyio.fail_after(settings.fetch_timeout):
            response, body, cut = await fetch_public(url, allowed, settings.fetch_max_bytes, check=_check_text)
    except FetchRefused as exc:
        raise ToolError(str(exc)) from None
    except TimeoutError:
        raise ToolError(f"no complete answer from {url} within {settings.fetch_timeout:g} s") from None
    except httpx.HTTPError as exc:
        raise ToolError(f"fetching {url} failed: {exc}") from None
    content_type = response.headers.get("content-type", "").split(";")[0].strip().lower()
    text = body.decode(response.encoding or "utf-8", errors="replace")
    title = None
    if "html" in content_type:
        title, text = html_to_text(text)
    return {
        "url": str(response.url),
        "status": response.status_code,
        "content_type": content_type,
        "title": title,
        "text": text[:max_chars],
        "truncated": cut or len(text) > max_chars,
    }


def html_to_text(html: str) -> tuple[str | None, str]:
    """The page title and its visible text, one paragraph per line."""
    import lxml.html

    try:
        document = lxml.html.fromstring(html)
    except (ValueError, lxml.etree.ParserError):
        return None, html
    for element in document.xpath("//script|//style|//noscript|//template|//svg"):
        element.drop_tree()
    title = document.findtext(".//title")
    body = document.find("body")
    body = document if body is None else body
    for element in body.iter(*BLOCKS):  # block elements end a line; inline ones (b, a, span) do not
        element.tail = "\n" + (element.tail or "")
    lines = (" ".join(line.split()) for line in body.text_content().splitlines())
    return (title.strip() if title else None), "\n".join(line for line in lines if line)

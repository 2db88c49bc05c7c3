"""`web_fetch`: a URL's text, with size and time limits, and no way into the machine's own network (SSRF).

Checking a URL and then letting the HTTP client resolve it again loses to DNS rebinding, and a redirect can
point anywhere. So each hop is resolved once here, every address it resolves to must be public, and the
connection goes to that checked address (the name still sent as Host and as TLS SNI, so certificates are
verified against it). Redirects are followed by hand, each one checked the same way.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable
from dataclasses import dataclass

import anyio
import httpx

from qwend.tools.base import ToolContext, ToolError, tool

MAX_REDIRECTS = 5
BLOCKS = ("p", "div", "br", "li", "tr", "h1", "h2", "h3", "h4", "h5", "h6", "pre", "blockquote", "section",
          "article", "header", "footer", "table", "ul", "ol", "dt", "dd")
TEXT_TYPES = ("text/", "application/json", "application/xml", "application/xhtml+xml", "application/javascript")


IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
NAT64 = ipaddress.IPv6Network("64:ff9b::/96")  # RFC 6052's well-known prefix: the last 32 bits are the IPv4
# not global, whatever this Python's ipaddress tables say: RFC 8215's local-use NAT64 prefix (its IPv4 may sit
# at any of RFC 6052's offsets), and the deprecated site-local prefix
LOCAL_V6 = (ipaddress.IPv6Network("64:ff9b:1::/48"), ipaddress.IPv6Network("fec0::/10"))


@dataclass(frozen=True)
class Target:
    url: httpx.URL
    address: str  # the checked IP the connection goes to


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
            response, body, cut = await fetch_public(url, allowed, settings.fetch_max_bytes)
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


async def fetch_public(
    url: str, allowed: list, max_bytes: int, *, check: Callable[[httpx.Response], None] = _check_text
) -> tuple[httpx.Response, bytes, bool]:
    """GET `url` (redirects followed, each hop checked by resolve_public); `check` may refuse the answer by
    its headers, before its body is read (ToolError). Returns it, at most `max_bytes` of it, and whether
    there was more."""
    async with httpx.AsyncClient(follow_redirects=False, trust_env=False) as client:
        current = url
        for _ in range(MAX_REDIRECTS + 1):
            target = await resolve_public(current, allowed)
            request = client.build_request(
                "GET", target.url.copy_with(host=target.address),
                headers={"Host": target.url.netloc.decode(), "User-Agent": "qwend-web-fetch", "Accept": "*/*"},
                extensions={"sni_hostname": target.url.host},
            )
            response = await client.send(request, stream=True)
            try:
                response.request.url = target.url  # report the real URL, not the pinned address
                location = response.headers.get("location")
                if response.is_redirect and location:
                    current = str(target.url.join(location))
                    continue
                check(response)
                return response, *await _read_capped(response, max_bytes)
            finally:
                await response.aclose()
    raise ToolError(f"more than {MAX_REDIRECTS} redirects")


async def resolve_public(url: str, allowed: list) -> Target:
    """Parse, resolve once, and refuse any address that is not public (unless its network is allowed)."""
    try:
        parsed = httpx.URL(url)
    except httpx.InvalidURL as exc:
        raise ToolError(f"not a valid URL: {exc}") from None
    if parsed.scheme not in ("http", "https"):
        raise ToolError(f"only http and https URLs can be fetched, not {parsed.scheme or 'a bare path'!r}")
    if not parsed.host:
        raise ToolError("the URL has no host")
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    try:
        infos = await anyio.getaddrinfo(parsed.host, port, type=socket.SOCK_STREAM)
    except OSError as exc:
        raise ToolError(f"cannot resolve {parsed.host}: {exc}") from None
    addresses = [info[4][0] for info in infos]
    for address in addresses:  # every answer, since the connection might go to any of them
        ip = ipaddress.ip_address(address.split("%")[0])
        if not is_public(ip, allowed):
            raise ToolError(f"refusing to fetch {parsed.host}: it resolves to {ip}, a private or local address")
    return Target(parsed, addresses[0])


def is_public(ip: IPAddress, allowed: list) -> bool:
    """Whether a connection to `ip` stays out of this machine's own networks: a global unicast address (or
    one in an `allowed` network) and, when it is an IPv6 form that carries an IPv4 address a router would
    translate to, that IPv4 address judged the same way (so `64:ff9b::7f00:1` is loopback, not public)."""
    if any(ip in network for network in allowed):
        return True
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped:  # a dual-stack socket connects straight to the IPv4 address
            return is_public(ip.ipv4_mapped, allowed)
        if any(ip in network for network in LOCAL_V6):
            return False
    if not ip.is_global or ip.is_multicast:
        return False
    return all(is_public(inner, allowed) for inner in embedded_ipv4(ip))


def embedded_ipv4(ip: IPAddress) -> list[ipaddress.IPv4Address]:
    """The IPv4 addresses an IPv6 address carries for a translator or tunnel to reach: IPv4-compatible
    (::a.b.c.d), NAT64 (64:ff9b::/96), 6to4 (2002::/16), Teredo (server and client) and ISATAP."""
    if not isinstance(ip, ipaddress.IPv6Address):
        return []
    value, low = int(ip), ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    found = []
    if value >> 32 == 0 or ip in NAT64:
        found.append(low)
    if ip.sixtofour:
        found.append(ip.sixtofour)
    if ip.teredo:
        found.extend(ip.teredo)
    if (value >> 32) & 0xFDFFFFFF == 0x5EFE:  # an ISATAP interface id: 0000:5efe or 0200:5efe, then the IPv4
        found.append(low)
    return found


async def _read_capped(response: httpx.Response, max_bytes: int) -> tuple[bytes, bool]:
    """At most `max_bytes` of the body, and whether there was more (the rest is never downloaded)."""
    body = bytearray()
    async for chunk in response.aiter_bytes():
        body += chunk
        if len(body) > max_bytes:
            return bytes(body[:max_bytes]), True
    return bytes(body), False


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

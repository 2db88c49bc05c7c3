"""Fetching a URL from a request or a tool with no way into the machine's own network (SSRF): web_fetch and
image URLs both go through here.

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

MAX_REDIRECTS = 5


class FetchRefused(Exception):
    """The URL may not be fetched: not http(s), unresolvable, a private or local address, too many redirects,
    or an answer its caller's check refused."""


IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
NAT64 = ipaddress.IPv6Network("64:ff9b::/96")  # RFC 6052's well-known prefix: the last 32 bits are the IPv4
# not global, whatever this Python's ipaddress tables say: RFC 8215's local-use NAT64 prefix (its IPv4 may sit
# at any of RFC 6052's offsets), and the deprecated site-local prefix
LOCAL_V6 = (ipaddress.IPv6Network("64:ff9b:1::/48"), ipaddress.IPv6Network("fec0::/10"))


@dataclass(frozen=True)
class Target:
    url: httpx.URL
    address: str  # the checked IP the connection goes to


async def fetch_public(
    url: str, allowed: list, max_bytes: int, *, check: Callable[[httpx.Response], None]
) -> tuple[httpx.Response, bytes, bool]:
    """GET `url` (redirects followed, each hop checked by resolve_public); `check` may refuse the answer by
    its headers, before its body is read (FetchRefused). Returns it, at most `max_bytes` of it, and whether
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
    raise FetchRefused(f"more than {MAX_REDIRECTS} redirects")


async def resolve_public(url: str, allowed: list) -> Target:
    """Parse, resolve once, and refuse any address that is not public (unless its network is allowed)."""
    try:
        parsed = httpx.URL(url)
    except httpx.InvalidURL as exc:
        raise FetchRefused(f"not a valid URL: {exc}") from None
    if parsed.scheme not in ("http", "https"):
        raise FetchRefused(f"only http and https URLs can be fetched, not {parsed.scheme or 'a bare path'!r}")
    if not parsed.host:
        raise FetchRefused("the URL has no host")
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    try:
        infos = await anyio.getaddrinfo(parsed.host, port, type=socket.SOCK_STREAM)
    except OSError as exc:
        raise FetchRefused(f"cannot resolve {parsed.host}: {exc}") from None
    addresses = [info[4][0] for info in infos]
    for address in addresses:  # every answer, since the connection might go to any of them
        ip = ipaddress.ip_address(address.split("%")[0])
        if not is_public(ip, allowed):
            raise FetchRefused(f"refusing to fetch {parsed.host}: it resolves to {ip}, a private or local address")
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

"""The public-address check sees through IPv6 forms that carry an IPv4 address a translator or tunnel would
reach (NAT64, 6to4, IPv4-compatible, IPv4-mapped, Teredo, ISATAP), for web_fetch and image URLs alike."""

import ipaddress

import pytest

from qwend.chat.images import with_fetched_images
from qwend.errors import InvalidRequest
from qwend.net import embedded_ipv4, is_public
from qwend.runtime import Runtime
from qwend.settings import Settings
from qwend.types import Image, Message

REFUSED = [
    "64:ff9b::7f00:1",  # NAT64 well-known prefix, 127.0.0.1 inside
    "64:ff9b::a9fe:a9fe",  # NAT64 to the cloud metadata address 169.254.169.254
    "64:ff9b::a00:1",  # NAT64 to 10.0.0.1
    "64:ff9b:1::808:808",  # RFC 8215 local-use NAT64 prefix: never global
    "2002:7f00:1::",  # 6to4 of 127.0.0.1
    "2002:a9fe:a9fe::1",  # 6to4 of 169.254.169.254
    "2002:c0a8:101::1",  # 6to4 of 192.168.1.1
    "::127.0.0.1",  # IPv4-compatible (deprecated)
    "::10.0.0.1",
    "::ffff:127.0.0.1",  # IPv4-mapped
    "::ffff:192.168.1.1",
    "2001:0:4136:e378:8000:63bf:80ff:fffe",  # Teredo whose client is 127.0.0.1
    "2001:0:808:808::f7f7:f7f7",  # Teredo at all: 2001::/32 is not a global prefix
    "2606:4700::5efe:7f00:1",  # ISATAP interface id with 127.0.0.1 in a global prefix
    "2606:4700::200:5efe:a00:1",  # the same, universal/local bit set, 10.0.0.1
    "fec0::1",  # deprecated site-local
    "::1", "::", "fe80::1", "fc00::1", "ff02::1", "2001:db8::1",
    "127.0.0.1", "10.0.0.1", "169.254.169.254", "100.64.0.1", "0.0.0.0", "224.0.0.1",
]
PUBLIC = [
    "8.8.8.8", "1.1.1.1", "2606:4700::1111", "2001:4860:4860::8888",
    "64:ff9b::808:808",  # NAT64 to 8.8.8.8
    "2002:808:808::1",  # 6to4 of 8.8.8.8
    "::ffff:8.8.8.8",
]


@pytest.mark.parametrize("address", REFUSED)
def test_addresses_that_reach_this_machine_or_its_networks_are_not_public(address):
    assert is_public(ipaddress.ip_address(address), []) is False


@pytest.mark.parametrize("address", PUBLIC)
def test_public_addresses_pass(address):
    assert is_public(ipaddress.ip_address(address), []) is True


@pytest.mark.parametrize(("address", "inner"), [
    ("64:ff9b::7f00:1", ["127.0.0.1"]),
    ("2002:7f00:1::", ["127.0.0.1"]),
    ("::127.0.0.1", ["127.0.0.1"]),
    ("2001:0:4136:e378:8000:63bf:80ff:fffe", ["65.54.227.120", "127.0.0.1"]),
    ("2606:4700::5efe:7f00:1", ["127.0.0.1"]),
    ("2606:4700::1111", []),
    ("8.8.8.8", []),
])
def test_the_embedded_ipv4_addresses_are_found(address, inner):
    assert embedded_ipv4(ipaddress.ip_address(address)) == [ipaddress.ip_address(a) for a in inner]


def test_an_allowed_network_still_lets_its_addresses_through():
    allowed = [ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_network("64:ff9b::/96")]
    assert is_public(ipaddress.ip_address("10.1.2.3"), allowed)
    assert is_public(ipaddress.ip_address("::ffff:10.1.2.3"), allowed)
    assert is_public(ipaddress.ip_address("64:ff9b::7f00:1"), allowed)  # the operator named the NAT64 prefix
    assert not is_public(ipaddress.ip_address("2002:7f00:1::"), allowed)


@pytest.mark.parametrize("host", ["[64:ff9b::7f00:1]", "[2002:7f00:1::]", "[::127.0.0.1]", "[::5efe:7f00:1]"])
async def test_web_fetch_refuses_embedded_loopback(tmp_path, host):
    tools = Runtime.create(Settings(_env_file=None, data_dir=tmp_path)).tools
    result = await tools.invoke("web_fetch", {"url": f"http://{host}/"})
    assert result.success is False and "private or local address" in result.error


async def test_an_image_url_with_embedded_loopback_is_refused(tmp_path):
    message = Message("user", "what is this?", images=(Image(b"", "image/png", url="http://[64:ff9b::7f00:1]/x.png"),))
    with pytest.raises(InvalidRequest, match="private or local address"):
        await with_fetched_images((message,), Settings(_env_file=None, data_dir=tmp_path))

"""Images given by URL: fetched only from public addresses (or networks the settings allow), of a supported
type and size, with a 400 naming the message otherwise; a text-only model never fetches them."""

from __future__ import annotations

import pytest

from qwend.api.wire.images import from_data_url
from qwend.chat.images import with_fetched_images
from qwend.errors import InvalidRequest
from qwend.settings import Settings
from qwend.types import Image, Message
from tests.http_server import Reply, http_server

PNG = b"\x89PNG\r\n\x1a\n" + bytes(100)


def settings(**overrides) -> Settings:
    return Settings(_env_file=None, fetch_allow_networks=["127.0.0.0/8"], **overrides)


def asking(url: str) -> tuple[Message, ...]:
    return (Message("user", "What is this?", images=(from_data_url(url, param="messages[0]"),)),)


def test_a_url_is_kept_for_later_and_other_schemes_are_refused():
    assert from_data_url(" https://example.com/a.png ", param="p") == Image(b"", "", url="https://example.com/a.png")
    with pytest.raises(InvalidRequest, match="data:<mime>;base64,<data> or http"):
        from_data_url("file:///etc/passwd", param="p")


async def test_an_image_is_fetched_with_its_type():
    routes = {"/a.png": lambda seen: Reply(body=PNG, headers={"Content-Type": "image/png"})}
    with http_server(routes) as (url, seen):
        (message,) = await with_fetched_images(asking(f"{url}/a.png"), settings())
    assert message.images == (Image(PNG, "image/png", url=f"{url}/a.png"),)


@pytest.mark.parametrize("reply, error", [
    (Reply(body="<html>", headers={"Content-Type": "text/html"}), "it is text/html, not one of image/jpeg"),
    (Reply(404, b"gone"), "HTTP 404"),
    (Reply(body=PNG * 300_000, headers={"Content-Type": "image/png"}), "larger than 20 MiB"),
])
async def test_what_is_not_a_usable_image_is_a_bad_request(reply, error):
    with http_server({"/x": lambda seen: reply}) as (url, _):
        with pytest.raises(InvalidRequest, match=error) as caught:
            await with_fetched_images(asking(f"{url}/x"), settings())
    assert caught.value.param == "messages[0]"


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "169.254.169.254", "10.0.0.1", "[::1]"])
async def test_private_addresses_are_refused_by_default(host):
    with pytest.raises(InvalidRequest, match="private or local address"):
        await with_fetched_images(asking(f"http://{host}:9/a.png"), Settings(_env_file=None))

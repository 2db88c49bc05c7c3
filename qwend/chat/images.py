"""Images given by http(s) URL, fetched for a model that reads images: public addresses only (the web_fetch
guard against requests reaching the machine's own network, qwend/net.py), the supported types, and the size limit."""

from __future__ import annotations

import ipaddress
from dataclasses import replace

import anyio
import httpx

from qwend.errors import InvalidRequest
from qwend.net import FetchRefused, fetch_public
from qwend.settings import Settings
from qwend.types import Image, Message

MIME_TYPES = ("image/jpeg", "image/png", "image/webp", "image/gif")
MAX_IMAGE_BYTES = 20 << 20


async def with_fetched_images(messages: tuple[Message, ...], settings: Settings) -> tuple[Message, ...]:
    """`messages` with every image given by URL downloaded; a URL that cannot be fetched is a 400."""
    if not any(image.url for m in messages for image in m.images):
        return messages
    fetched = []
    for i, message in enumerate(messages):
        images = [await _fetch(image.url, settings, f"messages[{i}]") if image.url else image
                  for image in message.images]
        fetched.append(replace(message, images=tuple(images)))
    return tuple(fetched)


async def _fetch(url: str, settings: Settings, param: str) -> Image:
    allowed = [ipaddress.ip_network(n, strict=False) for n in settings.fetch_allow_networks]
    try:
        with anyio.fail_after(settings.fetch_timeout):
            response, data, cut = await fetch_public(url, allowed, MAX_IMAGE_BYTES, check=_image_type)
    except TimeoutError:
        raise InvalidRequest(f"the image at {url} did not arrive within {settings.fetch_timeout:g} s",
                             param=param) from None
    except (FetchRefused, httpx.HTTPError) as exc:
        raise InvalidRequest(f"could not fetch the image at {url}: {exc}", param=param) from None
    if response.status_code != 200:
        raise InvalidRequest(f"could not fetch the image at {url}: HTTP {response.status_code}", param=param)
    if cut:
        raise InvalidRequest(f"the image at {url} is larger than {MAX_IMAGE_BYTES >> 20} MiB", param=param)
    return Image(data, _mime_type(response), url=url)


def _mime_type(response: httpx.Response) -> str:
    return response.headers.get("content-type", "").split(";")[0].strip().lower()


def _image_type(response: httpx.Response) -> None:
    if response.status_code == 200 and _mime_type(response) not in MIME_TYPES:
        raise FetchRefused(f"it is {_mime_type(response) or 'of no stated type'}, not one of {', '.join(MIME_TYPES)}")

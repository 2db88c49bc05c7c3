"""Images as the protocols send them (base64, data URLs), decoded once into `Image`."""

from __future__ import annotations

import base64
import binascii
import re

from qwend.chat.images import MAX_IMAGE_BYTES, MIME_TYPES
from qwend.errors import InvalidRequest
from qwend.types import Image

_DATA_URL = re.compile(r"data:([\w.+-]+/[\w.+-]+);base64,(.*)", re.DOTALL)


def from_base64(data: str, mime_type: str, *, param: str) -> Image:
    if mime_type not in MIME_TYPES:
        raise InvalidRequest(f"image type {mime_type!r} is not supported; use one of {', '.join(MIME_TYPES)}",
                             param=param)
    if len(data) > MAX_IMAGE_BYTES * 4 // 3 + 4:
        raise InvalidRequest(f"the image is larger than {MAX_IMAGE_BYTES >> 20} MiB", param=param)
    try:
        raw = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidRequest("the image is not valid base64", param=param) from None
    return Image(raw, mime_type)


def from_data_url(url: str, *, param: str) -> Image:
    """`data:image/png;base64,...`, or an http(s) URL, fetched later (chat/images.py) through the same guard
    as the web_fetch tool: public addresses only."""
    url = url.strip()
    if url.startswith(("http://", "https://")):
        return Image(b"", "", url=url)
    match = _DATA_URL.fullmatch(url)
    if match is None:
        raise InvalidRequest("images must be data:<mime>;base64,<data> or http(s) URLs", param=param)
    return from_base64(match.group(2), match.group(1), param=param)


def sniff_mime_type(data: str) -> str:
    """The type of a base64 image sent without one (Ollama's `images`), from its first bytes."""
    head = base64.b64decode(data[:16] + "=" * (-len(data[:16]) % 4), validate=False)
    if head.startswith(b"\x89PNG"):
        return "image/png"
    if head.startswith(b"GIF8"):
        return "image/gif"
    if head[:4] == b"RIFF":
        return "image/webp"
    return "image/jpeg"

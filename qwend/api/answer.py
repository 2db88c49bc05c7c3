"""The one way a protocol answers a request with a codec (api/wire/codec.py): the translators in api/ say
what each event becomes; this opens the events, streams or folds them, and puts errors where the protocol
expects them."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

from starlette.requests import Request
from starlette.responses import Response

from qwend.api.streaming import open_stream, unless_disconnected
from qwend.api.wire.codec import Codec
from qwend.errors import QwendError

E = TypeVar("E")  # an event of the core's stream
F = TypeVar("F")  # a frame of the protocol's stream
R = TypeVar("R")  # the folded answer


async def answer(
    request: Request, codec: Codec[F], events: AsyncIterator[E], *, stream: bool,
    frames: Callable[[AsyncIterator[E]], AsyncIterator[F]], fold: Callable[[AsyncIterator[E]], Awaitable[R]],
) -> Response | R:
    """The answer to a request whose work is `events`: run up to the first event first (`open_stream`), so
    that what fails before then is an HTTP error with its status; then stream the frames `frames` makes of
    the events, or `fold` them into one answer (cancelled when the client leaves first). The events are
    closed however the answer ends."""
    opened = await open_stream(events)
    if stream:
        return streamed(codec, frames(opened), source=opened)
    try:
        return await unless_disconnected(request, fold(opened))
    finally:
        await opened.aclose()


def streamed(
    codec: Codec[F], frames: AsyncIterator[F], *, source: AsyncIterator[Any] | None = None
) -> Response:
    """The codec's streaming response of `frames`: a QwendError after the 200 has gone out is the stream's
    last item, in the codec's shape, and `frames` (and the `source` it reads) are closed however the
    response ends, so a client that leaves cancels the work behind it."""
    return codec.response(_encoded(codec, frames, source))


async def _encoded(
    codec: Codec[F], frames: AsyncIterator[F], source: AsyncIterator[Any] | None
) -> AsyncIterator[Any]:
    try:
        async for frame in frames:
            yield codec.encode(frame)
    except QwendError as exc:
        yield codec.stream_error(exc)
    finally:
        await frames.aclose()
        if source is not None:
            await source.aclose()
    for item in codec.last:
        yield item

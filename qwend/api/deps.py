"""Request-scoped access to the Runtime, the one place routes reach daemon state from."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from qwend.runtime import Runtime


def _runtime(request: Request) -> Runtime:
    return request.app.state.runtime


RuntimeDep = Annotated[Runtime, Depends(_runtime)]

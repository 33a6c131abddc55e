"""Small request helpers."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import Request, Response

# nginx's "client closed request": what a request whose client left is counted as. The handler's own
# response model cannot describe the answer it never finished, and FastAPI validating the `None`
# returned instead logged an unhandled error and counted a 500.
CLIENT_CLOSED_REQUEST = 499


def with_cancellation(handler: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
    """Race a non-streaming handler against client disconnect, so a dropped client frees the engine.

    Cancelling the handler cancels AsyncLLM.generate, which aborts the request in the engine.
    """

    @functools.wraps(handler)
    async def wrapper(*args: Any, **kwargs: Any) -> Any:
        request: Request = kwargs["request"]
        work = asyncio.ensure_future(handler(*args, **kwargs))
        watch = asyncio.ensure_future(_wait_for_disconnect(request))
        done, _ = await asyncio.wait({work, watch}, return_when=asyncio.FIRST_COMPLETED)
        if work in done:
            watch.cancel()
            return work.result()
        work.cancel()
        return Response(status_code=CLIENT_CLOSED_REQUEST)  # no one reads it; the metrics and the log do

    return wrapper


async def _wait_for_disconnect(request: Request) -> None:
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return

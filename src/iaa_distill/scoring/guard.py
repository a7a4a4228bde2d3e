"""Protection of the HTTP service against oversized, stalled and too many uploads.

`UploadGuard` is an ASGI middleware for upload routes: it refuses a declared Content-Length over the limit
at once (413), counts the bytes actually received so a chunked body is cut off as soon as it passes the
limit (413, before it is spooled to disk), gives the whole body a read deadline (408), and lets at most
`max_uploads` requests upload at the same time (503 beyond). `HeaderTimeoutProtocol` closes connections
whose request headers have not arrived within `header_timeout` seconds (uvicorn has no such timeout).
"""
from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Any

from uvicorn.protocols.http.h11_impl import H11Protocol

Message = dict[str, Any]
ASGIApp = Callable[[Message, Callable[[], Awaitable[Message]], Callable[[Message], Awaitable[None]]], Awaitable[None]]


class _Refused(Exception):
    """The upload was cut off; `status` and `message` are the answer."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status, self.message = status, message


async def send_error(send: Callable[[Message], Awaitable[None]], status: int, message: str, file: str = "") -> None:
    """A JSON `{"error", "file"}` response sent straight over ASGI."""
    body = json.dumps({"error": message, "file": file}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
               (b"connection", b"close")]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class UploadGuard:
    """ASGI middleware limiting the size, read time and concurrency of request bodies on `paths`."""

    def __init__(self, app: ASGIApp, *, max_body: int, max_uploads: int, read_timeout: float,
                 paths: tuple[str, ...] = ("/score",), limit_text: str = ""):
        self.app, self.max_body, self.read_timeout, self.paths = app, max_body, read_timeout, paths
        self.limit_text = limit_text or f"{max_body:,} bytes"
        self.uploads = asyncio.Semaphore(max_uploads)

    async def __call__(self, scope: Message, receive, send) -> None:
        if scope["type"] != "http" or scope["path"] not in self.paths or scope["method"] != "POST":
            return await self.app(scope, receive, send)
        declared = dict(scope["headers"]).get(b"content-length", b"")
        if declared.isdigit() and int(declared) > self.max_body:
            return await send_error(send, 413, f"request too large (limit {self.limit_text})")
        if self.uploads.locked():
            return await send_error(send, 503, "too many uploads at once; try again in a moment")
        async with self.uploads:
            await self._guarded(scope, receive, send)

    async def _guarded(self, scope: Message, receive, send) -> None:
        loop = asyncio.get_running_loop()
        deadline, received, refused = loop.time() + self.read_timeout, 0, []

        async def counted_receive() -> Message:
            nonlocal received
            try:
                message = await asyncio.wait_for(receive(), max(0.0, deadline - loop.time()))
            except asyncio.TimeoutError:
                refused.append(_Refused(408, f"upload not completed within {self.read_timeout:g} s"))
                raise refused[-1] from None
            received += len(message.get("body", b""))
            if received > self.max_body:
                refused.append(_Refused(413, f"request too large (limit {self.limit_text})"))
                raise refused[-1]
            return message

        async def quiet_send(message: Message) -> None:
            if not refused:  # after a refusal the app answers a broken body: ours replaces its answer
                await send(message)

        try:
            await self.app(scope, counted_receive, quiet_send)
        except Exception:
            if not refused:
                raise
        if refused:
            await send_error(send, refused[0].status, refused[0].message)


class HeaderTimeoutProtocol(H11Protocol):
    """uvicorn's h11 protocol, plus: a connection must deliver its request headers within `header_timeout`."""

    header_timeout = 10.0

    def connection_made(self, transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_header_timer()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._arm_header_timer()

    def _arm_header_timer(self) -> None:
        waiting_for = self.cycle
        self.loop.call_later(self.header_timeout, self._close_if_no_request, waiting_for)

    def _close_if_no_request(self, previous_cycle: Any) -> None:
        """Close the connection when no new request has started since the timer was armed."""
        if self.cycle is previous_cycle and not self.transport.is_closing():
            self.transport.close()

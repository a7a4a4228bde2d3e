"""Protection of the HTTP service against oversized, stalled and too many uploads.

`UploadGuard` is an ASGI middleware for upload routes: it refuses a declared Content-Length over the limit
at once (413), counts the bytes actually received so a chunked body is cut off as soon as it passes the
limit (413, before it is spooled to disk), gives the whole body a read deadline (408), cuts off a body
that arrives slower than `min_rate` bytes/s on average once `grace` seconds have passed (408: slow clients
cannot sit on the upload slots), and lets at most `max_uploads` requests upload at the same time, at most
`per_client` of them from one address (503 beyond). `HeaderTimeoutProtocol` closes connections whose
request headers have not arrived within `header_timeout` seconds (uvicorn has no such timeout).

`PixelBudget` bounds the decoded pixels held by all requests together: a file's pixels are reserved
before it is decoded and released once it is scored, so memory stays bounded whatever the uploads.
"""
from __future__ import annotations

import asyncio
import json
import threading
from collections import Counter
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
                 paths: tuple[str, ...] = ("/score",), limit_text: str = "", per_client: int | None = None,
                 min_rate: float = 0.0, grace: float = 2.0):
        self.app, self.max_body, self.read_timeout, self.paths = app, max_body, read_timeout, paths
        self.limit_text = limit_text or f"{max_body:,} bytes"
        self.max_uploads, self.per_client = max_uploads, per_client or max_uploads
        self.min_rate, self.grace = min_rate, grace
        self.active: Counter[str] = Counter()  # uploads in progress, per client address

    async def __call__(self, scope: Message, receive, send) -> None:
        if scope["type"] != "http" or scope["path"] not in self.paths or scope["method"] != "POST":
            return await self.app(scope, receive, send)
        declared = dict(scope["headers"]).get(b"content-length", b"")
        if declared.isdigit() and int(declared) > self.max_body:
            return await send_error(send, 413, f"request too large (limit {self.limit_text})")
        client = (scope.get("client") or ("",))[0]
        if sum(self.active.values()) >= self.max_uploads:
            return await send_error(send, 503, "too many uploads at once; try again in a moment")
        if self.active[client] >= self.per_client:
            return await send_error(send, 503, f"too many uploads at once from {client} (limit {self.per_client})")
        self.active[client] += 1
        try:
            await self._guarded(scope, receive, send)
        finally:
            self.active[client] -= 1
            if not self.active[client]:
                del self.active[client]

    def _wait_limit(self, started: float, received: int, now: float, deadline: float) -> float:
        """Seconds the next chunk may take: the read deadline, and the time the minimum rate still allows."""
        if not self.min_rate:
            return max(0.0, deadline - now)
        rate_limit = started + max(self.grace, received / self.min_rate)
        return max(0.0, min(deadline, rate_limit) - now)

    async def _guarded(self, scope: Message, receive, send) -> None:
        loop = asyncio.get_running_loop()
        started = loop.time()
        deadline, received, refused = started + self.read_timeout, 0, []

        complete = False

        async def counted_receive() -> Message:
            nonlocal received, complete
            if complete:  # the body is in: later reads wait for a disconnect, unlimited
                return await receive()
            try:
                message = await asyncio.wait_for(receive(), self._wait_limit(started, received, loop.time(), deadline))
            except asyncio.TimeoutError:
                if loop.time() < deadline - 1e-3:
                    refused.append(_Refused(408, f"upload slower than {self.min_rate / 1024:g} KB/s; send it faster"))
                else:
                    refused.append(_Refused(408, f"upload not completed within {self.read_timeout:g} s"))
                raise refused[-1] from None
            received += len(message.get("body", b""))
            complete = not message.get("more_body", False)
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


class PixelBudget:
    """Decoded pixels shared by every request: `reserve` waits (up to `wait` s) until the pixels are free."""

    def __init__(self, total: int, wait: float = 30.0):
        self.total, self.free, self.wait = total, total, wait
        self._changed = threading.Condition()

    def reserve(self, pixels: int) -> int:
        """Take `pixels` (at most the whole budget: one image larger than it runs alone); 0 when it timed out."""
        pixels = min(pixels, self.total)
        with self._changed:
            if not self._changed.wait_for(lambda: self.free >= pixels, self.wait):
                return 0
            self.free -= pixels
        return pixels

    def release(self, pixels: int) -> None:
        with self._changed:
            self.free += pixels
            self._changed.notify_all()


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

"""Bounded time and connections for clients that are slow, stalled or hostile.

A connection costs the server a socket, parser state and, once its request runs, a task that
waits on the body. Without limits, a client that sends half its headers, or its headers and
then a byte a minute, holds all of that for as long as it likes, and a few hundred such
connections starve everyone else. Three rules bound it:

1. *Headers* (the request line and header block) must arrive within
   ``request_header_timeout_s`` of the connection opening, or of the first byte of the next
   request on a kept-alive connection: else ``408`` and the connection is closed.
   (uvicorn only times out idle kept-alive connections; this is the protocol subclass below.)
2. *Bodies*: the next piece must arrive within ``request_body_timeout_s``, and the whole body
   of N bytes within ``request_body_timeout_s + N / min_upload_kib_s``: else ``408``
   (:class:`RequestDeadlineMiddleware`, which wraps ``receive``).
3. *Connections per client address*: at most ``max_connections_per_client`` open at once;
   the next one is answered ``429`` and closed.

Content-Length over the limit is refused (413) before any body is read, by
``metrics.BodyLimitMiddleware`` and, per format, ``ingest.read_submission``.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter

import orjson

from service.api.errors import PROBLEM_MEDIA_TYPE, PROBLEMS, Problem


class RequestDeadlineMiddleware:
    """408 for a request body that stalls, or trickles in slower than the minimum rate."""

    def __init__(self, app, *, idle_timeout_s: float, min_bytes_per_s: float) -> None:
        self.app = app
        self.idle_timeout_s = idle_timeout_s
        self.min_bytes_per_s = min_bytes_per_s

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope["headers"]).get(b"content-length", b"")
        length = int(declared) if declared.isdigit() else None
        started = time.monotonic()
        # A chunked body (no Content-Length) has only the idle limit; its size limit bounds it.
        deadline = started + self.idle_timeout_s + (length or 0) / self.min_bytes_per_s
        state = {"done": False, "received": 0}

        async def receive_in_time():
            if state["done"]:  # the body is in: later calls only wait for a disconnect
                return await receive()
            wait = self.idle_timeout_s
            if length is not None:
                wait = min(wait, deadline - time.monotonic())
            try:
                message = await asyncio.wait_for(receive(), timeout=max(wait, 0.0))
            except TimeoutError:
                raise _timeout(state["received"], length, time.monotonic() - started) from None
            if message["type"] == "http.request":
                state["received"] += len(message.get("body", b""))
                state["done"] = not message.get("more_body", False)
            else:
                state["done"] = True
            return message

        await self.app(scope, receive_in_time, send)


def _timeout(received: int, length: int | None, elapsed: float) -> Problem:
    of = f" of {length}" if length is not None else ""
    return Problem("request-timeout", f"the request body stalled or arrived too slowly: {received}{of} "
                   f"bytes in {elapsed:.0f} s", headers={"Connection": "close"})  # fmt: skip


def raw_problem(code: str, detail: str, headers: dict[str, str] | None = None) -> bytes:
    """A whole HTTP/1.1 problem response, for the protocol layer (no ASGI app involved)."""
    status, title = PROBLEMS[code]
    body = orjson.dumps({"type": f"urn:reward3d:problem:{code}", "title": title, "status": status,
                         "detail": detail, "code": code})  # fmt: skip
    lines = [f"HTTP/1.1 {status} {title}", f"content-type: {PROBLEM_MEDIA_TYPE}",
             f"content-length: {len(body)}", "connection: close"]  # fmt: skip
    lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def guarded_protocol(*, header_timeout_s: float, max_per_client: int):
    """uvicorn's httptools protocol with rules 1 and 3 (module docstring), as a class for
    ``uvicorn.Config(http=...)``. The open-connection count is per server (one event loop)."""
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

    open_per_client: Counter[str] = Counter()

    class GuardedHttpToolsProtocol(HttpToolsProtocol):
        _client_host: str | None = None
        _header_timer: asyncio.TimerHandle | None = None

        def connection_made(self, transport) -> None:
            super().connection_made(transport)
            host = self.client[0] if self.client else None
            if host is not None and max_per_client > 0:
                self._client_host = host
                open_per_client[host] += 1
                if open_per_client[host] > max_per_client:
                    self._refuse("too-many-connections",
                                 f"this address already has {max_per_client} open connections",
                                 {"Retry-After": "5"})  # fmt: skip
                    return
            self._arm_header_timer()

        def connection_lost(self, exc) -> None:
            self._cancel_header_timer()
            if self._client_host is not None:
                open_per_client[self._client_host] -= 1
                if open_per_client[self._client_host] <= 0:
                    del open_per_client[self._client_host]
                self._client_host = None
            super().connection_lost(exc)

        # The parser's callbacks: a request starts (next one on a kept-alive connection), and
        # its headers are complete.
        def on_message_begin(self) -> None:
            super().on_message_begin()
            if self._header_timer is None:
                self._arm_header_timer()

        def on_headers_complete(self) -> None:
            self._cancel_header_timer()
            super().on_headers_complete()

        def _arm_header_timer(self) -> None:
            self._cancel_header_timer()
            self._header_timer = self.loop.call_later(header_timeout_s, self._headers_too_slow)

        def _cancel_header_timer(self) -> None:
            if self._header_timer is not None:
                self._header_timer.cancel()
                self._header_timer = None

        def _headers_too_slow(self) -> None:
            self._header_timer = None
            if self.cycle is not None and not self.cycle.response_complete:
                return  # a request is running: its body has its own deadline
            self._refuse("request-timeout", f"the request headers did not arrive within {header_timeout_s:g} s")

        def _refuse(self, code: str, detail: str, headers: dict[str, str] | None = None) -> None:
            if not self.transport.is_closing():
                self.transport.write(raw_problem(code, detail, headers))
                self.transport.close()

    return GuardedHttpToolsProtocol

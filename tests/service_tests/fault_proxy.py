"""A small HTTP/1.1 proxy for tests that injects failures between a client and the real API.

Each request is handled on its own connection (the proxy answers ``Connection: close``), and
takes the next planned fault for its route (``"POST /v1/score"``, ``"GET /v1/jobs"``...;
default ``ok``):

- ``ok``: forward, relay the response.
- ``503`` / ``429``: answer that status with ``Retry-After`` (the request never reaches the API).
- ``drop``: read the request, close the connection without forwarding or answering.
- ``drop_after``: forward (the API acts on it), then close without answering: the client
  sees a dropped connection for a request that did take effect.
- ``slow:<s>``: forward, then hold the response for ``s`` seconds before relaying it.

``log`` records every request as an :class:`Entry`.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections import defaultdict, deque
from dataclasses import dataclass


@dataclass
class Entry:
    started: float  # time.monotonic() when the request had arrived
    at: float  # time.monotonic() when the proxy was done with it
    route: str  # "POST /v1/score", "GET /v1/jobs"...
    fault: str
    status: int | None  # what the client was sent (None: nothing)
    payload: dict | None  # the API's JSON answer, if the request reached it
    headers: dict[str, str]  # the request's headers, lower-case names


class FaultProxy:
    def __init__(self, upstream_url: str, retry_after: float = 1.0) -> None:
        host_port = upstream_url.split("://", 1)[1].rstrip("/")
        self.upstream_host, port = host_port.rsplit(":", 1)
        self.upstream_port = int(port)
        self.retry_after = retry_after
        self.log: list[Entry] = []
        self._plans: dict[str, deque[str]] = defaultdict(deque)
        self._lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server: asyncio.base_events.Server | None = None

    # -- control (test thread) ----------------------------------------------------------------
    def start(self) -> "FaultProxy":
        self._thread.start()
        self._server = asyncio.run_coroutine_threadsafe(
            asyncio.start_server(self._handle, "127.0.0.1", 0), self._loop
        ).result()
        return self

    @property
    def url(self) -> str:
        port = self._server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}"

    def plan(self, route: str, faults: list[str]) -> None:
        with self._lock:
            self._plans[route].extend(faults)

    def reset(self) -> None:
        with self._lock:
            self._plans.clear()
            self.log.clear()

    def requests(self, route: str, *, wait_for: int = 0, timeout: float = 10.0) -> list[Entry]:
        """This route's requests in arrival order; ``wait_for``: until at least that many are
        done (a slow one is logged only when the proxy is done with it)."""
        deadline = time.monotonic() + timeout
        while True:
            with self._lock:
                entries = sorted((e for e in self.log if e.route == route), key=lambda e: e.started)
            if len(entries) >= wait_for or time.monotonic() > deadline:
                return entries
            time.sleep(0.02)

    def stop(self) -> None:
        async def close() -> None:
            self._server.close()
            for task in asyncio.all_tasks():  # requests still held (slow:...)
                if task is not asyncio.current_task():
                    task.cancel()

        asyncio.run_coroutine_threadsafe(close(), self._loop).result(5)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)

    # -- the proxy (its own event loop) -------------------------------------------------------
    def _next_fault(self, route: str) -> str:
        with self._lock:
            plan = self._plans.get(route)
            return plan.popleft() if plan else "ok"

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()
            return
        lines = head.decode("latin-1").split("\r\n")
        method, target, _ = lines[0].split(" ", 2)
        headers = [line.split(":", 1) for line in lines[1:] if line]
        length = next((int(v) for k, v in headers if k.strip().lower() == "content-length"), 0)
        if any(k.strip().lower() == "transfer-encoding" for k, _ in headers):
            raise AssertionError("the SDK must send Content-Length, not a chunked body")
        body = await reader.readexactly(length) if length else b""
        started = time.monotonic()
        path = target.split("?", 1)[0]
        route = f"{method} {'/v1/jobs' if path.startswith('/v1/jobs/') else path}"
        fault = self._next_fault(route)
        status, payload = None, None
        try:
            if fault in ("503", "429"):
                problem = json.dumps({"code": "unavailable" if fault == "503" else "too-many-in-flight",
                                      "status": int(fault), "detail": "injected"}).encode()  # fmt: skip
                reason = "Service Unavailable" if fault == "503" else "Too Many Requests"
                writer.write(f"HTTP/1.1 {fault} {reason}\r\nContent-Type: application/problem+json\r\n"
                             f"Retry-After: {self.retry_after:g}\r\nContent-Length: {len(problem)}\r\n"
                             f"Connection: close\r\n\r\n".encode() + problem)  # fmt: skip
                status = int(fault)
            elif fault == "drop":
                pass
            else:
                response = await self._forward(lines[0], headers, body)
                upstream_status, payload = _status_and_json(response)
                if fault.startswith("slow:"):
                    await asyncio.sleep(float(fault.split(":", 1)[1]))
                if fault != "drop_after":
                    writer.write(response)
                    status = upstream_status
            await writer.drain()
        except ConnectionError:
            pass  # the client gave up (its timeout): that is what some tests provoke
        finally:
            with self._lock:
                self.log.append(Entry(started, time.monotonic(), route, fault, status, payload,
                                      {k.strip().lower(): v.strip() for k, v in headers}))  # fmt: skip
            writer.close()

    async def _forward(self, request_line: str, headers: list[list[str]], body: bytes) -> bytes:
        reader, writer = await asyncio.open_connection(self.upstream_host, self.upstream_port)
        kept = [f"{k}:{v}" for k, v in headers if k.strip().lower() != "connection"]
        writer.write(("\r\n".join([request_line, *kept, "Connection: close"]) + "\r\n\r\n").encode("latin-1") + body)
        await writer.drain()
        response = await reader.read()  # until the API closes (Connection: close)
        writer.close()
        head, _, rest = response.partition(b"\r\n\r\n")
        head_lines = [line for line in head.split(b"\r\n") if not line.lower().startswith(b"connection:")]
        return b"\r\n".join([*head_lines, b"Connection: close"]) + b"\r\n\r\n" + rest


def _status_and_json(response: bytes) -> tuple[int, dict | None]:
    head, _, body = response.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    try:
        return status, json.loads(body)
    except ValueError:
        return status, None

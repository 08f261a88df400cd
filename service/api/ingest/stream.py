"""Reading a request body as a stream: headers first, then tensors straight into blobs.

Starlette's ``await request.body()`` joins every ~64 KB chunk into one new buffer (a fresh
full-size copy costs about as much as the whole loopback transfer, reference.md section 7).
Here each chunk is hashed and written to its blob file as it arrives: no full-size buffer,
no join, and memory stays flat whatever the body size.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from service.api.errors import Problem
from service.api.ingest.tensors import Segment, ValueCheck
from service.jobs.blobs import BlobRef


class BodyStream:
    """The request body, consumed front to back exactly once."""

    def __init__(self, chunks: AsyncIterator[bytes]) -> None:
        self._chunks = chunks
        self._pending = memoryview(b"")
        self.received = 0
        self.exhausted = False

    async def _next(self) -> bool:
        while True:
            try:
                chunk = await self._chunks.__anext__()
            except StopAsyncIteration:
                self.exhausted = True
                return False
            if chunk:
                self.received += len(chunk)
                self._pending = memoryview(chunk)
                return True

    async def read_exact(self, size: int, what: str) -> bytes:
        """The next ``size`` bytes (small things: headers); 400 if the body ends first."""
        parts, missing = [], size
        while missing:
            if not self._pending and not await self._next():
                raise Problem("body-framing", f"the body ended inside the {what} "
                              f"({size - missing} of {size} bytes)")  # fmt: skip
            piece = self._pending[:missing]
            parts.append(bytes(piece))
            self._pending = self._pending[len(piece) :]
            missing -= len(piece)
        return b"".join(parts)

    async def peek(self, size: int, what: str) -> bytes:
        """The next ``size`` bytes, left in place for the next read."""
        head = await self.read_exact(size, what)
        self._pending = memoryview(head + bytes(self._pending))
        return head

    async def pieces(self) -> AsyncIterator[memoryview]:
        """What is left of the body, chunk by chunk (no copies)."""
        if self._pending:
            piece, self._pending = self._pending, memoryview(b"")
            yield piece
        while await self._next():
            piece, self._pending = self._pending, memoryview(b"")
            yield piece


async def stream_segments(body: BodyStream, segments: list[Segment], store) -> dict[tuple[str, int], BlobRef]:
    """Write each segment's bytes (in body order) into its own blob, checking values on the
    way. Returns (field, item index) -> BlobRef. 400 if the body is short or too long."""
    refs: dict[tuple[str, int], BlobRef] = {}
    order = list(segments)
    position = 0
    writer, check, left = None, None, 0

    def open_next():
        nonlocal position
        segment = order[position]
        position += 1
        return (store.writer("npy", dtype=segment.dtype, shape=segment.shape,
                             expected_nbytes=segment.nbytes),
                ValueCheck(segment), segment.nbytes, segment)  # fmt: skip

    def close(w, c, segment):
        c.finish()
        refs[(segment.field, segment.index)] = w.commit()

    writers = []
    try:
        current = None
        while position < len(order) and order[position].nbytes == 0:
            writer, check, left, current = open_next()  # zero-size: nothing to read
            writers.append(writer)
            close(writer, check, current)
        if position < len(order):
            writer, check, left, current = open_next()
            writers.append(writer)
        async for piece in body.pieces():
            while len(piece):
                if current is None:
                    raise Problem("body-framing", "the body is longer than its tensors declare")
                take = piece[:left]
                check.feed(take)
                writer.write(take)
                left -= len(take)
                piece = piece[len(take) :]
                if left == 0:
                    close(writer, check, current)
                    current = None
                    while position < len(order):
                        writer, check, left, current = open_next()
                        writers.append(writer)
                        if left:
                            break
                        close(writer, check, current)
                        current = None
        if current is not None or position < len(order):
            raise Problem("body-framing", "the body ended before all declared tensor bytes arrived "
                          "(truncated upload, or a header that declares more than was sent)")  # fmt: skip
        return refs
    except BaseException:
        for w in writers:
            w.abort()  # committed blobs stay (content-addressed; the janitor removes strays)
        raise

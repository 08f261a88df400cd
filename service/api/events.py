"""Long-polls without polling: one Redis pub/sub listener per API process wakes the requests
waiting for a job (``?wait=``) as soon as its terminal transition is published."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import defaultdict

import redis.asyncio as aioredis

from service.jobs import keys

log = logging.getLogger("reward3d.api")


class JobEvents:
    def __init__(self, redis_url: str) -> None:
        self.redis_url = redis_url
        self._waiters: dict[str, set[asyncio.Event]] = defaultdict(set)
        self._task: asyncio.Task | None = None

    @contextlib.contextmanager
    def watch(self, job_id: str):
        """An Event set when ``job_id`` ends (callers still re-check: messages can be missed
        while Redis reconnects)."""
        event = asyncio.Event()
        self._waiters[job_id].add(event)
        try:
            yield event
        finally:
            waiters = self._waiters.get(job_id)
            if waiters is not None:
                waiters.discard(event)
                if not waiters:
                    self._waiters.pop(job_id, None)

    def start(self) -> None:
        self._task = asyncio.create_task(self._listen(), name="reward3d-job-events")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task

    async def _listen(self) -> None:
        while True:
            client = aioredis.Redis.from_url(self.redis_url, socket_connect_timeout=5)
            try:
                async with client.pubsub() as pubsub:
                    await pubsub.subscribe(keys.events())
                    async for message in pubsub.listen():
                        if message.get("type") != "message":
                            continue
                        job_id = message["data"].decode().split(" ", 1)[0]
                        for event in self._waiters.get(job_id, ()):
                            event.set()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # Redis restarting: waiters fall back to re-checking
                log.warning("job events: %s; reconnecting", exc)
                await asyncio.sleep(1.0)
            finally:
                with contextlib.suppress(Exception):
                    await client.aclose()

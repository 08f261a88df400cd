"""Slow clients vs. a normal one (issue 15): does a crowd of stalled connections stop a
trainer from scoring?

Starts `reward3d serve` (production limits, 1 worker, oracle geometry) against its own
redis-server, times a normal client scoring K small videos one after another (``POST
/v1/score?wait=``, the whole round trip), then opens ``--slow`` connections that hold on as
hostile clients do: a third send half their headers, a third headers and half a body then
stall, a third trickle a body a byte a second. Any that the server closes (408, 429) are
opened again at once, so the crowd stays at full size. With the crowd in place the normal
client is timed again, and once more idle after the crowd is gone. Reported: median latency
idle (both idle phases) and under the crowd, their ratio, and what the server did to the crowd
(408 / 429 / still held).

The slow connections come from 127.0.0.2-127.0.0.11 (30 each: under the per-client cap,
so the server has to hold all of them); the normal client from 127.0.0.1.

    .venv/bin/python bench/slow_clients.py --slow 300 --measure-s 45
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.chaos import API_KEY, OPTIONS, Serve, SoakRedis, _clip, wait_ready  # noqa: E402

SOURCES = [f"127.0.0.{i}" for i in range(2, 12)]


class Crowd:
    """``size`` hostile connections on an event loop thread, each reopened when closed."""

    def __init__(self, host: str, port: int, size: int) -> None:
        self.host, self.port, self.size = host, port, size
        self.outcomes: dict[str, int] = {}
        self.open_now = 0
        self.loop = asyncio.new_event_loop()
        self.stopping = False
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    def start(self) -> None:
        self.thread.start()
        for i in range(self.size):
            asyncio.run_coroutine_threadsafe(self.hold(i), self.loop)

    def stop(self) -> None:
        self.stopping = True
        time.sleep(1.5)
        self.loop.call_soon_threadsafe(self.loop.stop)

    async def hold(self, i: int) -> None:
        kind = ("headers", "stalled-body", "trickle")[i % 3]
        source = SOURCES[i % len(SOURCES)]
        body_length = 200_000
        head = (f"POST /v1/score HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {API_KEY}\r\n"
                f"Content-Type: application/json\r\nContent-Length: {body_length}\r\n\r\n").encode()  # fmt: skip
        while not self.stopping:
            try:
                reader, writer = await asyncio.open_connection(self.host, self.port, local_addr=(source, 0))
            except OSError:
                await asyncio.sleep(0.5)
                continue
            self.open_now += 1
            try:
                if kind == "headers":
                    writer.write(head[: len(head) // 2])
                else:
                    writer.write(head + (b'{"items": [' if kind == "trickle" else b'{"items": [' + b" " * 1000))
                await writer.drain()
                reply = b""
                while not self.stopping and not reply:
                    try:
                        reply = await asyncio.wait_for(reader.read(200), timeout=1.0)
                        if not reply:
                            reply = b"closed"
                    except TimeoutError:
                        if kind == "trickle":
                            writer.write(b" ")
                            await writer.drain()
                status = reply.split(b" ")[1].decode() if reply.startswith(b"HTTP/") else "closed"
                if not self.stopping:
                    self.outcomes[status] = self.outcomes.get(status, 0) + 1
            except (ConnectionError, OSError):
                self.outcomes["reset"] = self.outcomes.get("reset", 0) + 1
            finally:
                self.open_now -= 1
                writer.close()


def time_scoring(url: str, requests: int, seed: int, at_least_s: float = 0.0) -> list[float]:
    """Latencies of ``requests`` scorings one after another (more, until ``at_least_s`` passed)."""
    import httpx

    from service.api.encode import encode_binary

    times = []
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {API_KEY}"}, timeout=120,
                      transport=httpx.HTTPTransport(local_address="127.0.0.1")) as client:  # fmt: skip
        began, n = time.monotonic(), 0
        while n < requests or time.monotonic() - began < at_least_s:
            n += 1
            video, geometry = _clip(seed + n)
            headers, parts = encode_binary([video], geometry=[geometry], options=OPTIONS)
            body = b"".join(bytes(p) for p in parts)
            started = time.perf_counter()
            response = client.post("/v1/score", params={"wait": 60}, headers=headers, content=body)
            times.append(time.perf_counter() - started)
            assert response.status_code == 200 and response.json()["status"] == "finished", response.text[:300]
    return times


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--slow", type=int, default=300)
    parser.add_argument("--requests", type=int, default=20)
    parser.add_argument("--measure-s", type=float, default=45.0,
                        help="time the normal client for at least this long (longer than the body "
                        "timeout, so the crowd is refused and reconnects meanwhile)")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="reward3d-slow-"))
    server_redis = SoakRedis(root / "redis")
    serve = Serve(root, server_redis.url, workers=1)
    server_redis.start()
    serve.start()
    try:
        wait_ready(serve.url, 180)
        time_scoring(serve.url, 3, seed=10_000)  # warm caches, connections, the worker
        idle = time_scoring(serve.url, args.requests, seed=20_000, at_least_s=args.measure_s)
        crowd = Crowd("127.0.0.1", serve.port, args.slow)
        crowd.start()
        deadline = time.monotonic() + 60
        while crowd.open_now < args.slow and time.monotonic() < deadline:
            time.sleep(0.2)
        held_at_start = crowd.open_now
        loaded = time_scoring(serve.url, args.requests, seed=300_000, at_least_s=args.measure_s)
        held_at_end = crowd.open_now
        crowd.stop()
        time.sleep(2)
        # Idle again: the machine's load drifts (shared cores); compare with both idle phases.
        idle += time_scoring(serve.url, args.requests, seed=600_000, at_least_s=args.measure_s)
    finally:
        serve.stop()
        server_redis.kill()
    report = {
        "slow_connections": args.slow, "held_when_timing_began": held_at_start,
        "held_when_timing_ended": held_at_end, "requests_idle": len(idle), "requests_loaded": len(loaded),
        "idle_median_s": round(statistics.median(idle), 3),
        "under_slow_clients_median_s": round(statistics.median(loaded), 3),
        "ratio": round(statistics.median(loaded) / statistics.median(idle), 2),
        "idle_p90_s": round(float(np.percentile(idle, 90)), 3),
        "under_slow_clients_p90_s": round(float(np.percentile(loaded, 90)), 3),
        "server_answers_to_the_crowd": crowd.outcomes, "cpus": os.cpu_count(),
    }  # fmt: skip
    text = json.dumps(report, indent=1)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

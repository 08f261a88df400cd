"""Chaos: workers killed with SIGKILL mid-job, Redis killed and restarted (AOF), SIGTERM.
Every accepted job reaches exactly one terminal state, none is lost, results are correct.

Bounded for CI (marked slow): 20 kills take about a minute on 2 shared cores, because each
replacement worker imports torch and warms up. Heartbeat TTL 2 s here (20 s by default).
"""

from __future__ import annotations

import json
import random
import signal
import socket
import subprocess
import threading
import time

import httpx
import pytest
import redis
from rq.suspension import resume, suspend

from service.api.encode import encode_binary
from service.jobs import keys
from service.schemas import ScoreOptions

from .conftest import ApiServer, WorkerProcess, auth, body_bytes, clip_arrays, make_settings, without_timings

pytestmark = pytest.mark.slow
OPTIONS = {"long_side": 64, "max_frames": 6}


@pytest.fixture(scope="module")
def clips():
    return [clip_arrays(motion, 6, 36, 64) for motion in ("orbit", "push_in", "move_right")]


@pytest.fixture(scope="module")
def expected(clips, tmp_path_factory, redis_url):
    from service.pipeline import RewardPipeline

    pipeline = RewardPipeline(make_settings(redis_url, tmp_path_factory.mktemp("expected")))
    return [without_timings(json.loads(pipeline(video, geometry_arrays=geometry,
                                                options=ScoreOptions(**OPTIONS)).model_dump_json()))
            for video, geometry in clips]  # fmt: skip


def submit(client, clips, tag: str) -> str:
    headers, parts = encode_binary([v for v, _ in clips], geometry=[g for _, g in clips],
                                   options=OPTIONS, items=[{"id": f"{tag}-{i}"} for i in range(len(clips))])  # fmt: skip
    response = client.post("/v1/score", headers=headers, content=body_bytes(parts))
    assert response.status_code == 202, response.text
    return response.json()["id"]


class EventLog:
    """Every terminal transition published on the events channel, per job."""

    def __init__(self, connection) -> None:
        self.pubsub = connection.pubsub()
        self.pubsub.subscribe(keys.events())
        self.events: dict[str, list[str]] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            message = self.pubsub.get_message(timeout=0.2)
            if message and message["type"] == "message":
                job_id, status = message["data"].decode().split(" ")
                self.events.setdefault(job_id, []).append(status)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self.pubsub.close()


def wait_all_ended(client, job_ids, timeout: float) -> dict[str, dict]:
    deadline = time.monotonic() + timeout
    done = {}
    while len(done) < len(job_ids) and time.monotonic() < deadline:
        for job_id in job_ids:
            if job_id not in done:
                body = client.get(f"/v1/jobs/{job_id}").json()
                if body["status"] in ("finished", "failed", "cancelled"):
                    done[job_id] = body
        time.sleep(0.2)
    assert len(done) == len(job_ids), f"{len(job_ids) - len(done)} job(s) never ended"
    return done


class RequeueMonitor:
    """How long after each kill the killed worker's job was back on the queue (or running)."""

    def __init__(self, connection) -> None:
        self.connection = connection
        self.pending: list[tuple[str, int, float]] = []
        self.latencies: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def watch(self, job_id: str, attempts: int, killed_at: float) -> None:
        self.pending.append((job_id, attempts, killed_at))

    def _run(self) -> None:
        while not self._stop.wait(0.05):
            for entry in list(self.pending):
                job_id, attempts, killed_at = entry
                status = self.connection.hget(f"rq:job:{job_id}", "status")
                again = int(self.connection.hget(keys.job(job_id), "attempts") or 0) > attempts
                if again or status in (b"queued", b"scheduled"):
                    self.latencies.append(time.monotonic() - killed_at)
                    self.pending.remove(entry)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)


def busy_worker(connection, workers: list[WorkerProcess]):
    """A live worker with a job in hand, per rq's started registry: (worker, job id)."""
    by_pid = {w.pid: w for w in workers if w.process.poll() is None}
    for key in connection.scan_iter(match=keys.worker_pattern()):
        job_id = (connection.hget(key, "current_job") or b"").decode()
        pid = int(json.loads(connection.hget(key, "info") or b"{}").get("pid", 0))
        if job_id and pid in by_pid:
            return by_pid[pid], job_id
    return None, None


def test_kill_9_mid_job_twenty_times(redis_url, fresh_redis, tmp_path, clips, expected):
    settings = make_settings(redis_url, tmp_path, heartbeat_ttl_s=2, heartbeat_interval_s=0.25,
                             watchdog_interval_s=0.25, job_retries=40, cache_ttl_s=0,
                             max_inflight_per_key=500)  # fmt: skip
    events = EventLog(fresh_redis)
    server = ApiServer(settings).start()
    workers = [WorkerProcess(settings, tmp_path / f"w{i}.log").start() for i in range(2)]
    client = httpx.Client(base_url=server.url, headers=auth(), timeout=60)
    rng = random.Random(4)
    job_ids, kills = [], 0
    monitor = RequeueMonitor(fresh_redis)
    try:
        for worker in workers:
            worker.wait_warm(fresh_redis)
        job_ids += [submit(client, clips * 2, f"j{i}") for i in range(16)]
        deadline = time.monotonic() + 240
        while kills < 20 and time.monotonic() < deadline:
            time.sleep(rng.uniform(0.05, 0.6))
            victim, job_id = busy_worker(fresh_redis, workers)
            if victim is None:
                if fresh_redis.zcard(keys.active()) < 4:  # keep the workers busy
                    job_ids += [submit(client, clips * 2, f"j{len(job_ids) + i}") for i in range(6)]
                continue
            attempts = int(fresh_redis.hget(keys.job(job_id), "attempts") or 0)
            victim.signal(signal.SIGKILL)
            killed_at = time.monotonic()
            victim.process.wait()
            workers.append(WorkerProcess(settings, tmp_path / f"w{len(workers)}.log").start())
            if fresh_redis.hget(keys.job(job_id), "status") != b"running":
                continue  # the job ended just before the kill: not a mid-job kill
            kills += 1
            monitor.watch(job_id, attempts, killed_at)
        assert kills == 20, f"only {kills} kills landed mid-job"
        done = wait_all_ended(client, job_ids, timeout=240)
    finally:
        client.close()
        for worker in workers:
            worker.stop(timeout=10)
        server.stop()
        time.sleep(0.5)
        events.close()
        monitor.close()
    requeue_seconds = monitor.latencies
    assert len(requeue_seconds) == 20 and max(requeue_seconds) < 60, requeue_seconds
    assert all(body["status"] == "finished" for body in done.values())
    for job_id, body in done.items():
        assert events.events.get(job_id) == ["finished"], (job_id, events.events.get(job_id))
        for index, item in enumerate(body["items"]):
            assert item["status"] == "ok"
            assert without_timings(item["result"]) == expected[index % 3]
    assert sum(body["attempts"] > 1 for body in done.values()) >= 10  # the kills hit running jobs
    print(f"re-queued after {min(requeue_seconds):.1f}-{max(requeue_seconds):.1f} s")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class PrivateRedis:
    """redis-server with AOF (fsync always) on its own port and directory."""

    def __init__(self, directory) -> None:
        self.directory, self.port = directory, _free_port()
        self.process = None

    def start(self) -> "PrivateRedis":
        self.process = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.directory),
             "--appendonly", "yes", "--appendfsync", "always", "--save", ""],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                redis.Redis(port=self.port, socket_timeout=0.5).ping()
                return self
            except redis.RedisError:
                time.sleep(0.05)
        raise RuntimeError("private redis-server did not start")

    def kill(self) -> None:
        self.process.kill()
        self.process.wait()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"


def test_redis_restart_with_aof_loses_nothing(tmp_path, clips, expected):
    private = PrivateRedis(tmp_path).start()
    settings = make_settings(private.url, tmp_path, heartbeat_ttl_s=3)
    connection = redis.Redis.from_url(private.url)
    server = ApiServer(settings).start()
    worker = WorkerProcess(settings, tmp_path / "worker.log").start()
    client = httpx.Client(base_url=server.url, headers=auth(), timeout=60)
    try:
        worker.wait_warm(connection)
        suspend(connection)  # accepted, not processed
        job_ids = [submit(client, clips, f"aof{i}") for i in range(5)]
        private.kill()  # SIGKILL: no shutdown save; only the AOF survives
        down = client.get(f"/v1/jobs/{job_ids[0]}")
        assert down.status_code == 503 and down.json()["code"] == "unavailable"
        private.start()
        resume(redis.Redis.from_url(private.url))
        done = wait_all_ended(client, job_ids, timeout=120)
        assert worker.process.poll() is None  # the worker reconnected; it did not die
    finally:
        client.close()
        worker.stop(timeout=10)
        server.stop()
        private.kill()
    for body in done.values():
        assert body["status"] == "finished"
        for index, item in enumerate(body["items"]):
            assert without_timings(item["result"]) == expected[index]


def test_sigterm_finishes_the_job_in_hand(redis_url, fresh_redis, tmp_path, clips, expected):
    fresh_redis.flushdb()
    settings = make_settings(redis_url, tmp_path, cache_ttl_s=0)
    server = ApiServer(settings).start()
    worker = WorkerProcess(settings, tmp_path / "worker.log").start()
    client = httpx.Client(base_url=server.url, headers=auth(), timeout=60)
    try:
        worker.wait_warm(fresh_redis)
        job_id = submit(client, clips * 3, "term")  # 9 items: long enough to catch it running
        while client.get(f"/v1/jobs/{job_id}").json()["status"] != "running":
            time.sleep(0.02)
        worker.signal(signal.SIGTERM)
        assert worker.process.wait(60) == 0  # exits cleanly, after the job
        body = client.get(f"/v1/jobs/{job_id}").json()
        second = submit(client, clips[:1], "after")  # nobody is left to take this one
        time.sleep(1.0)
        assert client.get(f"/v1/jobs/{second}").json()["status"] == "queued"
    finally:
        client.close()
        worker.stop(timeout=10)
        server.stop()
    assert body["status"] == "finished" and body["attempts"] == 1, body
    assert [item["status"] for item in body["items"]] == ["ok"] * 9
    for index, item in enumerate(body["items"]):
        assert without_timings(item["result"]) == expected[index % 3]

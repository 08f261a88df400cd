"""Fixtures for the service tests: a real Redis (127.0.0.1:6379, our own DB index), the API in
a thread (real HTTP on a free port), and workers as real processes (so they can be killed).

Redis DB 13 (or 11, 10, 9 when another run of this suite holds 13) is ours: each module starts
by flushing it (FLUSHDB on this index only).
Tests use the oracle geometry backend (geometry sent with each video) so that results are
fast, deterministic and comparable with the in-process pipeline.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import numpy as np
import pytest
import redis

from service.jobs import keys
from service.settings import Settings

REPO = Path(__file__).resolve().parents[2]
REDIS_DBS = (13, 11, 10, 9)  # ours; one per concurrent run of this suite
API_KEY = "test-key-0123456789abcdef"
OTHER_KEY = "other-key-0123456789abcdef"
PYTHON = sys.executable

pytestmark = pytest.mark.redis


@pytest.fixture(scope="session")
def redis_url():
    """A DB index of the Redis at 127.0.0.1:6379 that no other run of these tests is using
    (two checkouts running the suite at once must not share rq's queues): a lock key per
    candidate index, held in DB 0 for the session."""
    control = redis.Redis(host="127.0.0.1", port=6379, db=0, socket_connect_timeout=1)
    try:
        control.ping()
    except redis.RedisError:
        pytest.skip("no Redis at 127.0.0.1:6379 (.ci/run starts one)")
    token = uuid.uuid4().hex
    deadline = time.monotonic() + 900
    while True:
        for db in REDIS_DBS:
            lock = f"reward3d-service-tests:db{db}"
            if control.set(lock, token, nx=True, ex=3600):
                try:
                    yield f"redis://127.0.0.1:6379/{db}"
                finally:
                    if control.get(lock) == token.encode():
                        control.delete(lock)
                return
        if time.monotonic() > deadline:
            pytest.fail(f"every test DB index {REDIS_DBS} is held by another test run")
        time.sleep(1.0)


def make_settings(redis_url: str, root: Path, **overrides) -> Settings:
    values = dict(
        redis_url=redis_url, data_dir=root / "data", blob_dir=root / "blobs",
        api_keys=[API_KEY, OTHER_KEY], geometry_backend="oracle", num_threads=1,
        heartbeat_interval_s=0.5, heartbeat_ttl_s=3, watchdog_interval_s=0.5,
        retry_backoff_s=[0], job_retries=3, item_time_limit_s=120,
    )  # fmt: skip
    values.update(overrides)
    return Settings(**values)


def worker_env(settings: Settings) -> dict[str, str]:
    """The settings as REWARD3D_* variables, for a worker process."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("REWARD3D_")}
    for name, value in settings.model_dump(mode="json").items():
        if value is None:
            continue
        if isinstance(value, list):
            value = ",".join(str(v) for v in value)
        env[f"REWARD3D_{name.upper()}"] = str(value)
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONPATH=str(REPO))
    return env


class WorkerProcess:
    """``reward3d worker`` as a child process."""

    def __init__(self, settings: Settings, log_path: Path) -> None:
        self.settings = settings
        self.log_path = log_path
        self.process: subprocess.Popen | None = None

    def start(self) -> "WorkerProcess":
        log = open(self.log_path, "ab")
        self.process = subprocess.Popen(
            [PYTHON, "-m", "service.cli", "worker", "--log-level", "WARNING"],
            cwd=REPO, env=worker_env(self.settings), stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        return self

    @property
    def pid(self) -> int:
        return self.process.pid

    def wait_warm(self, connection, timeout: float = 60.0) -> "WorkerProcess":
        """Until this process has published a warm liveness key."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"worker exited with {self.process.returncode}; see {self.log_path}")
            for key in connection.scan_iter(match=keys.worker_pattern()):
                if str(self.pid) in key.decode().split("-"):
                    return self
            time.sleep(0.05)
        raise TimeoutError(f"worker not warm after {timeout} s; see {self.log_path}")

    def signal(self, sig: int) -> None:
        if self.process.poll() is None:
            os.kill(self.pid, sig)

    def stop(self, timeout: float = 30.0) -> int:
        if self.process is None:
            return 0
        self.signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.process.wait()


class ApiServer:
    """The API with uvicorn in a background thread, on a free port."""

    def __init__(self, settings: Settings) -> None:
        import uvicorn

        from service.api import create_app
        from service.api.server import uvicorn_config

        self.app = create_app(settings)
        # As `reward3d serve` configures it (upload tuning, header deadline, connection cap).
        self.server = uvicorn.Server(uvicorn_config(self.app, host="127.0.0.1", port=0,
                                                    log_level="warning", lifespan="on"))  # fmt: skip
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def start(self) -> "ApiServer":
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("API server did not start")
            time.sleep(0.02)
        return self

    @property
    def url(self) -> str:
        port = self.server.servers[0].sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}"

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(10)


@pytest.fixture(scope="module")
def fresh_redis(redis_url):
    connection = redis.Redis.from_url(redis_url)
    connection.flushdb()
    yield connection
    connection.close()


def auth(key: str = API_KEY) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def clip_arrays(motion: str, frames: int, height: int, width: int, seed: int = 0):
    """A synthetic clip and its exact geometry; ``seed`` > 0 makes its pixels unique."""
    from service.synthetic import make_clip

    clip = make_clip(motion, frames, height, width, supersample=1)
    video = clip.frames.copy()
    if seed:
        rng = np.random.default_rng(seed)
        video[0, 0, :8] = rng.integers(0, 256, size=(min(8, width), 3), dtype=np.uint8)
    return video, clip.geometry_arrays()


def body_bytes(parts) -> bytes:
    return parts if isinstance(parts, bytes) else b"".join(bytes(p) for p in parts)


def without_timings(result: dict) -> dict:
    return {k: v for k, v in result.items() if k != "timings_ms"}

"""A private Redis for ``reward3d serve`` on a laptop: redis-server from PATH, listening on a
unix socket only (mode 700: no network exposure), append-only file on, data in a local dir."""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

import redis


class LocalRedisError(RuntimeError):
    pass


class LocalRedis:
    def __init__(self, data_dir: Path) -> None:
        self.directory = Path(data_dir) / "redis"
        self.socket = self.directory / "redis.sock"
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"unix://{self.socket}"

    def start(self, timeout_s: float = 10.0) -> str:
        server = shutil.which("redis-server")
        if server is None:
            raise LocalRedisError("redis-server is not on PATH: install Redis, or set "
                                  "REWARD3D_REDIS_URL to a running one")  # fmt: skip
        self.directory.mkdir(parents=True, exist_ok=True)
        if len(str(self.socket)) > 100:
            raise LocalRedisError(f"socket path too long for a unix socket: {self.socket}")
        if self.socket.exists() and self._ping():
            raise LocalRedisError(f"a Redis already serves {self.socket}: is another `reward3d serve` "
                                  "using this data directory?")  # fmt: skip
        self.process = subprocess.Popen(
            [server, "--port", "0", "--unixsocket", str(self.socket), "--unixsocketperm", "700",
             "--dir", str(self.directory), "--appendonly", "yes", "--appendfsync", "everysec",
             "--save", "", "--logfile", str(self.directory / "redis.log")],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
        )  # fmt: skip
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise LocalRedisError(f"redis-server exited; see {self.directory / 'redis.log'}")
            if self.socket.exists() and self._ping():
                return self.url
            time.sleep(0.05)
        self.stop()
        raise LocalRedisError(f"redis-server did not start within {timeout_s:g} s")

    def _ping(self) -> bool:
        try:
            return bool(redis.Redis(unix_socket_path=str(self.socket), socket_timeout=1).ping())
        except redis.RedisError:
            return False

    def stop(self, timeout_s: float = 10.0) -> None:
        """SIGTERM: Redis flushes its append-only file and exits."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

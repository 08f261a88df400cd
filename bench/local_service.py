"""``reward3d serve`` in a child process for benchmarks: private Redis (unix socket, AOF),
N workers, the API on a free loopback port, a generated API key.

    with LocalService(tmp, workers=1, REWARD3D_GEOMETRY_BACKEND="classical") as service:
        client = RewardClient(service.url, api_key=service.key)
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class LocalService:
    def __init__(self, root: Path, *, workers: int = 1, cpus: set[int] | None = None, **settings: str) -> None:
        self.root = Path(root)
        self.cpus = cpus  # pin the service (API, Redis, workers) to these CPU cores
        self.port = free_port()
        self.workers = workers
        self.settings = settings  # REWARD3D_* variables for the API and the workers
        self.process: subprocess.Popen | None = None
        self.key = ""

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> "LocalService":
        env = {k: v for k, v in os.environ.items() if not k.startswith("REWARD3D_") and k != "REDIS_URL"}
        env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONPATH=str(REPO), REWARD3D_NUM_THREADS="1",
                   **self.settings)  # fmt: skip
        self.log = open(self.root / "serve.log", "wb")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "service.cli", "serve", "--data-dir", str(self.root / "data"),
             "--port", str(self.port), "--workers", str(self.workers), "--log-level", "warning"],
            cwd=REPO, env=env, stdout=self.log, stderr=subprocess.STDOUT,
            preexec_fn=(lambda: os.sched_setaffinity(0, self.cpus)) if self.cpus else None,
        )  # fmt: skip
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:  # ready = Redis answers and a warm worker is alive
            if self.process.poll() is not None:
                raise RuntimeError(f"reward3d serve exited with {self.process.returncode}; see {self.root / 'serve.log'}")
            try:
                if httpx.get(f"{self.url}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        else:
            self.__exit__()
            raise RuntimeError(f"reward3d serve not ready after 180 s; see {self.root / 'serve.log'}")
        self.key = (self.root / "data" / "api_key").read_text().strip()
        return self

    def __exit__(self, *exc_info) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)  # serve stops its workers and Redis
            try:
                self.process.wait(60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.log.close()

"""``reward3d serve`` and ``reward3d worker`` (registered in service/cli.py).

    reward3d serve                 API + embedded Redis (no REDIS_URL) + one worker: one command
    reward3d worker                a GPU/CPU worker for a shared Redis (REWARD3D_REDIS_URL)

Safe by default: ``serve`` binds 127.0.0.1, and without configured keys it generates an API
key, saves it (mode 600) in the data directory and prints it; ``--insecure`` turns auth off.
"""

from __future__ import annotations

import logging
import os
import secrets
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console

stderr = Console(stderr=True)


def fail(message: str, code: int = 2) -> typer.Exit:
    from service.cli import fail as cli_fail

    return cli_fail(message, code)


def load_settings(**overrides):
    from service.cli import load_settings as cli_load_settings

    return cli_load_settings(**overrides)


def register(app: typer.Typer) -> None:
    app.command()(serve)
    app.command()(worker)


def serve(
    host: Annotated[Optional[str], typer.Option(help="Bind address (default 127.0.0.1).")] = None,
    port: Annotated[Optional[int], typer.Option(help="Port (default 8000).")] = None,
    workers: Annotated[Optional[int], typer.Option(help="Worker processes to start (default 1).")] = None,
    data_dir: Annotated[Optional[Path], typer.Option(help="Local state: blobs, Redis, API key.")] = None,
    insecure: Annotated[bool, typer.Option("--insecure", help="No API keys (private machines only).")] = False,
    log_level: Annotated[str, typer.Option(help="Log level.")] = "info",
) -> None:  # fmt: skip
    """Run the reward service: HTTP API, plus a private Redis and workers unless configured."""
    from service.api import InsecureConfigError, create_app
    from service.api.server import run_api
    from service.jobs.local_redis import LocalRedis, LocalRedisError

    settings = load_settings(host=host, port=port, embedded_workers=workers, data_dir=data_dir,
                             insecure_no_auth=True if insecure else None)  # fmt: skip
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    if not settings.api_keys and settings.api_keys_file is None and not settings.insecure_no_auth:
        settings.api_keys = [_local_api_key(settings.data_dir)]
    elif settings.insecure_no_auth:
        stderr.print("[bold yellow]warning:[/] serving WITHOUT API keys (--insecure): anyone who "
                     "can reach this port can submit work", highlight=False)  # fmt: skip
    local_redis = None
    if not settings.redis_url:
        local_redis = LocalRedis(settings.data_dir)
        try:
            settings.redis_url = local_redis.start()
        except LocalRedisError as exc:
            raise fail(str(exc), code=1) from None
        stderr.print(f"redis: private, {local_redis.url} (append-only file in {local_redis.directory})")
    try:
        app = create_app(settings)
    except (InsecureConfigError, ValueError) as exc:
        if local_redis is not None:
            local_redis.stop()
        raise fail(str(exc)) from None
    pool = WorkerPool(settings, settings.embedded_workers)
    pool.start()
    stderr.print(f"reward3d: http://{settings.host}:{settings.port} ({settings.embedded_workers} worker(s))")
    try:
        run_api(app, host=settings.host, port=settings.port, log_level=log_level)
    finally:
        stderr.print("stopping: workers finish the job in hand")
        pool.stop(timeout_s=settings.item_time_limit_s + 30)
        if local_redis is not None:
            local_redis.stop()


def _local_api_key(data_dir: Path) -> str:
    """The laptop key: generated once, kept in data_dir/api_key (mode 600), printed each start."""
    path = data_dir / "api_key"
    if path.is_file():
        key = path.read_text().strip()
    else:
        key = "r3d_" + secrets.token_urlsafe(32)
        path.touch(mode=0o600)
        path.write_text(key + "\n")
    stderr.print(f"API key: [bold]{key}[/]  (from {path}; send it as 'Authorization: Bearer <key>')",
                 highlight=False)  # fmt: skip
    return key


class WorkerPool:
    """Worker processes beside the API (``serve``), restarted if they die."""

    def __init__(self, settings, count: int) -> None:
        self.settings = settings
        self.count = count
        self.processes: list[subprocess.Popen] = []
        self.stopping = threading.Event()
        self._thread = threading.Thread(target=self._supervise, name="worker-pool", daemon=True)

    def _spawn(self) -> subprocess.Popen:
        env = dict(os.environ)
        env.update(REWARD3D_REDIS_URL=self.settings.redis_url,
                   REWARD3D_BLOB_DIR=str(self.settings.resolved_blob_dir()),
                   REWARD3D_DATA_DIR=str(self.settings.data_dir),
                   REWARD3D_QUEUE_NAME=self.settings.queue_name,
                   REWARD3D_PARENT_PID=str(os.getpid()))  # fmt: skip
        return subprocess.Popen([sys.executable, "-m", "service.cli", "worker"], env=env,
                                start_new_session=True)  # fmt: skip

    def start(self) -> None:
        self.processes = [self._spawn() for _ in range(self.count)]
        self.started_at = [time.monotonic()] * self.count
        self._thread.start()

    def _supervise(self) -> None:
        quick_failures = 0
        while not self.stopping.wait(2.0):
            for i, process in enumerate(self.processes):
                if process.poll() is None or self.stopping.is_set():
                    continue
                if time.monotonic() - self.started_at[i] < 30:
                    quick_failures += 1
                if quick_failures >= 3:
                    stderr.print("[bold red]workers keep failing at start (see above); not restarting "
                                 "them[/]: /readyz stays 503", highlight=False)  # fmt: skip
                    return
                stderr.print(f"worker exited with {process.returncode}; restarting")
                self.processes[i] = self._spawn()
                self.started_at[i] = time.monotonic()

    def stop(self, timeout_s: float) -> None:
        self.stopping.set()
        for process in self.processes:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)  # warm shutdown: finish the job in hand
        deadline = time.monotonic() + timeout_s
        for process in self.processes:
            try:
                process.wait(max(deadline - time.monotonic(), 0.1))
            except subprocess.TimeoutExpired:
                process.kill()


def worker(
    burst: Annotated[bool, typer.Option("--burst", help="Exit when the queue is empty.")] = False,
    name: Annotated[Optional[str], typer.Option(help="Worker name (default host-pid-random).")] = None,
    log_level: Annotated[str, typer.Option(help="Log level.")] = "INFO",
) -> None:  # fmt: skip
    """Process scoring jobs from the queue with one warm pipeline (no fork per job)."""
    from service.jobs.worker import run_worker

    settings = load_settings()
    if not settings.redis_url:
        raise fail("set REWARD3D_REDIS_URL (or REDIS_URL) to the Redis the API uses")
    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(name)s %(levelname)s %(message)s")
    parent = os.environ.get("REWARD3D_PARENT_PID")  # set by `reward3d serve` for its workers
    try:
        code = run_worker(settings, burst=burst, name=name, logging_level=log_level.upper(),
                          parent_pid=int(parent) if parent and parent.isdigit() else None)  # fmt: skip
    except (ImportError, RuntimeError, ValueError, OSError) as exc:  # backend missing, no CUDA...
        raise fail(f"the worker cannot start: {type(exc).__name__}: {exc}", code=1) from None
    raise typer.Exit(code)

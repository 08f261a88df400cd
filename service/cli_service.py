"""``reward3d serve`` and ``reward3d worker`` (registered in service/cli.py).

    reward3d serve                 API + embedded Redis (no REDIS_URL) + one worker: one command
    reward3d worker                a GPU/CPU worker for a shared Redis (REWARD3D_REDIS_URL)

Safe by default: ``serve`` binds 127.0.0.1, and without configured keys it generates an API
key, saves it (mode 600) in the data directory and prints it; ``--insecure`` turns auth off.
"""

from __future__ import annotations

import logging
import os
import random
import secrets
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
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
    app.state.worker_pool = pool  # /readyz reports why workers are missing
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


@dataclass
class _Slot:
    """One worker process of the pool, and what the supervisor knows of its history."""

    ready_file: Path
    process: subprocess.Popen | None = None
    spawned_at: float = 0.0
    ready_at: float | None = None  # when it became ready (models warm), this life
    start_failures: int = 0  # exits before becoming ready, in a row
    warm_deaths: list[float] = field(default_factory=list)  # when warm lives ended (recent ones)
    next_start: float = 0.0  # monotonic time of the next spawn
    last_exit: int | None = None


class WorkerPool:
    """Worker processes beside the API (``serve``), restarted whenever they die.

    - A worker that had become ready (models warm) and died (killed, OOM, crash) is restarted
      after a short jittered delay, a little longer if it keeps dying within a minute.
    - A worker that exits before becoming ready (a missing model, no GPU memory, a bad config)
      is a start failure: retried with exponential backoff and jitter, up to one try every
      RESTART_MAX_S. After GIVE_UP_AFTER failures in a row it is reported as failing: /readyz
      then says why; the background retries go on, so the pool heals once the cause is gone.
    Readiness comes from the worker's ready file (service/jobs/readiness.py), one per slot.
    """

    TICK_S = 0.25
    RESTART_BASE_S = 0.5
    RESTART_MAX_S = 60.0
    WARM_DEATH_WINDOW_S = 60.0
    WARM_RESTART_MAX_S = 8.0
    GIVE_UP_AFTER = 5

    def __init__(self, settings, count: int, *, command: list[str] | None = None) -> None:
        self.settings = settings
        self.count = count
        # The worker command; tests put a stand-in here.
        self.command = command or [sys.executable, "-m", "service.cli", "worker"]
        folder = Path(settings.data_dir) / "workers"
        self.slots = [_Slot(ready_file=folder / f"slot-{i}.ready") for i in range(count)]
        self.stopping = threading.Event()
        self.restarts = 0
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._supervise, name="worker-pool", daemon=True)

    @property
    def processes(self) -> list[subprocess.Popen]:
        return [slot.process for slot in self.slots if slot.process is not None]

    def _spawn(self, slot: _Slot) -> None:
        slot.ready_file.unlink(missing_ok=True)  # a killed predecessor's: not ready yet
        env = dict(os.environ)
        env.update(REWARD3D_REDIS_URL=self.settings.redis_url,
                   REWARD3D_BLOB_DIR=str(self.settings.resolved_blob_dir()),
                   REWARD3D_DATA_DIR=str(self.settings.data_dir),
                   REWARD3D_QUEUE_NAME=self.settings.queue_name,
                   REWARD3D_WORKER_READY_FILE=str(slot.ready_file),
                   REWARD3D_PARENT_PID=str(os.getpid()))  # fmt: skip
        slot.process = subprocess.Popen(self.command, env=env, start_new_session=True)
        slot.spawned_at, slot.ready_at = time.monotonic(), None

    def start(self) -> None:
        for slot in self.slots:  # (none with --workers 0: an API-only process)
            slot.ready_file.parent.mkdir(parents=True, exist_ok=True)
            self._spawn(slot)
        self._thread.start()

    def _supervise(self) -> None:
        while not self.stopping.wait(self.TICK_S):
            with self._lock:
                for slot in self.slots:
                    if self.stopping.is_set():
                        return
                    try:
                        self._check(slot)
                    except OSError as exc:  # cannot fork right now (memory, pids): next tick
                        stderr.print(f"worker pool: {exc}")
                        slot.next_start = time.monotonic() + self.RESTART_BASE_S

    def _check(self, slot: _Slot) -> None:
        now = time.monotonic()
        if slot.process is None:
            if now >= slot.next_start:
                self._spawn(slot)
                self.restarts += 1
            return
        if slot.ready_at is None and slot.ready_file.exists():  # (a kill -9 leaves the file)
            slot.ready_at, slot.start_failures = now, 0
        code = slot.process.poll()
        if code is None:
            return
        slot.process, slot.last_exit = None, code
        if slot.ready_at is not None:  # it ran: not a start failure
            slot.warm_deaths = [t for t in slot.warm_deaths if now - t < self.WARM_DEATH_WINDOW_S] + [now]
            delay = self._backoff(len(slot.warm_deaths) - 1, self.WARM_RESTART_MAX_S)
            stderr.print(f"worker exited with {code} after {now - slot.ready_at:.0f} s warm; "
                         f"restarting in {delay:.1f} s", highlight=False)  # fmt: skip
        else:
            slot.start_failures += 1
            delay = self._backoff(slot.start_failures - 1, self.RESTART_MAX_S)
            if slot.start_failures == self.GIVE_UP_AFTER:
                stderr.print(f"[bold red]a worker keeps failing before it is ready[/] ({slot.start_failures} "
                             f"times, exit code {code}; see above): retrying in the background, at "
                             f"most every {self.RESTART_MAX_S:.0f} s; /readyz says why", highlight=False)  # fmt: skip
            else:
                stderr.print(f"worker exited with {code} before it was ready ({slot.start_failures} in a "
                             f"row); retrying in {delay:.1f} s", highlight=False)  # fmt: skip
        slot.next_start = now + delay

    def _backoff(self, exponent: int, cap: float) -> float:
        """Exponential, capped, with full jitter in its upper half (restarts do not line up)."""
        base = min(cap, self.RESTART_BASE_S * 2 ** min(exponent, 20))
        return base * random.uniform(0.5, 1.0)

    def problem(self) -> str | None:
        """Why workers are missing, for /readyz; None if no slot is failing to start."""
        with self._lock:
            failing = [slot for slot in self.slots if slot.start_failures >= self.GIVE_UP_AFTER]
            if not failing:
                return None
            worst = max(failing, key=lambda slot: slot.start_failures)
            return (f"{len(failing)} of {self.count} worker(s) keep failing before their models are "
                    f"ready ({worst.start_failures} times in a row, last exit code {worst.last_exit}); "
                    f"retrying every {self.RESTART_MAX_S:.0f} s; see the server log")  # fmt: skip

    def stop(self, timeout_s: float) -> None:
        self.stopping.set()
        with self._lock:
            processes = self.processes
        for process in processes:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)  # warm shutdown: finish the job in hand
        deadline = time.monotonic() + timeout_s
        for process in processes:
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
    from redis.exceptions import RedisError

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
    except RedisError as exc:  # a refused login or permission: outages are waited out instead
        # Exit at once with one line: restarting (with backoff) is the orchestrator's job.
        raise fail(f"the worker cannot use Redis: {type(exc).__name__}: {exc}", code=1) from None
    raise typer.Exit(code)

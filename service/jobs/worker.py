"""``reward3d worker``: an rq SimpleWorker that keeps one warm RewardPipeline.

- No fork per job (rq's default): CUDA cannot be used in a forked child, and models must be
  loaded once. Jobs run in this process, one at a time.
- Ready only when warm: the pipeline is built and run on a tiny clip before the worker
  registers; ``/readyz`` looks for a live, warm worker, and ``worker_ready_file`` (if set)
  exists only from then until the worker stops (service/jobs/readiness.py).
- Heartbeat thread: every ``heartbeat_interval_s`` it refreshes this worker's liveness key and
  the started-registry entry of the job in hand (a silent worker's job is re-queued by the
  watchdog after ``heartbeat_ttl_s``), runs the watchdog sweep, and ends the process if an
  item is stuck in native code far past its time limit.
- SIGTERM: rq's warm shutdown: the job in hand is finished, then the worker exits (a second
  SIGTERM stops at once; the job is then re-queued by the watchdog).
- Redis going away does not end the process: the worker reconnects and keeps its models.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import threading
import time
import uuid

import redis
from rq.serializers import JSONSerializer
from rq.utils import now
from rq.worker import SimpleWorker

from service.jobs import keys
from service.jobs.blobs import open_blob_store
from service.jobs.cache import scorer_fingerprint
from service.jobs.connection import redis_connection
from service.jobs.queue import NoJobTimeout, RewardJob, make_queue
from service.jobs.readiness import clear_ready, mark_ready
from service.jobs.records import JobRecords
from service.jobs.stats import StatsWriter
from service.jobs.tasks import WorkerContext, set_context
from service.jobs.watchdog import sweep

log = logging.getLogger("reward3d.worker")

EXIT_STUCK = 75  # the process ended itself: an item was stuck in native code


class RewardWorker(SimpleWorker):
    job_class = RewardJob
    death_penalty_class = NoJobTimeout  # per-item limits instead (tasks.py)
    max_connection_wait_time = 5.0  # reconnect to a restarted Redis within seconds

    def __init__(self, *args, context: WorkerContext, ready_info: dict | None = None,
                 **kwargs) -> None:  # fmt: skip
        kwargs.setdefault("serializer", JSONSerializer)
        super().__init__(*args, **kwargs)
        self.context = context
        self.ready_info = ready_info or {}
        self.job_in_hand = None  # (job, execution) while a job runs
        self.stop_signalled = False
        self.maintenance_interval = max(int(context.settings.watchdog_interval_s), 1)

    # -- heartbeats ---------------------------------------------------------------------------
    def get_heartbeat_ttl(self, job, working_time: float = 0.0) -> int:
        """Short: a silent worker's job is re-queued after this (rq's default: timeout + 60 s)."""
        return int(self.context.settings.heartbeat_ttl_s)

    def prepare_execution(self, job):
        execution = super().prepare_execution(job)
        self.job_in_hand = (job, execution)
        return execution

    def execute_job(self, job, queue) -> None:
        try:
            super().execute_job(job, queue)
        finally:
            self.job_in_hand = None

    def beat_job(self) -> None:
        """Called from the heartbeat thread: keep the job in hand alive in rq's registries."""
        in_hand = self.job_in_hand
        if in_hand is not None:
            job, execution = in_hand
            self.maintain_heartbeats(job, execution)

    # -- maintenance: our watchdog instead of rq's 15-minute registry cleaning -------------------
    def clean_registries(self) -> None:
        sweep(self.connection, self.context.settings, store=self.context.store)
        self.last_cleaned_at = now()

    # -- signals --------------------------------------------------------------------------------
    def _install_signal_handlers(self) -> None:
        if threading.current_thread() is threading.main_thread():
            super()._install_signal_handlers()
        # Ready from here on, not before: a SIGTERM now gets the warm shutdown (which removes
        # the file), not the default kill that would leave a stale file behind.
        mark_ready(self.context.settings.worker_ready_file, self.ready_info)

    def request_stop(self, signum, frame) -> None:
        self.stop_signalled = True
        super().request_stop(signum, frame)


class Heartbeat(threading.Thread):
    """Liveness of this worker, heartbeats of its job, the watchdog sweep, the hard limit."""

    def __init__(self, context: WorkerContext, current_worker, info: dict,
                 parent_pid: int | None = None) -> None:  # fmt: skip
        super().__init__(name="reward3d-heartbeat", daemon=True)
        self.parent_pid = parent_pid  # started by `reward3d serve`: leave when it is gone
        self.context = context
        self.current_worker = current_worker  # () -> RewardWorker | None
        self.info = info
        self.stopped = threading.Event()
        self._last_sweep = 0.0
        self._last_error_log = 0.0

    def run(self) -> None:
        while not self.stopped.is_set():
            try:
                self.beat()
            except (redis.ConnectionError, redis.TimeoutError) as exc:
                if time.monotonic() - self._last_error_log > 10:
                    log.warning("heartbeat: Redis unreachable (%s)", exc)
                    self._last_error_log = time.monotonic()
            except Exception:
                log.exception("heartbeat failed")
            self.stopped.wait(self.context.settings.heartbeat_interval_s)

    def beat(self) -> None:
        settings, connection = self.context.settings, self.context.connection
        worker = self.current_worker()
        job_in_hand = worker.job_in_hand if worker is not None else None
        with connection.pipeline(transaction=False) as pipe:
            pipe.hset(keys.worker(self.context.name), mapping={
                "info": json.dumps(self.info),
                "beat": repr(time.time()),
                "current_job": job_in_hand[0].id if job_in_hand else "",
            })  # fmt: skip
            pipe.expire(keys.worker(self.context.name), int(settings.heartbeat_ttl_s))
            pipe.execute()
        if worker is not None:
            worker.beat_job()
        now = time.monotonic()
        if now - self._last_sweep >= settings.watchdog_interval_s:
            self._last_sweep = now
            sweep(connection, settings, store=self.context.store)
        self.enforce_hard_limit()
        if self.parent_pid is not None and os.getppid() != self.parent_pid:
            log.warning("the serving process is gone: finishing the job in hand, then exiting")
            self.parent_pid = None
            os.kill(os.getpid(), signal.SIGTERM)  # rq's warm shutdown

    def enforce_hard_limit(self) -> None:
        """An item stuck in native code (SIGALRM cannot interrupt it) ends the process: its
        job is re-queued by the watchdog and its retries bound the damage."""
        deadline = self.context.current.get("deadline")
        if deadline is None:
            return
        grace = max(30.0, 0.5 * deadline.seconds)
        if deadline.remaining() < -grace:
            log.critical("item stuck %.0f s past its time limit: exiting so the job is re-queued",
                         -deadline.remaining())  # fmt: skip
            os._exit(EXIT_STUCK)

    def stop(self) -> None:
        self.stopped.set()


# -- building a worker ------------------------------------------------------------------------
def build_pipeline(settings):
    """The pipeline, built and warmed once per process (models load here)."""
    from service.cli import configure_torch
    from service.pipeline import RewardPipeline
    from service.pipeline.geometry import resolve_geometry_backend
    from service.settings import GeometryBackend

    configure_torch(settings)
    pipeline = RewardPipeline(settings)
    if resolve_geometry_backend(settings) == GeometryBackend.ORACLE:
        # Oracle geometry comes with each request: warm the other stages on a synthetic clip.
        from service.schemas import ScoreOptions
        from service.synthetic import make_clip

        clip = make_clip("orbit", 4, 32, 48, supersample=1)
        pipeline(clip.frames, geometry_arrays=clip.geometry_arrays(),
                 options=ScoreOptions(max_frames=4, long_side=48))  # fmt: skip
    else:
        pipeline.warm_up()
    return pipeline


def describe(pipeline, settings) -> tuple[dict, str]:
    """(published info, scorer fingerprint) of a warm pipeline."""
    from service.pipeline.geometry import resolve_geometry_backend
    from service.settings import GeometryBackend

    backend = resolve_geometry_backend(settings)
    geometry_model = None if backend == GeometryBackend.ORACLE else pipeline.geometry_model()
    versions = pipeline.versions(geometry_model).model_dump()
    fingerprint = scorer_fingerprint(settings, versions=versions, device_type=pipeline.device.type)
    info = {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "warm": True,
        "started_at": time.time(),
        "device": str(pipeline.device),
        "geometry_backend": backend.value,
        "renderer": type(pipeline.renderer).__name__,
        "versions": versions,
        "fingerprint": fingerprint,
        "scoring": {
            "long_side": settings.long_side,
            "max_frames": settings.max_frames,
            "frame_stride": settings.frame_stride,
            "terms": pipeline.usable_terms(),
            "weights": settings.default_weights(),
        },
    }
    return info, fingerprint


def run_worker(settings, *, burst: bool = False, name: str | None = None,
               logging_level: str = "INFO", parent_pid: int | None = None) -> int:  # fmt: skip
    """Build, warm, then work until SIGTERM (or until the queue is empty with ``burst``)."""
    if not settings.redis_url:
        raise ValueError("a worker needs REWARD3D_REDIS_URL (or REDIS_URL)")
    clear_ready(settings.worker_ready_file)  # a killed predecessor's file: not warm yet
    connection = redis_connection(settings.redis_url)
    store = open_blob_store(settings)
    started = time.perf_counter()
    pipeline = build_pipeline(settings)
    info, fingerprint = describe(pipeline, settings)
    name = name or f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
    context = WorkerContext(
        settings=settings, connection=connection,
        records=JobRecords(connection, result_ttl_s=settings.result_ttl_s),
        store=store, pipeline=pipeline, stats=StatsWriter(connection), name=name,
        fingerprint=fingerprint, geometry_backend=info["geometry_backend"],
    )  # fmt: skip
    set_context(context)
    log.info("worker %s warm in %.1f s (geometry %s, device %s)", name,
             time.perf_counter() - started, info["geometry_backend"], info["device"])  # fmt: skip

    holder: dict = {"worker": None}
    heartbeat = Heartbeat(context, lambda: holder["worker"], info, parent_pid=parent_pid)
    heartbeat.start()
    generation = 0
    try:
        while True:
            worker = RewardWorker([make_queue(connection, settings)], connection=connection,
                                  name=f"{name}.{generation}", context=context,
                                  ready_info={"name": name, **info})  # fmt: skip
            holder["worker"] = worker
            try:
                worker.work(burst=burst, logging_level=logging_level)
            except (redis.ConnectionError, redis.TimeoutError) as exc:
                log.warning("Redis unreachable (%s); retrying", exc)
            if worker.stop_signalled or worker._stop_requested or burst:
                break
            generation += 1  # work() gave up (Redis went away...): go again, models kept
            time.sleep(1.0)
    finally:
        clear_ready(settings.worker_ready_file)  # first: no probe may see a stopping worker ready
        holder["worker"] = None
        heartbeat.stop()
        try:
            connection.delete(keys.worker(name))
        except redis.RedisError:
            pass
        set_context(None)
    return 0

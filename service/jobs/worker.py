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
- Redis going away does not end the process, however long it is gone: the worker waits for
  it (backoff capped at 1 s, so work resumes within ~2 s of Redis returning), builds a fresh rq
  worker on the same warm pipeline, and carries on. Only a refused login ends it (exit 1).
- rq's blocking dequeue waits ``dequeue_timeout`` on its own connection, whose read timeout is
  longer than that; a shorter one cuts every idle wait ("Timeout reading from socket").
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
from rq.defaults import DEFAULT_WORKER_TTL
from rq.serializers import JSONSerializer
from tenacity import Retrying, retry_if_exception, wait_exponential_jitter
from rq.utils import now
from rq.worker import SimpleWorker

from service.jobs import keys
from service.jobs.blobs import open_blob_store
from service.jobs.cache import scorer_fingerprint
from service.jobs.connection import is_transient, redis_connection
from service.jobs.queue import NoJobTimeout, RewardJob, make_queue
from service.jobs.readiness import clear_ready, mark_ready
from service.jobs.records import JobRecords
from service.jobs.stats import StatsWriter
from service.jobs.tasks import WorkerContext, set_context
from service.jobs.watchdog import sweep

log = logging.getLogger("reward3d.worker")

EXIT_STUCK = 75  # the process ended itself: an item was stuck in native code
# rq blocks in BLMOVE for up to dequeue_timeout (worker_ttl - 15 s); its connection must wait
# longer than that for a reply.
RQ_READ_TIMEOUT_S = DEFAULT_WORKER_TTL - 15 + 10
RECONNECT_MAX_WAIT_S = 1.0  # between attempts while Redis is down: back to work ~1 s after it returns


class RewardWorker(SimpleWorker):
    job_class = RewardJob
    death_penalty_class = NoJobTimeout  # per-item limits instead (tasks.py)
    max_connection_wait_time = RECONNECT_MAX_WAIT_S  # rq's own retry loop around the dequeue

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
            self.leave_if_orphaned()  # first: it needs no Redis, which may be down for good
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

    def leave_if_orphaned(self) -> None:
        if self.parent_pid is not None and os.getppid() != self.parent_pid:
            log.warning("the serving process is gone: finishing the job in hand, then exiting")
            self.parent_pid = None
            os.kill(os.getpid(), signal.SIGTERM)  # rq's warm shutdown (or the wait for Redis ends)

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
    rq_connection = dequeue_connection(settings.redis_url)
    stopping = threading.Event()
    generation = 0
    try:
        while not stopping.is_set():
            _stop_on_sigterm(stopping)  # between rq workers, rq's handlers are not ours to rely on
            if not wait_for_redis(rq_connection, stopping):
                break
            worker = None
            try:
                worker = RewardWorker([make_queue(rq_connection, settings)], connection=rq_connection,
                                      name=f"{name}.{generation}", context=context,
                                      ready_info={"name": name, **info})  # fmt: skip
                holder["worker"] = worker
                worker.work(burst=burst, logging_level=logging_level)
            except redis.RedisError as exc:
                if not is_transient(exc):
                    raise  # a refused login, a missing permission: no amount of waiting helps
                log.warning("Redis unreachable (%s); reconnecting, models kept", exc)
            if burst or (worker is not None and (worker.stop_signalled or worker._stop_requested)):
                break
            generation += 1  # work() gave up (Redis went away...): go again, models kept
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


def dequeue_connection(url: str):
    """rq's own connection: no read timeout shorter than its blocking dequeue (rq raises the
    timeout only for connections made after it starts; one made earlier, by the heartbeat on
    a shared pool, kept redis-py's 5 s and cut every idle wait), and no hidden retries in
    redis-py (this loop and rq's retry, and log it)."""
    return redis_connection(url, socket_timeout=RQ_READ_TIMEOUT_S, retries=0)


def wait_for_redis(connection, stopping: threading.Event) -> bool:
    """Block until Redis answers a PING (True) or ``stopping`` is set (False). Exponential
    backoff with jitter, capped at RECONNECT_MAX_WAIT_S; one log line per outage."""
    outage = {"since": None}

    def note(retry_state) -> None:
        if outage["since"] is None:
            outage["since"] = time.monotonic()
            log.warning("Redis unreachable (%s); waiting for it, models kept",
                        retry_state.outcome.exception())  # fmt: skip

    retrying = Retrying(
        retry=retry_if_exception(is_transient),
        wait=wait_exponential_jitter(initial=0.05, max=RECONNECT_MAX_WAIT_S, jitter=0.1),
        stop=lambda _state: stopping.is_set(),
        sleep=stopping.wait,
        before_sleep=note,
        reraise=True,
    )  # fmt: skip
    try:
        retrying(connection.ping)
    except redis.RedisError:
        if stopping.is_set():
            return False
        raise
    if outage["since"] is not None:
        log.warning("Redis is back after %.1f s", time.monotonic() - outage["since"])
    return not stopping.is_set()


def _stop_on_sigterm(stopping: threading.Event) -> None:
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, lambda *_: stopping.set())

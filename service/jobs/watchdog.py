"""The watchdog: nothing accepted is lost, whatever dies.

``sweep()`` runs every few seconds in every worker (heartbeat thread) and every API process,
under a short Redis lock so that one process does it at a time. Each pass:

1. *Abandoned jobs*: a worker holding a job refreshes its entry in rq's started registry
   every ``heartbeat_interval_s``; an entry silent for ``heartbeat_ttl_s`` (the worker was
   killed, OOM-killed, lost its machine) is re-queued while retries are left, else the job
   fails for good (callbacks.on_job_failure). Re-queued within ttl + one sweep, well under 60 s.
2. *Retries that are due*: rq parks a retried job with a backoff in its scheduled registry;
   we move it back to the queue when its time comes (no separate rq scheduler process).
3. *Stuck between dequeue and start*: a worker killed right after taking a job off the queue
   leaves it in rq's intermediate list; after a grace period we put it back.
4. *Reconcile*: an unfinished record whose rq job failed, vanished or ended without a
   terminal transition is failed (with the reason) or re-enqueued, so it never hangs.
5. *Blob janitor* (every few minutes): uploads that no unfinished job uses and nobody
   touched for ``blob_ttl_s`` are deleted.
"""

from __future__ import annotations

import logging
import time
import uuid
from dataclasses import dataclass, field

from rq.job import JobStatus
from rq.registry import ScheduledJobRegistry, StartedJobRegistry

from service.jobs import keys
from service.jobs.queue import NoJobTimeout, RewardJob, enqueue_score, make_queue
from service.jobs.records import TERMINAL, JobError, JobRecords

log = logging.getLogger("reward3d.watchdog")

INTERMEDIATE_GRACE_S = 10.0  # a live worker moves a job to "started" within milliseconds
RECONCILE_GRACE_S = 10.0
JANITOR_PERIOD_S = 300.0

_RELEASE_LOCK = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


@dataclass
class SweepReport:
    requeued: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    due_retries: list[str] = field(default_factory=list)
    rescued: list[str] = field(default_factory=list)
    reconciled: list[str] = field(default_factory=list)
    blobs_removed: int = 0


def sweep(connection, settings, *, store=None, force_janitor: bool = False) -> SweepReport | None:
    """One pass (see the module docstring). None if another process holds the lock."""
    token = uuid.uuid4().hex
    # Short: a process killed mid-sweep must not stop the sweeps for long.
    lock_ms = int(max(settings.watchdog_interval_s * 3, 3) * 1000)
    if not connection.set(keys.sweep_lock(), token, nx=True, px=lock_ms):
        return None
    try:
        queue = make_queue(connection, settings)
        records = JobRecords(connection, result_ttl_s=settings.result_ttl_s)
        report = SweepReport()
        requeue_abandoned(queue, report)
        enqueue_due_retries(queue, report)
        rescue_intermediate(queue, report)
        reconcile(queue, records, settings, report)
        if store is not None:
            collect_blobs(connection, records, store, settings, report, force=force_janitor)
        if report.requeued or report.failed or report.rescued or report.reconciled:
            log.warning("watchdog: %s", report)
        return report
    finally:
        connection.eval(_RELEASE_LOCK, 1, keys.sweep_lock(), token)


def requeue_abandoned(queue, report: SweepReport) -> None:
    registry = StartedJobRegistry(queue=queue, job_class=RewardJob, death_penalty_class=NoJobTimeout)
    expired = registry.get_expired_job_ids()
    if not expired:
        return
    registry.cleanup()  # retries left -> back on the queue (or scheduled); else failed
    for job_id in expired:
        job = queue.fetch_job(job_id)
        if job is None:
            continue
        status = job.get_status(refresh=False)
        (report.failed if status == JobStatus.FAILED else report.requeued).append(job_id)


def enqueue_due_retries(queue, report: SweepReport) -> None:
    registry = ScheduledJobRegistry(queue=queue, job_class=RewardJob, death_penalty_class=NoJobTimeout)
    for job_id in registry.get_jobs_to_schedule(int(time.time())):
        job = queue.fetch_job(job_id)
        with queue.connection.pipeline() as pipe:
            registry.remove(job_id, pipeline=pipe)
            if job is not None:
                queue._enqueue_job(job, pipeline=pipe, at_front=job.should_enqueue_at_front())
            pipe.execute()
        if job is not None:
            report.due_retries.append(job_id)


def rescue_intermediate(queue, report: SweepReport) -> None:
    connection = queue.connection
    started = set(StartedJobRegistry(queue=queue).get_job_ids(cleanup=False))
    for raw in connection.lrange(queue.intermediate_queue_key, 0, -1):
        job_id = raw.decode()
        if job_id in started:
            continue
        seen_key = keys.intermediate_seen(job_id)
        connection.set(seen_key, repr(time.time()), nx=True, ex=3600)
        first_seen = float(connection.get(seen_key) or time.time())
        if time.time() - first_seen < INTERMEDIATE_GRACE_S:
            continue
        with connection.pipeline() as pipe:
            pipe.lrem(queue.intermediate_queue_key, 1, job_id)
            if queue.fetch_job(job_id) is not None:
                queue.push_job_id(job_id, pipeline=pipe, at_front=True)
            pipe.delete(seen_key)
            pipe.execute()
        report.rescued.append(job_id)


def reconcile(queue, records: JobRecords, settings, report: SweepReport) -> None:
    """Every unfinished record must have a live rq job; fix those that do not."""
    now = time.time()
    for job_id, created_at in records.unfinished_ids():
        if now - created_at < RECONCILE_GRACE_S:
            continue
        status = records.status(job_id)
        if status is None:  # the record itself is gone: only drop it from the unfinished set
            queue.connection.zrem(keys.active(), job_id)
            continue
        if status in TERMINAL:
            continue
        job = queue.fetch_job(job_id)
        rq_status = job.get_status(refresh=False) if job is not None else None
        if rq_status in (JobStatus.QUEUED, JobStatus.STARTED, JobStatus.SCHEDULED,
                         JobStatus.DEFERRED):  # fmt: skip
            continue
        if rq_status in (JobStatus.FAILED, JobStatus.STOPPED, JobStatus.CANCELED):
            records.finish(job_id, "failed", _last_error(records, job_id))
        else:  # rq job missing, or finished without our terminal transition: run it again
            enqueue_score(queue, job_id, settings)
        report.reconciled.append(job_id)


def _last_error(records: JobRecords, job_id: str) -> JobError:
    raw = records.connection.hget(keys.job(job_id), "last_error")
    if raw:
        return JobError.model_validate_json(raw)
    return JobError(code="internal_error", detail="the job could not be completed (see worker logs)")


def collect_blobs(connection, records: JobRecords, store, settings, report: SweepReport, *,
                  force: bool = False) -> None:  # fmt: skip
    """Delete uploads nobody needs (at most every JANITOR_PERIOD_S across the fleet)."""
    if not force and not connection.set(keys.janitor_stamp(), "1", nx=True, ex=int(JANITOR_PERIOD_S)):
        return
    keep: set[str] = set()
    for job_id, _ in records.unfinished_ids():
        record = records.load(job_id)
        if record is not None:
            keep |= record.spec().blob_digests()
    report.blobs_removed = store.collect_garbage(older_than_s=settings.blob_ttl_s, keep=keep)
    from service.jobs.reports import open_report_store

    unfinished = {job_id for job_id, _ in records.unfinished_ids()}
    open_report_store(settings).collect_garbage(older_than_s=settings.result_ttl_s, keep=unfinished)

"""The rq queue, made safe: JSON only, allow-listed functions, and the submit transaction.

RQ's defaults are unsafe for a network service: its serializer is pickle (whoever writes to
Redis runs code on the workers) and a job may name any importable function. Here every job is
JSON and names one of :data:`JOB_FUNCTIONS`; anything else is refused when the job is created
and again when a worker resolves it.

A job's payload is only the job id: the record (records.py) holds the items, and the blob
store holds the tensors.
"""

from __future__ import annotations

import json
import math
import time
import uuid
from dataclasses import dataclass

from redis.exceptions import WatchError
from rq import Callback, Queue, Retry
from rq.job import Job
from rq.serializers import JSONSerializer
from rq.timeouts import BaseDeathPenalty
from rq.utils import import_attribute

from service.jobs import keys
from service.jobs.records import TERMINAL, JobRecords, JobSpec

# The only functions a job may run, and the only callbacks (dotted paths, resolved lazily so
# that the API never imports the pipeline, hence never torch).
SCORE_FUNCTION = "service.jobs.tasks.score_job"
FAILURE_CALLBACK = "service.jobs.callbacks.on_job_failure"
JOB_FUNCTIONS = frozenset({SCORE_FUNCTION})
CALLBACKS = frozenset({FAILURE_CALLBACK})


class ForbiddenJobFunction(RuntimeError):
    """A job named a function outside the allow-list (someone wrote to Redis directly?)."""


def _allowed(name: str | None, allowed: frozenset[str]) -> str:
    if name not in allowed:
        raise ForbiddenJobFunction(f"job function {name!r} is not allow-listed")
    return name


class RewardJob(Job):
    """An rq Job that resolves only allow-listed functions and callbacks."""

    @property
    def func(self):
        if self.instance is not None:
            raise ForbiddenJobFunction("jobs on object instances are not allowed")
        return import_attribute(_allowed(self.func_name, JOB_FUNCTIONS))

    @property
    def success_callback(self):
        if self._success_callback_name:
            raise ForbiddenJobFunction("success callbacks are not allowed")
        return None

    @property
    def stopped_callback(self):
        if self._stopped_callback_name:
            raise ForbiddenJobFunction("stopped callbacks are not allowed")
        return None

    @property
    def failure_callback(self):
        if not self._failure_callback_name:
            return None
        return import_attribute(_allowed(self._failure_callback_name, CALLBACKS))


class NoJobTimeout(BaseDeathPenalty):
    """rq's job-wide SIGALRM is replaced by per-item time limits (tasks.py), which own SIGALRM."""

    def setup_death_penalty(self) -> None:
        pass

    def cancel_death_penalty(self) -> None:
        pass


def make_queue(connection, settings) -> Queue:
    return Queue(
        settings.queue_name,
        connection=connection,
        job_class=RewardJob,
        serializer=JSONSerializer,
        death_penalty_class=NoJobTimeout,
    )


def enqueue_score(queue: Queue, job_id: str, settings, *, pipeline=None) -> Job:
    """Put a scoring job on the queue (its record must exist, or be created in ``pipeline``)."""
    retry = (
        Retry(max=settings.job_retries, interval=list(settings.retry_backoff_s) or 0)
        if settings.job_retries > 0
        else None
    )
    return queue.enqueue_call(
        _allowed(SCORE_FUNCTION, JOB_FUNCTIONS),
        args=[job_id],
        job_id=job_id,
        timeout=-1,  # no job-wide alarm: the per-item limit applies (see NoJobTimeout)
        result_ttl=settings.result_ttl_s,
        failure_ttl=settings.result_ttl_s,
        description=f"score job {job_id}",
        retry=retry,
        on_failure=Callback(_allowed(FAILURE_CALLBACK, CALLBACKS)),
        meta={"result_ttl_s": settings.result_ttl_s},
        pipeline=pipeline,
    )


# -- submitting -----------------------------------------------------------------------------
class SubmitRefused(Exception):
    """Base of the reasons a job is not accepted (the API maps each to a status code)."""


class QueueFull(SubmitRefused):
    def __init__(self, retry_after_s: int) -> None:
        super().__init__("the queue is full")
        self.retry_after_s = retry_after_s


class TooManyInFlight(SubmitRefused):
    def __init__(self, limit: int, retry_after_s: int) -> None:
        super().__init__(f"this API key already has {limit} unfinished jobs")
        self.retry_after_s = retry_after_s


class IdempotencyKeyReused(SubmitRefused):
    def __init__(self) -> None:
        super().__init__("this Idempotency-Key was used with a different request body")


@dataclass
class Submitted:
    job_id: str
    created: bool  # False: an existing job was returned (same Idempotency-Key or content)


def check_capacity(connection, settings, key_id: str, retry_after_s: int) -> None:
    """Cheap early check (before the body is read); ``submit_job`` checks again."""
    active, inflight = connection.zcard(keys.active()), connection.scard(keys.inflight(key_id))
    if active >= settings.max_queued_jobs:
        raise QueueFull(retry_after_s)
    if inflight >= settings.max_inflight_per_key:
        raise TooManyInFlight(settings.max_inflight_per_key, retry_after_s)


def submit_job(connection, queue: Queue, records: JobRecords, settings, *, spec: JobSpec,
               key_id: str, fingerprint: str, idempotency_key: str | None,
               retry_after_s: int = 5) -> Submitted:  # fmt: skip
    """Create the record and enqueue the job atomically, or return the job this request
    already made (same ``Idempotency-Key``, or same content while that job is not failed)."""
    idem_key = keys.idempotency(key_id, idempotency_key) if idempotency_key else None
    content_key = keys.content(key_id, fingerprint)
    for _ in range(20):
        with connection.pipeline() as pipe:
            try:
                pipe.watch(*(k for k in (idem_key, content_key) if k))
                existing = _existing_job(pipe, records, idem_key, content_key, fingerprint)
                if existing is not None:
                    return Submitted(existing, created=False)
                check_capacity(pipe, settings, key_id, retry_after_s)
                job_id = uuid.uuid4().hex
                now = time.time()
                pipe.multi()
                pipe.hset(keys.job(job_id), mapping=records.create_fields(
                    job_id, spec, key_id=key_id, fingerprint=fingerprint, now=now))  # fmt: skip
                pipe.zadd(keys.active(), {job_id: now})
                pipe.sadd(keys.inflight(key_id), job_id)
                link = json.dumps({"job_id": job_id, "fingerprint": fingerprint})
                if idem_key:
                    pipe.set(idem_key, link, ex=settings.idempotency_ttl_s)
                pipe.set(content_key, job_id, ex=settings.idempotency_ttl_s)
                enqueue_score(queue, job_id, settings, pipeline=pipe)
                pipe.execute()
                return Submitted(job_id, created=True)
            except WatchError:
                continue  # a concurrent identical request won: read its job on the next pass
    raise RuntimeError("could not submit the job: too much contention on its keys")


def _existing_job(pipe, records: JobRecords, idem_key, content_key, fingerprint) -> str | None:
    if idem_key:
        raw = pipe.get(idem_key)
        if raw is not None:
            link = json.loads(raw)
            if link["fingerprint"] != fingerprint:
                raise IdempotencyKeyReused()
            if records.status(link["job_id"]) is not None:
                return link["job_id"]
        return None  # a new key (or its job expired): a new job
    raw = pipe.get(content_key)
    if raw is not None:
        job_id = raw.decode()
        status = records.status(job_id)
        if status is not None and status not in ("failed", "cancelled"):
            return job_id
    return None


def retry_after_estimate(connection, settings, workers_alive: int) -> int:
    """Seconds until capacity frees up, roughly: unfinished jobs x mean item time / workers."""
    from service.jobs.stats import mean_item_seconds

    unfinished = connection.zcard(keys.active())
    per_item = mean_item_seconds(connection) or 2.0
    estimate = per_item * max(unfinished, 1) / max(workers_alive, 1)
    return int(min(max(math.ceil(estimate), 1), 120))


def is_terminal(status: str | None) -> bool:
    return status in TERMINAL

"""``POST /v1/score``: upload one or many videos, get a job (202) or, with ``?wait=``, results (200)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, Query, Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from service.api.deps import ApiKeyDep, ServicesDep
from service.api.errors import Problem
from service.api.ingest import UploadSession, read_submission
from service.api.openapi import SCORE_OPENAPI, SCORE_RESPONSES
from service.api.views import job_view, load_job, wait_until_ended
from service.jobs import keys
from service.jobs.cache import request_fingerprint
from service.jobs.queue import (
    IdempotencyKeyReused,
    QueueFull,
    TooManyInFlight,
    check_capacity,
    retry_after_estimate,
    submit_job,
)

router = APIRouter(prefix="/v1", tags=["score"])

IDEMPOTENCY_KEY_CHARS = set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.:~")


@router.post("/score", status_code=202, responses=SCORE_RESPONSES, openapi_extra=SCORE_OPENAPI,
             summary="Score one or many videos (a GRPO group)")  # fmt: skip
async def score(
    request: Request,
    services: ServicesDep,
    key_id: ApiKeyDep,
    wait: Annotated[float, Query(ge=0, le=3600, description="Seconds to wait for the results.")] = 0,
    idempotency_key: Annotated[str | None, Header(max_length=255)] = None,
) -> Response:
    """Accepts the video(s) and queues one job. Returns 202 with the job (poll
    ``GET /v1/jobs/{id}``), or 200 with the results if they are ready within ``wait`` seconds."""
    settings = services.settings
    if idempotency_key is not None and (not idempotency_key or set(idempotency_key) - IDEMPOTENCY_KEY_CHARS):
        raise Problem("invalid-request", "Idempotency-Key must be 1-255 characters of A-Z a-z 0-9 - _ . : ~")
    await run_in_threadpool(_check_capacity, services, key_id)  # 429 before reading the body
    uploads = UploadSession(services.store)
    try:
        submission = await read_submission(request, settings, uploads)
    except BaseException:  # refused or cut off: its uploads go now, not at the next janitor pass
        await run_in_threadpool(uploads.discard)
        raise
    services.metrics.upload_bytes.labels(submission.format).inc(submission.received_bytes)
    fingerprint = request_fingerprint(submission.spec)
    try:
        submitted = await run_in_threadpool(
            submit_job, services.connection, services.queue, services.records, settings,
            spec=submission.spec, key_id=key_id, fingerprint=fingerprint,
            idempotency_key=idempotency_key,
        )  # fmt: skip
    except (QueueFull, TooManyInFlight, IdempotencyKeyReused) as exc:
        # Refused for sure. (Not on a Redis error: the job may have been accepted just before
        # the connection broke, and would then need these blobs; the janitor decides later.)
        await run_in_threadpool(uploads.discard)
        if isinstance(exc, IdempotencyKeyReused):
            raise Problem("idempotency-key-reused", str(exc)) from None
        exc.retry_after_s = await run_in_threadpool(_retry_after, services)
        services.metrics.submissions.labels("rejected").inc()
        raise _too_many(exc) from None
    services.metrics.submissions.labels("created" if submitted.created else "deduplicated").inc()
    await wait_until_ended(services, submitted.job_id, min(wait, settings.max_wait_s))
    record, outcomes = await load_job(services, submitted.job_id, key_id)
    if record is None:  # expired in the meantime (a result TTL shorter than the wait)
        raise Problem("not-found", f"job {submitted.job_id} is no longer stored")
    return Response(job_view(record, outcomes, deduplicated=not submitted.created),
                    status_code=200 if record.terminal else 202, media_type="application/json",
                    headers={"Location": f"/v1/jobs/{record.id}"})  # fmt: skip


def _retry_after(services) -> int:
    workers = sum(1 for _ in services.connection.scan_iter(match=keys.worker_pattern(), count=100))
    return retry_after_estimate(services.connection, services.settings, workers)


def _check_capacity(services, key_id: str) -> None:
    try:
        check_capacity(services.connection, services.settings, key_id, retry_after_s=0)
    except (QueueFull, TooManyInFlight) as exc:
        exc.retry_after_s = _retry_after(services)
        services.metrics.submissions.labels("rejected").inc()
        raise _too_many(exc) from None


def _too_many(exc: QueueFull | TooManyInFlight) -> Problem:
    code = "queue-full" if isinstance(exc, QueueFull) else "too-many-in-flight"
    return Problem(code, f"{exc}; retry after {exc.retry_after_s} s",
                   headers={"Retry-After": str(exc.retry_after_s)})  # fmt: skip

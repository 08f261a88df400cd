"""``GET /v1/jobs/{id}`` (status, per-item results, progress; ``?wait=`` long-polls),
``DELETE /v1/jobs/{id}`` (cancel) and ``GET /v1/jobs/{id}/report`` (an item's HTML report)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from service.api.deps import ApiKeyDep, ServicesDep
from service.api.errors import Problem
from service.api.openapi import _job, _problem
from service.api.views import job_view, load_job, wait_until_ended
from service.jobs.records import JobError

router = APIRouter(prefix="/v1/jobs", tags=["jobs"])

JobId = Annotated[str, Path(max_length=64, description="The id returned by POST /v1/score.")]

_RESPONSES = {
    200: _job("The job: status, progress and one entry per item."),
    401: _problem("Missing or invalid API key."),
    404: _problem("No such job for this API key (or it expired)."),
}


@router.get("/{job_id}", responses=_RESPONSES, summary="Status and results of a job")
async def get_job(
    job_id: JobId,
    services: ServicesDep,
    key_id: ApiKeyDep,
    wait: Annotated[float, Query(ge=0, le=3600, description="Seconds to wait for the job to end.")] = 0,
) -> Response:
    """Items report ``ok`` (with ``result``), ``failed`` or ``cancelled`` (with ``error``), or
    ``pending``. With ``wait``, returns as soon as the job ends, or after ``wait`` seconds."""
    record, _ = await load_job(services, job_id, key_id)
    if record is None:
        raise Problem("not-found", f"no job {job_id!r} for this API key (or it expired)")
    if not record.terminal:
        await wait_until_ended(services, job_id, min(wait, services.settings.max_wait_s))
    record, outcomes = await load_job(services, job_id, key_id)
    if record is None:
        raise Problem("not-found", f"job {job_id!r} expired")
    return Response(job_view(record, outcomes), media_type="application/json")


# The report page is self-contained (inline images, styles and script): forbid everything else.
REPORT_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; img-src data:; style-src 'unsafe-inline'; "
                               "script-src 'unsafe-inline'; base-uri 'none'; form-action 'none'",
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "private, max-age=300",
}


@router.get("/{job_id}/report", summary="An item's HTML report",
            responses={200: {"content": {"text/html": {}}, "description": "The report page."},
                       401: _problem("Missing or invalid API key."),
                       404: _problem("No such job, item or report for this API key.")})  # fmt: skip
async def get_report(
    job_id: JobId,
    services: ServicesDep,
    key_id: ApiKeyDep,
    item: Annotated[int, Query(ge=0, le=100_000, description="The item's index in the job.")] = 0,
) -> Response:
    """Why the item scored as it did: frames beside their held-out re-renders and error maps,
    the camera path, each term's metrics. Kept only for items submitted with ``"report": true``,
    as long as the job's results."""
    from service.jobs.reports import open_report_store

    record, outcomes = await load_job(services, job_id, key_id)
    if record is None:
        raise Problem("not-found", f"no job {job_id!r} for this API key (or it expired)")
    if item >= record.num_items:
        raise Problem("not-found", f"job {job_id} has {record.num_items} item(s); no item {item}")
    store = open_report_store(services.settings)
    page = await run_in_threadpool(store.read, job_id, item)
    if page is None:
        state = "not scored yet" if item not in outcomes else "no report was kept for it"
        raise Problem("not-found", f"item {item} of job {job_id}: {state} (ask for one with "
                      "\"report\": true in the item's fields)")  # fmt: skip
    return Response(page, media_type="text/html; charset=utf-8", headers=REPORT_HEADERS)


@router.delete("/{job_id}", responses={**_RESPONSES, 409: _problem("The job already finished or failed.")},
               summary="Cancel a job")  # fmt: skip
async def cancel_job(job_id: JobId, services: ServicesDep, key_id: ApiKeyDep) -> Response:
    """Queued: it will not run. Running: it stops between stages; items already scored keep
    their results, the others are ``cancelled``. Cancelling a cancelled job is a no-op."""
    record, _ = await load_job(services, job_id, key_id)
    if record is None:
        raise Problem("not-found", f"no job {job_id!r} for this API key (or it expired)")
    if record.status in ("finished", "failed"):
        raise Problem("job-already-ended", f"job {job_id} has already {record.status}")
    await run_in_threadpool(services.records.finish, job_id, "cancelled",
                            JobError(code="cancelled", detail="cancelled by the client"))  # fmt: skip
    record, outcomes = await load_job(services, job_id, key_id)
    if record is None:
        raise Problem("not-found", f"job {job_id!r} expired")
    if record.status in ("finished", "failed"):  # it ended just before the cancel landed
        raise Problem("job-already-ended", f"job {job_id} has already {record.status}")
    return Response(job_view(record, outcomes), media_type="application/json")

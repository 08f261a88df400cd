"""The job as the API shows it (JobPublic), assembled without re-parsing stored results:
each item outcome is stored as the final JSON and embedded as is (orjson.Fragment)."""

from __future__ import annotations

import asyncio

import orjson
from starlette.concurrency import run_in_threadpool

from service.jobs.records import TERMINAL, JobRecord


def job_view(record: JobRecord, outcomes: dict[int, str], *, deduplicated: bool = False) -> bytes:
    items = []
    for index in range(record.num_items):
        if index in outcomes:
            items.append(orjson.Fragment(outcomes[index]))
            continue
        item = {"index": index, "id": record.item_ids[index] if index < len(record.item_ids) else None,
                "status": "pending", "cached": False, "result": None, "error": None}  # fmt: skip
        if record.status == "cancelled":
            item.update(status="cancelled", error={"code": "cancelled", "detail": "the job was cancelled"})
        elif record.status in TERMINAL:
            error = record.error.model_dump() if record.error else {
                "code": "internal_error", "detail": "the job ended without a result for this item"}
            item.update(status="failed", error=error)
        items.append(item)
    body = {
        "id": record.id,
        "status": record.status,
        "created_at": record.created_at,
        "started_at": record.started_at,
        "finished_at": record.finished_at,
        "attempts": record.attempts,
        "progress": {"done": len(outcomes), "total": record.num_items},
        "error": record.error.model_dump() if record.error and record.status == "failed" else None,
        "items": items,
        "deduplicated": deduplicated,
    }
    return orjson.dumps(body)


async def load_job(services, job_id: str, key_id: str):
    """(record, outcomes) of a job this key owns, or (None, None)."""
    def load():
        record = services.records.load(job_id)
        if record is None or (record.key_id != key_id and not services.insecure):
            return None, None
        return record, services.records.item_outcomes(job_id)

    return await run_in_threadpool(load)


async def wait_until_ended(services, job_id: str, seconds: float) -> None:
    """Return when the job has ended or ``seconds`` passed (woken by the events listener)."""
    if seconds <= 0:
        return
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    with services.events.watch(job_id) as ended:
        while True:
            status = await run_in_threadpool(services.records.status, job_id)
            remaining = deadline - loop.time()
            if status is None or status in TERMINAL or remaining <= 0:
                return
            try:
                await asyncio.wait_for(ended.wait(), timeout=min(remaining, 1.0))
            except TimeoutError:
                pass
            ended.clear()

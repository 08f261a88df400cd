"""The job function a worker runs: score every item of one job, writing each outcome as it
completes (so a re-run after a crash continues where the last attempt stopped).

Per item, in order: cancelled? -> result cache -> load inputs from the blob store -> run the
warm pipeline under the item's time limit -> store the outcome. Bad input, a timeout or an
out-of-memory fails *that item* (with a reason a trainer can mask); only infrastructure
errors (Redis gone...) fail the attempt, which rq then retries with backoff.

This module is imported by the API process too (rq resolves callbacks there), so the
pipeline and torch are imported lazily, inside the worker.
"""

from __future__ import annotations

import json
import logging
import re
import time
from dataclasses import dataclass, field
from typing import Any

from tenacity import Retrying, retry_if_exception, stop_after_attempt, wait_fixed

from service.jobs import keys
from service.jobs.batching import is_out_of_memory, run_in_batches
from service.jobs.blobs import BlobMissingError, BlobStoreUnavailableError
from service.jobs.cache import item_cache_key
from service.jobs.deadline import ItemTimeout, time_limit
from service.jobs.records import TERMINAL, ItemSpec, JobRecords
from service.jobs.stats import StatsWriter

log = logging.getLogger("reward3d.worker")


class JobStopped(Exception):
    """The job ended meanwhile (cancelled): stop working on it."""


@dataclass
class WorkerContext:
    """What a worker process keeps between jobs (built once by worker.py)."""

    settings: Any
    connection: Any  # redis.Redis (bytes responses, as rq needs)
    records: JobRecords
    store: Any  # blobs.DirectoryBlobStore
    pipeline: Any  # service.pipeline.RewardPipeline, warm
    stats: StatsWriter
    name: str
    fingerprint: str
    geometry_backend: str = "auto"  # resolved backend ("oracle": each item must bring geometry)
    # What the main thread is doing, for the heartbeat thread (hard time limit).
    current: dict[str, Any] = field(default_factory=dict)


_context: WorkerContext | None = None


def set_context(context: WorkerContext | None) -> None:
    global _context
    _context = context


def current_context() -> WorkerContext:
    if _context is None:
        raise RuntimeError("score_job runs inside a reward3d worker (reward3d worker)")
    return _context


# -- the job function (allow-listed in queue.py) ---------------------------------------------
def score_job(job_id: str) -> dict[str, Any]:
    context = current_context()
    records = context.records
    before = records.start(job_id, context.name)
    if before is None or before in TERMINAL:
        return {"status": before or "missing"}  # cancelled while queued, or a late duplicate
    record = records.load(job_id)
    if before == "queued":
        context.stats.observe("queue_wait_seconds", max(time.time() - record.created_at, 0.0))
    items = record.spec().items
    done = records.done_indices(job_id)
    todo = [index for index in range(len(items)) if index not in done]

    def score_batch(indices):
        for index in indices:
            yield index, score_item(context, job_id, index, items[index])

    def on_outcome(index: int, outcome: str) -> None:
        records.store_item(job_id, index, outcome)

    try:
        for event, indices in run_in_batches(
            # The pipeline scores one video per call, so batches of one: an item that runs out
            # of memory is retried alone once after freeing memory. (With a batched pipeline
            # call, larger batches would be split in halves on OOM: see batching.py.)
            todo, batch_size=1, score_batch=score_batch, on_outcome=on_outcome,
            out_of_memory_outcome=lambda index, exc: _failed(
                context, index, items[index], "out_of_memory",
                "ran out of memory on this input even alone, after freeing memory"),
            free_memory=_free_memory,
        ):  # fmt: skip
            log.warning("job %s: out of memory, %s %s", job_id, event, indices)
    except JobStopped:
        return {"status": records.status(job_id) or "missing"}
    records.finish(job_id, "finished")
    return {"status": records.status(job_id) or "missing"}


# -- one item -------------------------------------------------------------------------------
def score_item(context: WorkerContext, job_id: str, index: int, item: ItemSpec) -> str:
    """The item's outcome JSON. Raises JobStopped, out-of-memory errors, Redis errors and
    BlobStoreUnavailableError."""
    from service.pipeline.types import PipelineInputError

    settings = context.settings
    cache_key = item_cache_key(context.fingerprint, item) if settings.cache_ttl_s > 0 else None
    if cache_key is not None and not item.report:  # a report needs the renders: score afresh
        cached = context.connection.get(keys.result_cache(cache_key))
        if cached is not None:
            context.stats.increment("cache_hits_total")
            _count(context, "ok")
            return _ok(index, item, cached.decode(), cached=True)
        context.stats.increment("cache_misses_total")

    def transient(exc: BaseException) -> bool:  # worth one more try; bad input is not
        return not isinstance(exc, (PipelineInputError, ItemTimeout, BlobMissingError, JobStopped)) \
            and not is_out_of_memory(exc)  # fmt: skip

    started = time.perf_counter()
    try:
        for attempt in Retrying(stop=stop_after_attempt(2), wait=wait_fixed(1.0),
                                retry=retry_if_exception(transient), reraise=True):  # fmt: skip
            with attempt:
                output = _run_pipeline(context, job_id, index, item)
    except PipelineInputError as exc:
        return _failed(context, index, item, "invalid_input", str(exc))
    except BlobMissingError as exc:
        return _failed(context, index, item, "input_expired", str(exc))
    except ItemTimeout as exc:
        return _failed(context, index, item, "timeout", str(exc))
    except (JobStopped, BlobStoreUnavailableError):
        raise  # a store outage fails no item: the job is retried with backoff, as for Redis
    except Exception as exc:
        if is_out_of_memory(exc):
            raise  # the batch runner splits and retries
        log.exception("job %s item %d: internal error", job_id, index)
        return _failed(context, index, item, "internal_error",
                       f"scoring failed with {type(exc).__name__} (see worker logs)")  # fmt: skip
    finally:
        context.current.clear()

    result = output.result
    result_json = result.model_dump_json()
    with context.connection.pipeline(transaction=False) as pipe:
        if cache_key is not None:
            pipe.set(keys.result_cache(cache_key), result_json, ex=settings.cache_ttl_s)
        for stage, milliseconds in result.timings_ms.items():
            if stage != "total":
                context.stats.observe("stage_seconds", milliseconds / 1000, {"stage": stage}, pipe=pipe)
        context.stats.observe("item_seconds", time.perf_counter() - started, pipe=pipe)
        pipe.execute()
    report = _keep_report(context, job_id, index, item, output) if item.report else None
    _count(context, "ok")
    return _ok(index, item, result_json, cached=False, report=report)


def _keep_report(context: WorkerContext, job_id: str, index: int, item: ItemSpec, output) -> str | None:
    """Draw the item's HTML report while its renders are in memory; its URL path, or None if
    it could not be drawn (the score stands either way)."""
    from service.jobs.reports import open_report_store
    from service.report import video_page

    try:
        html = video_page(output.result, output=output, name=item.id or f"item {index}",
                          prompt=item.prompt)  # fmt: skip
        open_report_store(context.settings).write(job_id, index, html)
    except Exception:  # noqa: BLE001
        log.exception("job %s item %d: the report page could not be drawn", job_id, index)
        return None
    return f"/v1/jobs/{job_id}/report?item={index}"


def _run_pipeline(context: WorkerContext, job_id: str, index: int, item: ItemSpec):
    store, records = context.store, context.records
    if item.geometry is None and context.geometry_backend == "oracle" and _needs_geometry(context, item):
        from service.pipeline.types import PipelineInputError

        raise PipelineInputError("this server's geometry backend is 'oracle': send known geometry "
                                 "(depth, world_to_camera, intrinsics) with each video")  # fmt: skip
    video = store.local_path(item.video) if item.video.kind == "file" else store.load_array(item.video)
    geometry = None
    if item.geometry:
        import numpy as np

        geometry = {name: np.array(store.load_array(ref)) for name, ref in item.geometry.items()}
    limit = context.settings.item_time_limit_s
    with time_limit(limit) as deadline:
        context.current.update(job_id=job_id, index=index, deadline=deadline)

        def on_stage(stage: str) -> None:  # between stages: time left? still wanted?
            deadline.check()
            if records.status(job_id) in TERMINAL:
                raise JobStopped()

        output = context.pipeline.run(video, prompt=item.prompt, trajectory=item.trajectory,
                                      options=item.options, geometry_arrays=geometry,
                                      on_stage=on_stage)  # fmt: skip
    return output


def _needs_geometry(context: WorkerContext, item: ItemSpec) -> bool:
    """Whether any term this item asks for needs step 2 (a quality-only item does not: the
    pipeline skips geometry then, so an oracle worker can score it without known geometry)."""
    from service.pipeline.pipeline import GEOMETRY_TERMS

    terms = item.options.terms or context.pipeline.usable_terms()
    return bool(set(terms) & set(GEOMETRY_TERMS))


# -- outcomes (the public item view; see service/api/schemas.py ItemPublic) ------------------
def _ok(index: int, item: ItemSpec, result_json: str, *, cached: bool, report: str | None = None) -> str:
    return (f'{{"index":{index},"id":{json.dumps(item.id)},"status":"ok",'
            f'"cached":{"true" if cached else "false"},"error":null,"report":{json.dumps(report)},'
            f'"result":{result_json}}}')  # fmt: skip


def _failed(context: WorkerContext, index: int, item: ItemSpec, code: str, detail: str) -> str:
    context.stats.increment("item_failures_total", {"reason": code})
    _count(context, "failed")
    detail = public_detail(detail, blob_root=getattr(context.store, "root", None))
    return json.dumps({"index": index, "id": item.id, "status": "failed", "cached": False,
                       "error": {"code": code, "detail": detail[:500]}, "result": None})  # fmt: skip


# Two or more absolute path components (/srv/x, /tmp/a/b.mp4): a server path, whatever the
# library that put it into its message.
_SERVER_PATH = re.compile(r"(?<![\w.:/])(?:/[\w.@+~-]+){2,}/?")


def public_detail(detail: str, *, blob_root=None) -> str:
    """An item error as the caller may see it: what is wrong with *their* input, without the
    server's file system layout (blob paths, temp dirs) that decoder messages carry."""
    if blob_root is not None:
        stored = re.compile(re.escape(str(blob_root)) + r"/[^\s'\":,;)]*")
        detail = stored.sub("(uploaded file)", detail)
    return _SERVER_PATH.sub("<server path>", detail)


def _count(context: WorkerContext, status: str) -> None:
    context.stats.increment("items_total", {"status": status})


def _free_memory() -> None:
    import gc

    gc.collect()
    try:
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    except ImportError:
        pass

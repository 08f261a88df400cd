"""``GET /v1/info``: versions, what the workers score with, limits and formats."""

from __future__ import annotations

from fastapi import APIRouter
from starlette.concurrency import run_in_threadpool

import service
from service.api.deps import ApiKeyDep, ServicesDep
from service.api.ingest import FORMATS
from service.api.openapi import _problem
from service.api.routes.health import warm_workers
from service.api.schemas import InfoPublic, WorkerPublic

router = APIRouter(prefix="/v1", tags=["info"])


@router.get("/info", response_model=InfoPublic, summary="Versions, scoring settings, limits",
            responses={401: _problem("Missing or invalid API key.")})  # fmt: skip
async def info(services: ServicesDep, key_id: ApiKeyDep) -> InfoPublic:
    settings = services.settings
    workers = await run_in_threadpool(warm_workers, services.connection)
    scoring = workers[0]["scoring"] if workers else {
        "long_side": settings.long_side, "max_frames": settings.max_frames,
        "frame_stride": settings.frame_stride, "terms": None, "weights": settings.default_weights(),
    }  # fmt: skip
    return InfoPublic(
        reward3d=service.__version__,
        reward_spec=service.REWARD_SPEC_VERSION,
        scoring=scoring,
        workers=[WorkerPublic(name=w["name"], warm=True, device=w.get("device"),
                              geometry_backend=w.get("geometry_backend"),
                              current_job=w.get("current_job"), versions=w.get("versions"))
                 for w in workers],
        limits={
            "max_body_bytes": int(settings.max_body_mb * 2**20),
            "max_json_bytes": int(settings.max_json_mb * 2**20),
            "max_items_per_request": settings.max_items_per_request,
            "max_input_frames": settings.max_input_frames,
            "min_input_frames": 2,
            "max_input_side": settings.max_input_side,
            "min_input_side": 8,
            "max_queued_jobs": settings.max_queued_jobs,
            "max_inflight_per_key": settings.max_inflight_per_key,
            "max_wait_s": settings.max_wait_s,
            "item_time_limit_s": settings.item_time_limit_s,
            "result_ttl_s": settings.result_ttl_s,
        },
        formats=FORMATS,
        auth="none (insecure)" if services.insecure else "bearer",
    )  # fmt: skip

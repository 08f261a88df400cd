"""``/healthz`` (the process is up) and ``/readyz`` (Redis answers and a warm worker is alive).
No API key: these are for load balancers and Kubernetes probes, and reveal nothing."""

from __future__ import annotations

import json

import orjson
from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from service.api.deps import ServicesDep
from service.api.errors import Problem
from service.api.openapi import _problem
from service.jobs import keys

router = APIRouter(tags=["health"])


@router.get("/healthz", summary="Liveness")
async def healthz() -> dict:
    return {"status": "ok"}


def warm_workers(connection) -> list[dict]:
    workers = []
    for key in connection.scan_iter(match=keys.worker_pattern(), count=100):
        fields = connection.hgetall(key)
        info = json.loads(fields.get(b"info", b"{}") or b"{}")
        if info.get("warm"):
            current = (fields.get(b"current_job") or b"").decode() or None
            workers.append({"name": key.decode().rsplit(":", 1)[-1], "current_job": current, **info})
    return workers


@router.get("/readyz", summary="Readiness", responses={503: _problem("Not ready (reason in detail).")})
async def readyz(services: ServicesDep, request: Request) -> Response:
    def check() -> int:
        services.connection.ping()
        return len(warm_workers(services.connection))

    try:
        workers = await run_in_threadpool(check)
    except Exception:
        raise Problem("not-ready", "Redis is unreachable", headers={"Retry-After": "2"}) from None
    if workers == 0:
        pool = getattr(request.app.state, "worker_pool", None)  # `reward3d serve`'s own workers
        why = pool.problem() if pool is not None else None
        raise Problem("not-ready", f"no worker with warm models is alive{': ' + why if why else ''}",
                      headers={"Retry-After": "5"})  # fmt: skip
    return Response(orjson.dumps({"status": "ready", "workers": workers}), media_type="application/json")

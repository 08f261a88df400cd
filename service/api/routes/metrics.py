"""``GET /metrics``: Prometheus text format (API key needed unless REWARD3D_METRICS_PUBLIC)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Security
from fastapi.security import HTTPAuthorizationCredentials
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from service.api.deps import ServicesDep, bearer, require_api_key
from service.api.openapi import _problem

router = APIRouter(tags=["metrics"])


def metrics_access(services: ServicesDep,
                   credentials: Annotated[HTTPAuthorizationCredentials | None, Security(bearer)]) -> None:  # fmt: skip
    if not services.settings.metrics_public:
        require_api_key(services, credentials)


@router.get("/metrics", dependencies=[Depends(metrics_access)], summary="Prometheus metrics",
            responses={200: {"content": {"text/plain": {}}}, 401: _problem("Missing or invalid API key.")},
            response_class=Response)  # fmt: skip
async def metrics(services: ServicesDep) -> Response:
    body = await run_in_threadpool(services.metrics.render)
    return Response(body, media_type=CONTENT_TYPE_LATEST)

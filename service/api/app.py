"""The FastAPI application: ``create_app(settings)``.

Never imports torch (a test checks): the API validates, stores blobs and queues jobs; the
workers score. Background tasks while it runs: the job-events listener (long-polls) and the
watchdog sweep (service/jobs/watchdog.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
from pathlib import Path

from fastapi import FastAPI
from starlette.concurrency import run_in_threadpool

import service
from service.api.deps import Services, key_id_of
from service.api.errors import install_error_handlers
from service.api.events import JobEvents
from service.api.metrics import ApiMetrics, BodyLimitMiddleware, RequestMetricsMiddleware
from service.api.limits import RequestDeadlineMiddleware
from service.api.openapi import install_openapi
from service.api.routes import health, info, jobs, metrics, score
from service.jobs.blobs import open_blob_store
from service.jobs.connection import redis_connection
from service.jobs.queue import make_queue
from service.jobs.records import JobRecords
from service.jobs.watchdog import sweep
from service.settings import Settings, get_settings

log = logging.getLogger("reward3d.api")


class InsecureConfigError(RuntimeError):
    """Refusing to serve without API keys unless explicitly told to."""


def load_api_keys(settings: Settings) -> list[str]:
    keys = list(settings.api_keys)
    if settings.api_keys_file is not None:
        path = Path(settings.api_keys_file)
        if not path.is_file():
            raise InsecureConfigError(f"API keys file not found: {path}")
        keys += [line.strip() for line in path.read_text().splitlines()
                 if line.strip() and not line.startswith("#")]  # fmt: skip
    short = [k for k in keys if len(k) < 16]
    if short:
        raise InsecureConfigError("API keys must be at least 16 characters long")
    return keys


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    if not settings.redis_url:
        raise ValueError("the API needs REWARD3D_REDIS_URL (`reward3d serve` starts a Redis itself)")
    api_keys = load_api_keys(settings)
    if not api_keys and not settings.insecure_no_auth:
        raise InsecureConfigError(
            "no API keys configured: set REWARD3D_API_KEYS or REWARD3D_API_KEYS_FILE "
            "(or REWARD3D_INSECURE_NO_AUTH=1 on a private machine)"
        )
    connection = redis_connection(settings.redis_url)
    queue = make_queue(connection, settings)
    records = JobRecords(connection, result_ttl_s=settings.result_ttl_s)
    store = open_blob_store(settings)
    api_metrics = ApiMetrics(connection, queue)
    services = Services(
        settings=settings, connection=connection, records=records, queue=queue, store=store,
        events=JobEvents(settings.redis_url), metrics=api_metrics,
        key_digests={hashlib.sha256(k.encode()).hexdigest(): key_id_of(k) for k in api_keys},
        insecure=settings.insecure_no_auth and not api_keys,
    )  # fmt: skip

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        services.events.start()
        watchdog = asyncio.create_task(_watchdog(services), name="reward3d-watchdog")
        try:
            yield
        finally:
            watchdog.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watchdog
            await services.events.stop()
            connection.close()

    app = FastAPI(
        title="reward3d",
        version=service.__version__,
        description="3D-consistency rewards for generated video. Wire contract: docs/service.md.",
        lifespan=lifespan,
    )
    app.state.services = services
    install_error_handlers(app)
    install_openapi(app)
    for router in (score.router, jobs.router, health.router, info.router, metrics.router):
        app.include_router(router)
    app.add_middleware(BodyLimitMiddleware, max_bytes=int(settings.max_body_mb * 2**20))
    app.add_middleware(RequestDeadlineMiddleware, idle_timeout_s=settings.request_body_timeout_s,
                       min_bytes_per_s=settings.min_upload_kib_s * 1024)  # fmt: skip
    app.add_middleware(RequestMetricsMiddleware, metrics=api_metrics)
    return app


async def _watchdog(services: Services) -> None:
    """Sweep every ``watchdog_interval_s`` (workers sweep too; a lock keeps it to one at a time)."""
    while True:
        await asyncio.sleep(services.settings.watchdog_interval_s)
        try:
            await run_in_threadpool(sweep, services.connection, services.settings, store=services.store)
        except Exception as exc:  # Redis restarting, ...: try again next period
            log.warning("watchdog sweep failed: %s", exc)

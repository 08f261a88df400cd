"""Prometheus metrics for ``GET /metrics``.

This process measures its own HTTP traffic (request latency by route and status, upload
bytes by format, submissions). Everything the workers measure, and the state of the queue,
is read from Redis at scrape time (service.jobs.stats), so any API replica shows the fleet:

    reward3d_http_request_duration_seconds{method,route,status}   histogram
    reward3d_upload_bytes_total{format}                           counter
    reward3d_submissions_total{outcome}                           counter  created|deduplicated|rejected
    reward3d_queue_depth                                          gauge    jobs waiting in the rq queue
    reward3d_jobs_unfinished                                      gauge    accepted, not yet ended
    reward3d_oldest_unfinished_job_age_seconds                    gauge
    reward3d_workers_alive / reward3d_workers_busy                gauge
    reward3d_queue_wait_seconds                                   histogram (submit -> first start)
    reward3d_stage_seconds{stage}                                 histogram decode, geometry, ...
    reward3d_item_seconds                                         histogram
    reward3d_items_total{status}                                  counter
    reward3d_item_failures_total{reason}                          counter
    reward3d_job_failures_total{reason}                           counter
    reward3d_jobs_requeued_total{reason}                          counter
    reward3d_cache_hits_total / reward3d_cache_misses_total       counter
"""

from __future__ import annotations

import time

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

from service.jobs import keys
from service.jobs.stats import histogram_buckets, read_stats

HELP = {
    "queue_wait_seconds": "Time from submit to a worker starting the job.",
    "stage_seconds": "Compute time per pipeline stage and item.",
    "item_seconds": "Wall time per scored item on a worker (cache misses).",
    "items_total": "Items finished by workers, by status.",
    "item_failures_total": "Items that failed, by reason.",
    "job_failures_total": "Jobs that failed as a whole, by reason.",
    "jobs_requeued_total": "Job attempts that failed and were re-queued, by reason.",
    "cache_hits_total": "Items answered from the result cache.",
    "cache_misses_total": "Items computed (not in the result cache).",
}


class FleetCollector:
    """Queue state and worker-side stats, read from Redis on each scrape."""

    def __init__(self, connection, queue) -> None:
        self.connection = connection
        self.queue = queue

    def collect(self):
        connection = self.connection
        depth = GaugeMetricFamily("reward3d_queue_depth", "Jobs waiting in the queue.")
        depth.add_metric([], self.queue.count)
        yield depth
        unfinished = GaugeMetricFamily("reward3d_jobs_unfinished", "Accepted jobs not yet ended.")
        unfinished.add_metric([], connection.zcard(keys.active()))
        yield unfinished
        oldest = connection.zrange(keys.active(), 0, 0, withscores=True)
        age = GaugeMetricFamily("reward3d_oldest_unfinished_job_age_seconds",
                                "Age of the oldest unfinished job (0 if none).")  # fmt: skip
        age.add_metric([], max(time.time() - oldest[0][1], 0.0) if oldest else 0.0)
        yield age
        alive, busy = 0, 0
        for key in connection.scan_iter(match=keys.worker_pattern(), count=100):
            alive += 1
            busy += 1 if connection.hget(key, "current_job") else 0
        for name, value, text in (("reward3d_workers_alive", alive, "Workers heartbeating."),
                                  ("reward3d_workers_busy", busy, "Workers with a job in hand.")):  # fmt: skip
            gauge = GaugeMetricFamily(name, text)
            gauge.add_metric([], value)
            yield gauge

        families: dict[str, object] = {}
        for kind, name, labels, fields in read_stats(connection):
            label_names = sorted(labels)
            full = f"reward3d_{name}"
            if kind == "histogram":
                family = families.setdefault(full, HistogramMetricFamily(
                    full, HELP.get(name, name), labels=label_names))  # fmt: skip
                family.add_metric([labels[k] for k in label_names], histogram_buckets(fields),
                                  sum_value=fields.get("sum", 0.0))  # fmt: skip
            else:
                base = full[: -len("_total")] if full.endswith("_total") else full
                family = families.setdefault(base, CounterMetricFamily(
                    base, HELP.get(name, name), labels=label_names))  # fmt: skip
                family.add_metric([labels[k] for k in label_names], fields.get("value", 0.0))
        yield from families.values()


class ApiMetrics:
    def __init__(self, connection, queue) -> None:
        self.registry = CollectorRegistry()
        self.requests = Histogram(
            "reward3d_http_request_duration_seconds", "HTTP request latency.",
            ["method", "route", "status"], registry=self.registry,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
        )  # fmt: skip
        self.upload_bytes = Counter("reward3d_upload_bytes", "Request body bytes received.",
                                    ["format"], registry=self.registry)  # fmt: skip
        self.submissions = Counter("reward3d_submissions", "Score requests by outcome.",
                                   ["outcome"], registry=self.registry)  # fmt: skip
        self.registry.register(FleetCollector(connection, queue))

    def render(self) -> bytes:
        return generate_latest(self.registry)


class RequestMetricsMiddleware:
    """Times every HTTP request (pure ASGI: request bodies stream through untouched)."""

    def __init__(self, app, metrics: ApiMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started = time.perf_counter()
        status = {"code": 500}

        async def send_with_status(message):
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_with_status)
        finally:
            route = scope.get("route")
            path = getattr(route, "path", None) or "unmatched"
            self.metrics.requests.labels(scope["method"], path, str(status["code"])).observe(
                time.perf_counter() - started)  # fmt: skip


class BodyLimitMiddleware:
    """413 for a declared Content-Length over the limit (before the app runs), and a
    ``body-too-large`` problem from ``receive`` once a streamed body passes it."""

    def __init__(self, app, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        from service.api.errors import Problem, problem_response

        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            problem = Problem("body-too-large", f"the body is {int(declared)} bytes; the limit is "
                              f"{self.max_bytes}")  # fmt: skip
            return await problem_response(problem, scope["path"])(scope, receive, send)
        received = 0

        async def limited_receive():
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise Problem("body-too-large", f"the body passed the limit of {self.max_bytes} bytes")
            return message

        await self.app(scope, limited_receive, send)

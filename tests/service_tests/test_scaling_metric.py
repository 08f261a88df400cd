"""The metric the worker autoscaler reads (deploy/components/keda: reward3d_jobs_unfinished from
GET /metrics) counts queued *and* started jobs: a job a worker has taken off the queue still
needs that worker, so it must keep counting until it ends (a queue-length metric drops it)."""

from __future__ import annotations

import time

import httpx
import pytest

from service.api.encode import encode_binary

from service.jobs.queue import make_queue

from .conftest import ApiServer, WorkerProcess, auth, body_bytes, clip_arrays, make_settings

pytestmark = [pytest.mark.redis, pytest.mark.slow]


def _scrape(url: str) -> dict[str, float]:
    text = httpx.get(f"{url}/metrics", headers=auth(), timeout=10).text
    values = {}
    for line in text.splitlines():
        if line.startswith("reward3d_") and "{" not in line:
            name, value = line.split()
            values[name] = float(value)
    return values


def test_unfinished_jobs_count_queued_and_started(redis_url, fresh_redis, tmp_path):
    settings = make_settings(redis_url, tmp_path)
    api = ApiServer(settings).start()
    worker = None
    try:
        job_ids = []
        for seed in (1, 2):  # two different clips: two jobs, no deduplication
            video, geometry = clip_arrays("orbit", 8, 96, 160, seed=seed)
            headers, parts = encode_binary([video], geometry=[geometry], options={"long_side": 160})
            response = httpx.post(f"{api.url}/v1/score", content=body_bytes(parts),
                                  headers={**headers, **auth()}, timeout=60)  # fmt: skip
            assert response.status_code == 202, response.text
            job_ids.append(response.json()["id"])
        queued = _scrape(api.url)
        assert queued["reward3d_jobs_unfinished"] == 2 and queued["reward3d_queue_depth"] == 2
        assert queued["reward3d_workers_busy"] == 0

        # A worker starts a job by moving its id off the queue (rq's dequeue: LMOVE to the
        # intermediate list, then the started registry): the queue length drops, the job still
        # needs that worker, and the scaling metric keeps counting it.
        queue = make_queue(fresh_redis, settings)
        assert fresh_redis.lmove(queue.key, queue.intermediate_queue_key) is not None
        started = _scrape(api.url)
        assert started["reward3d_queue_depth"] == 1 and started["reward3d_jobs_unfinished"] == 2
        assert fresh_redis.lmove(queue.intermediate_queue_key, queue.key) is not None  # undo

        # A real worker finishes both: the metric then reads 0.
        worker = WorkerProcess(settings, tmp_path / "worker.log").start()
        deadline = time.monotonic() + 120
        while (values := _scrape(api.url))["reward3d_jobs_unfinished"] > 0:
            assert time.monotonic() < deadline, (tmp_path / "worker.log").read_text()[-2000:]
            time.sleep(0.1)
        assert values["reward3d_queue_depth"] == 0
        for job_id in job_ids:
            job = httpx.get(f"{api.url}/v1/jobs/{job_id}", headers=auth(), timeout=10).json()
            assert job["status"] == "finished" and job["items"][0]["status"] == "ok", job
    finally:
        if worker is not None:
            worker.stop()
        api.stop()

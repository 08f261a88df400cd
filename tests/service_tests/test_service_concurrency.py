"""16 clients x 10 jobs with distinct inputs, at the same time: each client gets exactly its own
results (the common practice's shared result queue hands out each other's results)."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import pytest

from service.api.encode import encode_binary
from service.schemas import ScoreOptions

from .conftest import ApiServer, WorkerProcess, auth, body_bytes, clip_arrays, make_settings, without_timings

CLIENTS, JOBS = 16, 10
OPTIONS = {"long_side": 32, "max_frames": 4, "terms": ["trajectory"]}


@pytest.fixture(scope="module")
def service(redis_url, fresh_redis, tmp_path_factory):
    root = tmp_path_factory.mktemp("concurrency")
    settings = make_settings(redis_url, root, max_inflight_per_key=CLIENTS * JOBS)
    server = ApiServer(settings).start()
    workers = [WorkerProcess(settings, root / f"worker{i}.log").start() for i in range(2)]
    for worker in workers:
        worker.wait_warm(fresh_redis)
    yield settings, server
    for worker in workers:
        worker.stop()
    server.stop()


def job_input(base, client: int, job: int):
    """Distinct pixels and distinct camera poses for every (client, job)."""
    video, geometry = base
    video = video.copy()
    video[0, 0, 0] = [client, job, 7]
    poses = geometry["world_to_camera"].copy()
    poses[:, 0, 3] += 0.01 * (client * JOBS + job)
    return video, {**geometry, "world_to_camera": poses}


def test_each_client_gets_its_own_results(service):
    settings, server = service
    base = clip_arrays("orbit", 4, 20, 32)

    def run_client(client: int) -> list[tuple[int, dict]]:
        results = []
        with httpx.Client(base_url=server.url, headers=auth(), timeout=120) as http:
            for job in range(JOBS):
                video, geometry = job_input(base, client, job)
                headers, parts = encode_binary([video], geometry=[geometry], options=OPTIONS,
                                               items=[{"id": f"c{client}-j{job}", "prompt": "orbit left"}])  # fmt: skip
                response = http.post("/v1/score?wait=120", headers=headers, content=body_bytes(parts))
                assert response.status_code == 200, response.text
                results.append((job, response.json()))
        return results

    with ThreadPoolExecutor(CLIENTS) as pool:
        per_client = list(pool.map(run_client, range(CLIENTS)))

    job_ids = set()
    for client, results in enumerate(per_client):
        assert len(results) == JOBS
        for job, body in results:
            job_ids.add(body["id"])
            assert body["status"] == "finished"
            item = body["items"][0]
            assert item["status"] == "ok" and item["id"] == f"c{client}-j{job}"
            sent = job_input(base, client, job)[1]["world_to_camera"]
            assert np.array_equal(np.array(item["result"]["geometry"]["world_to_camera"]), sent)
    assert len(job_ids) == CLIENTS * JOBS  # no job was shared

    # ...and the results are the in-process pipeline's, bit for bit (two spot checks).
    from service.pipeline import RewardPipeline

    pipeline = RewardPipeline(settings)
    for client, job in ((0, 0), (CLIENTS - 1, JOBS - 1)):
        video, geometry = job_input(base, client, job)
        expected = pipeline(video, prompt="orbit left", geometry_arrays=geometry,
                            options=ScoreOptions(**OPTIONS))  # fmt: skip
        got = dict(per_client[client])[job]["items"][0]["result"]
        assert without_timings(got) == without_timings(json.loads(expected.model_dump_json()))

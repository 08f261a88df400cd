"""The SDK (trainer_client.RewardClient / AsyncRewardClient) against the real service: the API
on a free loopback port, a real worker process (classical geometry, the TEST-ONLY brightness
quality backend) and the queue on the real Redis. Faults are injected by a proxy between the
SDK and the API (fault_proxy.py): 503/429 with Retry-After, dropped connections before and
after the API acted, slow responses. Then the trainer end to end through the service."""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from contextlib import contextmanager
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch
from rq.suspension import resume, suspend

from service.api.encode import encode_binary
from trainer_client import AsyncRewardClient, DeadlineExceeded, ItemFailure, RequestRejected, RetryPolicy, RewardClient
from trainer_client.rewards import ResultsRewardSource

from .conftest import API_KEY, ApiServer, WorkerProcess, auth, body_bytes, make_settings, without_timings
from .fault_proxy import FaultProxy

REPO = Path(__file__).resolve().parents[2]
FAST = RetryPolicy(base_delay_s=0.05, max_delay_s=0.2)  # quick retries for the tests
QUALITY = {"terms": ["quality"], "weights": {"quality": 1.0}}  # brightness: instant, exact


@pytest.fixture(scope="module")
def service(redis_url, fresh_redis, tmp_path_factory):
    root = tmp_path_factory.mktemp("sdk")
    settings = make_settings(redis_url, root, geometry_backend="classical", quality_backend="brightness",
                             long_side=64, max_frames=9)  # fmt: skip
    server = ApiServer(settings).start()
    worker = WorkerProcess(settings, root / "worker.log").start().wait_warm(fresh_redis)
    yield settings, server, fresh_redis
    worker.stop()
    server.stop()


@pytest.fixture
def proxy(service):
    proxy = FaultProxy(service[1].url, retry_after=0.4).start()
    yield proxy
    proxy.stop()


def videos(count: int, frames: int = 3, height: int = 48, width: int = 64, seed: int = 0) -> np.ndarray:
    """uint8 [B,T,H,W,3] with clearly different brightness per video (so mix-ups show). By
    default at the worker's long side (no resizing) and with at most the 3 frames the
    brightness backend samples, so its score is exactly the mean pixel value."""
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 40, (count, frames, height, width, 3))
    return (base + 200 * np.arange(count)[:, None, None, None, None] // max(count, 1)).astype(np.uint8)


def brightness(video: np.ndarray) -> float:
    return float(video.mean() / 255.0)


_primers = iter(range(1000, 2000))


def _worker_suspended(connection) -> bool:
    states = [connection.hget(key, "state") for key in connection.scan_iter("rq:worker:*")
              if connection.type(key) == b"hash"]  # fmt: skip
    return bool(states) and all(state == b"suspended" for state in states)


def _wait_until(condition, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError("the worker did not change state in time")
        time.sleep(0.05)


@contextmanager
def workers_paused(service):
    """Jobs stay queued inside the block (rq suspension). rq checks for it only between jobs:
    a worker idle in BLPOP is given one job first, then is seen to be suspended."""
    _, server, connection = service
    suspend(connection)
    try:
        if not _worker_suspended(connection):
            with RewardClient(server.url, api_key=API_KEY, deadline_s=30) as client:
                client.score(videos(1, seed=next(_primers)), **QUALITY)  # new content: really runs
            _wait_until(lambda: _worker_suspended(connection))
        yield
    finally:
        resume(connection)
        _wait_until(lambda: not _worker_suspended(connection))  # back to BLPOP for the next block


# -- results ----------------------------------------------------------------------------------
def test_numpy_and_torch_inputs_give_the_services_own_results(service):
    _, server, _ = service
    batch = videos(2, frames=6, height=36, width=48, seed=1)
    prompts = ["The camera orbits left around a statue.", "The camera pushes in."]
    with RewardClient(server.url, api_key=API_KEY) as client:
        from_numpy = client.score(batch, prompts=prompts)
        as_float = torch.from_numpy(batch).permute(0, 1, 4, 2, 3).float() / 255.0  # [B,T,C,H,W] in [0,1]
        from_torch = client.submit(as_float, prompts=prompts).result(60)
    headers, parts = encode_binary(batch, items=[{"prompt": p} for p in prompts])
    direct = httpx.post(f"{server.url}/v1/score?wait=60", headers={**headers, **auth()},
                        content=body_bytes(parts), timeout=60).json()  # fmt: skip
    assert direct["status"] == "finished"
    assert from_numpy.ok.all() and from_torch.ok.all()
    for index, item in enumerate(direct["items"]):
        expected = without_timings(item["result"])
        assert without_timings(json.loads(from_numpy[index].model_dump_json())) == expected
        assert without_timings(json.loads(from_torch[index].model_dump_json())) == expected
    assert set(from_numpy[0].terms) == {"reconstruction", "trajectory", "quality"}  # the real pipeline


def test_failed_items_are_masked_never_zero(service):
    _, server, _ = service
    long, short = videos(1, frames=6, seed=2)[0], videos(1, frames=3, seed=3)[0]
    with RewardClient(server.url, api_key=API_KEY, retry=FAST) as client:
        # stride 3: the 3-frame video keeps 1 frame and fails on the worker; the other is scored
        scores = client.score([long, short], prompts=["a", "b"], options={"frame_stride": 3}, **QUALITY)
        zero_weight = client.score([long], terms=["quality"], weights={"quality": 0.0})
    # the trainer's adapter reads the same mask (a client whose default options stride by 3)
    source = ResultsRewardSource(RewardClient(server.url, api_key=API_KEY, options={"frame_stride": 3}))
    try:
        batch = source.submit([long, short], ["a", "b"], terms=["quality"], weights={"quality": 1.0}).result(60)
    finally:
        source.close()
    assert scores.ok.tolist() == [True, False]
    assert isinstance(scores[1], ItemFailure) and scores[1].code == "invalid_input"
    assert np.isnan(scores.totals[1]) and scores.totals[0] == pytest.approx(brightness(long[[0, 3]]), abs=1e-6)
    assert scores.errors[0] is None and "invalid_input" in scores.errors[1]
    # the item is ok but no term has a positive weight: total is null, so the sample is masked
    assert zero_weight[0].total is None and not zero_weight.ok[0] and "no total" in zero_weight.errors[0]
    assert batch.ok.tolist() == [True, False] and np.isnan(batch.totals[1])


# -- transient failures: retried, same idempotency key, one job ------------------------------
def test_503_429_and_dropped_connections_are_retried_with_the_same_idempotency_key(service, proxy):
    proxy.plan("POST /v1/score", ["503", "drop", "drop_after", "ok"])
    video = videos(1, seed=4)
    with RewardClient(proxy.url, api_key=API_KEY, retry=FAST, deadline_s=60) as client:
        scores = client.score(video, **QUALITY)
    assert scores.ok.all() and scores.totals[0] == pytest.approx(brightness(video[0]), abs=1e-6)

    posts = proxy.requests("POST /v1/score")
    assert [p.fault for p in posts] == ["503", "drop", "drop_after", "ok"]
    assert len({p.headers["idempotency-key"] for p in posts}) == 1  # one key for every attempt
    created, answered = posts[2].payload, posts[3].payload  # the API acted on both
    assert created["id"] == answered["id"] == scores.job_id and answered["deduplicated"] is True
    assert posts[1].at - posts[0].at >= 0.4  # Retry-After: 0.4 honoured (jitter only adds)


def test_failed_polls_are_retried_until_the_job_ends(service, proxy):
    proxy.plan("GET /v1/jobs", ["429", "drop", "503"])
    video = videos(1, seed=9)
    with RewardClient(proxy.url, api_key=API_KEY, retry=FAST, deadline_s=60) as client:
        with workers_paused(service):  # the job waits in the queue while the polls fail
            future = client.submit(video, **QUALITY)
            proxy.requests("GET /v1/jobs", wait_for=3)
        scores = future.result(30)
    assert scores.ok.all() and scores.totals[0] == pytest.approx(brightness(video[0]), abs=1e-6)
    polls = proxy.requests("GET /v1/jobs")
    assert [p.fault for p in polls[:4]] == ["429", "drop", "503", "ok"]
    assert polls[1].at - polls[0].at >= 0.4 and polls[-1].payload["status"] == "finished"
    assert len(proxy.requests("POST /v1/score")) == 1


def test_a_slow_response_is_retried_after_the_request_timeout_and_dedups(service, proxy):
    proxy.plan("POST /v1/score", ["slow:2"])
    with RewardClient(proxy.url, api_key=API_KEY, retry=FAST, request_timeout_s=0.5, deadline_s=30) as client:
        scores = client.score(videos(1, seed=5), **QUALITY)
        answered = time.monotonic()
    posts = proxy.requests("POST /v1/score", wait_for=2)
    assert scores.ok.all() and [p.fault for p in posts] == ["slow:2", "ok"]
    assert posts[0].payload["id"] == posts[1].payload["id"] == scores.job_id
    assert posts[1].payload["deduplicated"] is True
    # It did not wait for the slow answer: the retry went out, and the result came back,
    # while the proxy was still holding the first response.
    assert posts[1].started < posts[0].at and answered < posts[0].at


def test_deadline_is_kept_and_an_abandoned_job_is_cancelled(service, proxy, caplog):
    server = service[1]
    # 1. a stalled response: the call ends at its deadline, not at httpx's timeouts
    proxy.plan("POST /v1/score", ["slow:5"])
    with RewardClient(proxy.url, api_key=API_KEY, retry=FAST, deadline_s=1.0, request_timeout_s=30) as client:
        started = time.monotonic()
        with pytest.raises(DeadlineExceeded):
            client.score(videos(1, seed=6), **QUALITY)
        assert time.monotonic() - started >= 0.9  # it waited for its deadline...
        # ...and not for the held response: the proxy is not done with it yet.
        assert not [p for p in proxy.requests("POST /v1/score") if p.fault == "slow:5"]

    # 2. Retry-After beyond the deadline: fail now instead of sleeping past it
    proxy.retry_after = 30
    proxy.plan("POST /v1/score", ["503"])
    with RewardClient(proxy.url, api_key=API_KEY, retry=FAST, deadline_s=5.0) as client:
        with caplog.at_level(logging.WARNING, logger="reward3d.client"):
            with pytest.raises(DeadlineExceeded, match="HTTP 503") as raised:
                client.score(videos(1, seed=7), **QUALITY)
        # One attempt, and no retry was scheduled (the SDK logs every sleep before a retry).
        assert raised.value.attempts == 1
        assert not [r for r in caplog.records if "retrying in" in r.getMessage()]
        assert [p.fault for p in proxy.requests("POST /v1/score")].count("503") == 1

    # 3. the job does not run in time (workers paused): deadline, then the job is cancelled
    with RewardClient(server.url, api_key=API_KEY, deadline_s=1.5) as client, workers_paused(service):
        started = time.monotonic()
        with pytest.raises(DeadlineExceeded) as raised:
            client.score(videos(1, seed=8), **QUALITY)
        assert time.monotonic() - started >= 1.4  # it waited for its deadline, then cancelled
        job_id = raised.value.job_id
        assert job_id and client.job(job_id).status == "cancelled"

    # 4. the caller gives up (future.cancel()): the job is cancelled on the service too
    proxy.reset()
    with RewardClient(proxy.url, api_key=API_KEY) as client, workers_paused(service):
        future = client.submit(videos(1, seed=13), **QUALITY)
        job_id = proxy.requests("POST /v1/score", wait_for=1)[0].payload["id"]
        assert future.cancel()
        deleted = proxy.requests("DELETE /v1/jobs", wait_for=1)
        assert [d.status for d in deleted] == [200] and client.job(job_id).status == "cancelled"


def test_client_errors_fail_fast_and_are_never_retried(service, proxy):
    with RewardClient(proxy.url, api_key="wrong-key-0123456789abcdef", retry=FAST) as client:
        with pytest.raises(RequestRejected) as raised:
            client.score(videos(1), **QUALITY)
    assert raised.value.status == 401 and raised.value.code == "unauthorized"
    with RewardClient(proxy.url, api_key=API_KEY, retry=FAST) as client:
        with pytest.raises(RequestRejected) as raised:
            client.score(videos(1, frames=1), **QUALITY)  # one frame: 422 video-limits
        assert raised.value.status == 422 and raised.value.code == "video-limits"
        with pytest.raises(RequestRejected) as raised:
            client.score(videos(1), terms=["colour"])  # not a term: 422 invalid-request
        assert raised.value.status == 422
    assert [p.status for p in proxy.requests("POST /v1/score")] == [401, 422, 422]  # one request each


def test_a_trainer_with_a_wrong_key_stops_before_loading_its_model(service):
    from trainer_client.trainer.config import RewardConfig
    from trainer_client.trainer.loop import build_reward_source

    with pytest.raises(ValueError, match="refused the trainer: HTTP 401 unauthorized"):
        build_reward_source(RewardConfig(source="http", url=service[1].url, api_key="wrong-key-0123456789abcdef"))


# -- concurrency and client-side downsampling --------------------------------------------------
def test_async_client_many_in_flight_results_never_cross(service):
    _, server, _ = service
    groups = [videos(3, seed=10 + i) + np.uint8(5 * i) for i in range(6)]

    async def main():
        async with AsyncRewardClient(server.url, api_key=API_KEY, max_in_flight=2) as client:
            return await asyncio.gather(*(client.score(g, ids=[f"g{i}-{j}" for j in range(3)], **QUALITY)
                                          for i, g in enumerate(groups)))  # fmt: skip

    results = asyncio.run(main())
    for group, scores in zip(groups, results):
        assert scores.totals == pytest.approx([brightness(v) for v in group], abs=1e-6)
    assert len({s.job_id for s in results}) == 6


def test_downsample_sends_the_frames_the_service_would_use(service, proxy):
    clip = videos(1, frames=20, height=96, width=160, seed=11)  # service: 9 frames, long side 64
    with RewardClient(proxy.url, api_key=API_KEY, downsample=True) as small, \
         RewardClient(proxy.url, api_key=API_KEY) as full:  # fmt: skip
        reduced = small.score(clip, **QUALITY)
        reference = full.score(clip, **QUALITY)
    sizes = [int(p.headers["content-length"]) for p in proxy.requests("POST /v1/score")]
    assert sizes[0] * 10 < sizes[1]  # 9 x 38 x 64 instead of 20 x 96 x 160
    assert reduced.totals[0] == pytest.approx(reference.totals[0], abs=1 / 255)  # uint8 rounding only
    frames = reduced[0].terms["quality"].metrics["frames"]
    assert frames == reference[0].terms["quality"].metrics["frames"]  # the same sampled frames


# -- the worker: an oracle-geometry worker scores quality-only items without geometry ---------
def test_oracle_worker_scores_quality_only_items_without_geometry(redis_url, tmp_path):
    import redis

    from service.jobs.blobs import DirectoryBlobStore
    from service.jobs.cache import request_fingerprint
    from service.jobs.queue import make_queue, submit_job
    from service.jobs.records import ItemSpec, JobRecords, JobSpec
    from service.jobs.stats import StatsWriter
    from service.jobs.tasks import WorkerContext, score_job, set_context
    from service.pipeline import RewardPipeline
    from service.schemas import ScoreOptions

    # a queue of its own: the module's live worker must not take this job
    settings = make_settings(redis_url, tmp_path, quality_backend="brightness", long_side=32, queue_name="oracle-test",
                             cache_ttl_s=0)  # fmt: skip
    connection = redis.Redis.from_url(redis_url)
    store, records = DirectoryBlobStore(settings.resolved_blob_dir()), JobRecords(connection, result_ttl_s=60)
    video = store.put_array(videos(1, seed=12)[0])
    spec = JobSpec(items=[ItemSpec(video=video, options=ScoreOptions(**QUALITY)),
                          ItemSpec(video=video, options=ScoreOptions(terms=["reconstruction"]))])  # fmt: skip
    job_id = submit_job(connection, make_queue(connection, settings), records, settings, spec=spec, key_id=uuid.uuid4().hex,
                        fingerprint=request_fingerprint(spec), idempotency_key=None).job_id  # fmt: skip
    set_context(WorkerContext(settings=settings, connection=connection, records=records, store=store,
                              pipeline=RewardPipeline(settings), stats=StatsWriter(connection), name="oracle",
                              fingerprint="f" * 64, geometry_backend="oracle"))  # fmt: skip
    try:
        score_job(job_id)
    finally:
        set_context(None)
    outcomes = {i: json.loads(v) for i, v in records.item_outcomes(job_id).items()}
    assert outcomes[0]["status"] == "ok" and outcomes[0]["result"]["terms"]["quality"]["status"] == "ok"
    assert outcomes[1]["status"] == "failed" and "oracle" in outcomes[1]["error"]["detail"]


# -- the trainer through the service (reward.source: http) -------------------------------------
TINY = REPO / "configs" / "tiny_cpu.yaml"


@pytest.fixture(scope="module")
def tiny_wan():
    """Tiny random Wan 2.1 built once; each trainer gets a deep copy (LoRA is added in place)."""
    from trainer_client.trainer.config import load_config
    from trainer_client.trainer.prompts import load_prompt_set
    from trainer_client.trainer.wan import build_tiny_wan

    torch.set_num_threads(1)
    corpus = load_prompt_set("camera_train") + load_prompt_set("dynamic")
    return build_tiny_wan(load_config(TINY).model.tiny, corpus=corpus)


def http_trainer(service, tiny_wan, tmp_path, *overrides):
    """The trainer as `reward3d train configs/tiny_cpu.yaml --set reward.source=http ...` builds
    it: the reward source comes from the config (trainer_client.RewardClient)."""
    import copy

    from trainer_client.trainer.config import load_config
    from trainer_client.trainer.loop import Trainer

    settings = [
        "logging.progress=false", "logging.tensorboard=false", f"run.output_dir={tmp_path}",
        "reward.source=http", f"reward.url={service[1].url}", f"reward.api_key={API_KEY}", "reward.timeout_s=120",
        *overrides,
    ]  # fmt: skip
    return Trainer(load_config(TINY, settings), components=copy.deepcopy(tiny_wan))


def test_trainer_end_to_end_with_the_real_pipeline_overlaps_rewards_with_rollouts(service, tiny_wan, tmp_path):
    """3 steps; every video scored by the real pipeline (classical geometry, reconstruction,
    trajectory, quality); each batch's reward request is in flight while the next batch is
    generated."""
    weights = "reward.weights={reconstruction: 1.0, trajectory: 1.0, quality: 1.0}"
    with http_trainer(service, tiny_wan, tmp_path, "grpo.rollout_batch_size=4", "dynamic.enabled=false",
                      weights) as trainer:  # fmt: skip
        assert type(trainer.reward_source.client).__name__ == "RewardClient"
        reports = [trainer.step() for _ in range(3)]
    for report in reports:
        assert report.ok.all() and report.mask.any(), report.errors
        timings = report.timings
        assert len(timings) == 4
        for earlier, later in zip(timings, timings[1:]):
            assert earlier.rollout_end <= earlier.submitted <= later.rollout_start  # sent before the next rollout
            assert earlier.completed > later.rollout_start  # and still being scored while it ran
        assert report.metrics["time/reward_hidden_s"] > 0
    assert {"reward/term/reconstruction", "reward/term/trajectory", "reward/term/quality"} <= set(reports[-1].metrics)
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["step"] for line in lines] == [0, 1, 2]


def test_rl_sanity_quality_through_the_service(service, tiny_wan, tmp_path):
    """12 steps with terms=[quality] (the TEST-ONLY brightness backend) through the real service
    raise the mean reward (bench/trainer_service_sanity.py: 30 steps x 3 seeds)."""
    with http_trainer(service, tiny_wan, tmp_path, "dynamic.enabled=false", "reward.terms=[quality]",
                      "reward.weights={quality: 1.0}") as trainer:  # fmt: skip
        reports = trainer.train(max_steps=12)
    rewards = [r.metrics["reward/mean"] for r in reports]
    assert all(r.metrics["reward/ok_fraction"] == 1.0 for r in reports)
    assert np.mean(rewards[-3:]) > np.mean(rewards[:3]) + 0.01, rewards

"""The queue layer without HTTP: blobs, records, allow-list, OOM splitting, time limits,
the watchdog, and that the API never imports torch."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
from rq.job import Job
from rq.registry import StartedJobRegistry
from rq.serializers import JSONSerializer

from service.jobs import keys
from service.jobs.batching import is_out_of_memory, run_in_batches
from service.jobs.blobs import BlobRef, DirectoryBlobStore, npy_header
from service.jobs.deadline import ItemTimeout, time_limit
from service.jobs.queue import (
    ForbiddenJobFunction,
    IdempotencyKeyReused,
    QueueFull,
    RewardJob,
    make_queue,
    submit_job,
)
from service.jobs.records import ItemSpec, JobError, JobRecords, JobSpec
from service.jobs.watchdog import sweep

from .conftest import REPO, make_settings


# -- blobs -----------------------------------------------------------------------------------
def test_blob_store_is_content_addressed_and_canonical(tmp_path):
    store = DirectoryBlobStore(tmp_path)
    video = np.arange(2 * 8 * 8 * 3, dtype=np.uint8).reshape(2, 8, 8, 3)
    first = store.put_array(video)
    again = store.put_array(video.copy())
    big_endian = store.put_array(video.astype(np.float32).astype(">f4"))
    little = store.put_array(video.astype(np.float32))
    assert first == again and first.kind == "npy" and first.shape == [2, 8, 8, 3]
    assert big_endian.blake3 == little.blake3  # byte order normalised: same content, same key
    loaded = store.load_array(first)
    assert isinstance(loaded, np.memmap) and np.array_equal(loaded, video)
    on_disk = store.path(first).read_bytes()
    assert on_disk.startswith(npy_header(np.uint8, (2, 8, 8, 3))) and on_disk.endswith(video.tobytes())
    # streamed in odd-sized pieces: the same blob
    writer = store.writer("npy", dtype=np.uint8, shape=video.shape, expected_nbytes=video.nbytes)
    raw = video.tobytes()
    for start in range(0, len(raw), 37):
        writer.write(raw[start : start + 37])
    assert writer.commit() == first


def test_blob_key_is_the_blake3_of_the_stored_bytes_and_says_so(tmp_path, monkeypatch):
    from blake3 import blake3

    from service.jobs import cache

    store = DirectoryBlobStore(tmp_path)
    ref = store.put_array(np.arange(600, dtype=np.uint8).reshape(2, 10, 10, 3))
    assert ref.blake3 == blake3(store.path(ref).read_bytes()).hexdigest()
    # A record of the sha256 store (before issue 14) does not validate: never mixed with these.
    with pytest.raises(ValueError):
        BlobRef.model_validate({"sha256": ref.blake3, "kind": "npy", "nbytes": 600})
    # The result cache key names the algorithm, so no sha256-era key can equal a new one.
    payloads = []
    monkeypatch.setattr(cache, "_digest", lambda payload: payloads.append(payload) or "x")
    cache.item_cache_key("scorer", ItemSpec.model_validate({"video": ref.model_dump()}))
    assert payloads[0]["video_blake3"] == ref.blake3 and "video" not in payloads[0]


def test_blob_garbage_collection_keeps_what_unfinished_jobs_use(tmp_path):
    store = DirectoryBlobStore(tmp_path)
    used = store.put_array(np.zeros((2, 8, 8, 3), np.uint8))
    stale = store.put_array(np.ones((2, 8, 8, 3), np.uint8))
    partial = store.writer("npy", dtype=np.uint8, shape=(4,))
    partial.write(b"\x00\x01")  # an upload that never finished
    assert store.collect_garbage(older_than_s=3600, keep=set()) == 0  # all fresh
    assert store.collect_garbage(older_than_s=-1, keep={used.blake3}) == 2
    assert store.exists(used) and not store.exists(stale)
    with pytest.raises(FileNotFoundError):
        store.load_array(stale)


# -- batching and time limits (pure) --------------------------------------------------------
class FakeOOM(RuntimeError):
    def __init__(self):
        super().__init__("CUDA out of memory. Tried to allocate 2.00 GiB")


def test_out_of_memory_splits_the_batch_and_keeps_finished_items():
    calls, outcomes = [], {}

    def score_batch(indices):
        calls.append(list(indices))
        for index in indices:
            if len(indices) > 2 or index == 5:  # batches over 2 do not fit; item 5 never fits
                raise FakeOOM()
            yield index, f"ok {index}"

    events = list(run_in_batches(
        list(range(6)), batch_size=6, score_batch=score_batch,
        on_outcome=lambda i, o: outcomes.__setitem__(i, o),
        out_of_memory_outcome=lambda i, exc: f"oom {i}",
    ))  # fmt: skip
    assert outcomes == {0: "ok 0", 1: "ok 1", 2: "ok 2", 3: "ok 3", 4: "ok 4", 5: "oom 5"}
    assert calls[0] == [0, 1, 2, 3, 4, 5] and [0, 1, 2] in calls and [0] in calls
    assert ("retry", [5]) in events  # after an OOM in [4, 5], item 5 gets one try alone
    assert sum(1 for call in calls if call == [5]) == 1 and [4, 5] in calls


def test_other_errors_are_not_treated_as_out_of_memory():
    def score_batch(indices):
        raise ValueError("a bug")
        yield  # pragma: no cover

    with pytest.raises(ValueError):
        list(run_in_batches([0, 1], batch_size=2, score_batch=score_batch,
                            on_outcome=lambda *a: None, out_of_memory_outcome=lambda *a: None))  # fmt: skip
    assert is_out_of_memory(MemoryError()) and is_out_of_memory(FakeOOM())
    assert not is_out_of_memory(RuntimeError("shape mismatch"))


def test_time_limit_interrupts_python_code_in_the_main_thread():
    started = time.perf_counter()
    with pytest.raises(ItemTimeout):
        with time_limit(0.2):
            while True:
                sum(range(1000))
    # Reaching here at all proves the endless loop was interrupted; not before the limit.
    assert time.perf_counter() - started >= 0.19
    assert signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)  # disarmed


def test_time_limit_is_cooperative_in_other_threads():
    outcome = {}

    def body():
        try:
            with time_limit(0.05) as deadline:
                time.sleep(0.1)
                deadline.check()  # what the pipeline's stage callback does
        except ItemTimeout:
            outcome["timeout"] = True

    thread = threading.Thread(target=body)
    thread.start()
    thread.join()
    assert outcome == {"timeout": True}


# -- records, allow-list, submit --------------------------------------------------------------
def _spec(store, seed: int = 0, items: int = 1) -> JobSpec:
    rng = np.random.default_rng(seed)
    return JobSpec(items=[ItemSpec(video=store.put_array(rng.integers(0, 255, (2, 8, 8, 3), np.uint8)))
                          for _ in range(items)])  # fmt: skip


@pytest.fixture
def queue_setup(redis_url, fresh_redis, tmp_path):
    fresh_redis.flushdb()
    settings = make_settings(redis_url, tmp_path, max_queued_jobs=3)
    store = DirectoryBlobStore(settings.resolved_blob_dir())
    records = JobRecords(fresh_redis, result_ttl_s=60)
    return settings, fresh_redis, store, records, make_queue(fresh_redis, settings)


def _submit(setup, spec, idempotency_key=None, key_id="k1"):
    from service.jobs.cache import request_fingerprint

    settings, connection, _, records, queue = setup
    return submit_job(connection, queue, records, settings, spec=spec, key_id=key_id,
                      fingerprint=request_fingerprint(spec), idempotency_key=idempotency_key)  # fmt: skip


def test_jobs_are_json_and_only_allow_listed_functions_run(queue_setup):
    settings, connection, store, records, queue = queue_setup
    submitted = _submit(queue_setup, _spec(store))
    raw = connection.hget(f"rq:job:{submitted.job_id}", "data")
    payload = json.loads(__import__("zlib").decompress(raw))  # JSON, not pickle
    assert payload[0] == "service.jobs.tasks.score_job" and payload[2] == [submitted.job_id]
    # Someone with Redis access enqueues another function: the worker refuses to resolve it.
    evil = queue.enqueue_call("os.system", args=["echo pwned"], job_id="evil")
    fetched = RewardJob.fetch(evil.id, connection=connection, serializer=JSONSerializer)
    with pytest.raises(ForbiddenJobFunction):
        fetched.func
    plain = Job.fetch(evil.id, connection=connection, serializer=JSONSerializer)
    assert callable(plain.func)  # what rq alone would have run


def test_terminal_transition_happens_once(queue_setup):
    _, connection, store, records, _ = queue_setup
    job_id = _submit(queue_setup, _spec(store)).job_id
    messages = connection.pubsub()
    messages.subscribe(keys.events())
    assert records.start(job_id, "w1") == "queued"
    assert records.store_item(job_id, 0, '{"index":0}') is True
    assert records.store_item(job_id, 0, '{"index":0,"again":1}') is False  # written once
    assert records.finish(job_id, "finished") is True
    assert records.finish(job_id, "failed", JobError(code="x", detail="y")) is False
    assert records.finish(job_id, "cancelled") is False
    assert records.start(job_id, "w2") == "finished"  # a late duplicate stops at once
    record = records.load(job_id)
    assert record.status == "finished" and record.attempts == 1 and record.error is None
    assert connection.zscore(keys.active(), job_id) is None
    assert 0 < connection.ttl(keys.job(job_id)) <= 60
    received = []
    deadline = time.monotonic() + 2
    while time.monotonic() < deadline and not received:
        message = messages.get_message(timeout=0.2)
        if message and message["type"] == "message":
            received.append(message["data"].decode())
    assert received == [f"{job_id} finished"]


def test_idempotency_key_and_content_dedup(queue_setup):
    _, _, store, records, _ = queue_setup
    spec, other = _spec(store, 1), _spec(store, 2)
    first = _submit(queue_setup, spec, idempotency_key="abc")
    assert first.created
    assert _submit(queue_setup, spec, idempotency_key="abc") == type(first)(first.job_id, False)
    with pytest.raises(IdempotencyKeyReused):
        _submit(queue_setup, other, idempotency_key="abc")
    assert _submit(queue_setup, spec).job_id == first.job_id  # same content, no key
    assert _submit(queue_setup, spec, key_id="k2").created  # other API keys never share jobs
    records.finish(first.job_id, "failed", JobError(code="x", detail="y"))
    assert _submit(queue_setup, spec).created  # a failed job is not handed out again


def test_bounded_queue(queue_setup):
    _, _, store, _, _ = queue_setup
    for seed in range(3):
        _submit(queue_setup, _spec(store, 10 + seed))
    with pytest.raises(QueueFull):
        _submit(queue_setup, _spec(store, 99))


def test_watchdog_requeues_a_job_whose_worker_went_silent(queue_setup):
    settings, connection, store, records, queue = queue_setup
    job_id = _submit(queue_setup, _spec(store)).job_id
    # A worker takes the job, then dies without a word: its started-registry entry expires.
    job = queue.fetch_job(job_id)
    assert connection.lpop(queue.key).decode() == job_id
    registry = StartedJobRegistry(queue=queue)
    from rq.executions import Execution

    with connection.pipeline() as pipe:
        execution = Execution.create(job, ttl=1, pipeline=pipe, worker_name="dead")
        job.set_status("started", pipeline=pipe)
        pipe.execute()
    records.start(job_id, "dead")
    assert registry.get_job_ids(cleanup=False) == [job_id]
    time.sleep(1.2)
    report = sweep(connection, settings)
    assert report.requeued == [job_id]
    assert queue.get_job_ids() == [job_id] and registry.get_job_ids(cleanup=False) == []
    assert records.status(job_id) == "queued"  # not failed: it will run again (nobody runs it now)
    record = records.load(job_id)
    assert record.attempts == 1 and "worker_lost" in connection.hget(keys.job(job_id), "last_error").decode()
    assert execution.id  # (the dead execution was cleaned up by rq's registry)


def test_watchdog_fails_a_job_that_ran_out_of_retries(queue_setup):
    settings, connection, store, records, queue = queue_setup
    job_id = _submit(queue_setup, _spec(store)).job_id
    job = queue.fetch_job(job_id)
    job.retries_left = 0
    job.save()
    connection.lpop(queue.key)
    from rq.executions import Execution

    with connection.pipeline() as pipe:
        Execution.create(job, ttl=1, pipeline=pipe, worker_name="dead")
        job.set_status("started", pipeline=pipe)
        pipe.execute()
    time.sleep(1.2)
    report = sweep(connection, settings)
    assert report.failed == [job_id]
    record = records.load(job_id)
    assert record.status == "failed" and record.error.code == "worker_lost"


def test_watchdog_reenqueues_an_unfinished_record_whose_rq_job_vanished(queue_setup):
    settings, connection, store, records, queue = queue_setup
    job_id = _submit(queue_setup, _spec(store)).job_id
    connection.delete(f"rq:job:{job_id}")
    connection.lrem(queue.key, 0, job_id)
    connection.zadd(keys.active(), {job_id: time.time() - 60})  # older than the grace period
    report = sweep(connection, settings)
    assert report.reconciled == [job_id] and queue.get_job_ids() == [job_id]


def test_importing_the_api_never_imports_torch():
    code = ("import sys; import service.api; from service.api import create_app; "
            "import service.api.routes.score, service.jobs.callbacks, service.jobs.tasks; "
            "print('torch' in sys.modules)")  # fmt: skip
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                         timeout=120, check=True)  # fmt: skip
    assert out.stdout.strip() == "False", out.stderr


def test_blob_refs_are_validated():
    with pytest.raises(ValueError):
        BlobRef(blake3="../../etc/passwd", kind="npy", nbytes=1)


# -- the job function with a fake pipeline: per-item outcomes -----------------------------------
class FakePipeline:
    """Behaves according to each item's prompt (what the real pipeline cannot be made to do
    on demand): 'ok', 'oom' (never fits), 'slow' (runs past the time limit), 'bad' (input)."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def run(self, video, *, prompt, trajectory, options, geometry_arrays, on_stage):
        from service.pipeline.types import PipelineInputError
        from service.schemas import RewardResult, Versions

        self.calls.append(prompt)
        on_stage("decode")
        if prompt == "oom":
            raise RuntimeError("CUDA out of memory. Tried to allocate 20.00 GiB")
        if prompt == "bad":
            raise PipelineInputError("need at least 2 frames after sampling")
        if prompt == "slow":
            while True:
                sum(range(1000))
        result = RewardResult(total=0.5, terms={}, timings_ms={"decode": 1.0, "total": 1.0},
                              versions=Versions(reward3d="test", reward_spec="test"))  # fmt: skip

        class Output:
            pass

        output = Output()
        output.result = result
        return output


def test_score_job_gives_each_item_its_outcome(queue_setup):
    from service.jobs.stats import StatsWriter
    from service.jobs.tasks import WorkerContext, score_job, set_context

    settings, connection, store, records, _ = queue_setup
    settings = settings.model_copy(update={"item_time_limit_s": 0.3})
    video = store.put_array(np.zeros((2, 8, 8, 3), np.uint8))
    prompts = ["ok", "oom", "slow", "bad", "ok"]
    spec = JobSpec(items=[ItemSpec(video=video, prompt=p, id=f"i{n}", geometry={"depth": video})
                          for n, p in enumerate(prompts)])  # fmt: skip
    job_id = _submit(queue_setup, spec).job_id
    pipeline = FakePipeline()
    set_context(WorkerContext(settings=settings, connection=connection, records=records, store=store,
                              pipeline=pipeline, stats=StatsWriter(connection), name="test",
                              fingerprint="f" * 64))  # fmt: skip
    try:
        assert score_job(job_id) == {"status": "finished"}
    finally:
        set_context(None)
    outcomes = {i: json.loads(v) for i, v in records.item_outcomes(job_id).items()}
    assert [outcomes[i]["status"] for i in range(5)] == ["ok", "failed", "failed", "failed", "ok"]
    assert outcomes[1]["error"]["code"] == "out_of_memory"
    assert outcomes[2]["error"]["code"] == "timeout"
    assert outcomes[3]["error"]["code"] == "invalid_input"
    assert outcomes[4]["cached"] is True  # same input and options as item 0
    assert pipeline.calls.count("oom") == 2  # once in the batch, once alone after freeing memory
    assert signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)
    assert records.load(job_id).status == "finished"

"""The s3 blob store: API and worker that share no directory, talking to an S3-compatible
endpoint over HTTP (moto's standalone server speaks the S3 REST protocol; no MinIO binary can be
installed here). The same code talks to AWS, MinIO or Ceph through boto3."""

from __future__ import annotations

import json
import socket

import httpx
import numpy as np
import pytest

from service.api.encode import encode_binary
from service.jobs import keys
from service.jobs.blobs import BlobMissingError, S3BlobStore, open_blob_store
from service.jobs.object_storage import S3Objects

from .conftest import ApiServer, WorkerProcess, auth, body_bytes, clip_arrays, make_settings

BUCKET = "reward3d-test"


@pytest.fixture(scope="module")
def s3_endpoint():
    pytest.importorskip("boto3")
    pytest.importorskip("moto.server")
    server, endpoint = start_s3_server()
    yield endpoint
    server.stop()


def start_s3_server():
    """moto's S3 HTTP server on a free port, with the test bucket: (server, endpoint)."""
    import boto3
    from moto.server import ThreadedMotoServer

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    credentials = dict(aws_access_key_id="test", aws_secret_access_key="test", region_name="us-east-1")
    boto3.client("s3", endpoint_url=endpoint, **credentials).create_bucket(Bucket=BUCKET)
    return server, endpoint


@pytest.fixture
def aws_env(monkeypatch):
    # boto3's credential chain (the worker process inherits these through worker_env).
    for name, value in (("AWS_ACCESS_KEY_ID", "test"), ("AWS_SECRET_ACCESS_KEY", "test"),
                        ("AWS_DEFAULT_REGION", "us-east-1")):  # fmt: skip
        monkeypatch.setenv(name, value)


def objects(endpoint: str, prefix: str) -> S3Objects:
    return S3Objects(bucket=BUCKET, prefix=prefix, endpoint_url=endpoint, region="us-east-1")


def test_a_blob_written_on_one_machine_is_read_on_another(s3_endpoint, aws_env, tmp_path):
    api = S3BlobStore(tmp_path / "api", objects(s3_endpoint, "t1/blobs"))
    worker = S3BlobStore(tmp_path / "worker", objects(s3_endpoint, "t1/blobs"))
    array = np.random.default_rng(0).integers(0, 256, size=(4, 24, 32, 3), dtype=np.uint8)
    ref = api.put_array(array)

    assert not worker.path(ref).exists() and worker.exists(ref)
    loaded = worker.load_array(ref)  # downloaded once into the worker's cache, then mmapped
    assert worker.path(ref).is_file()
    np.testing.assert_array_equal(loaded, array)
    assert api.put_array(array) == ref  # same content: same key, one object

    objects(s3_endpoint, "t1/blobs").delete([worker.path(ref).name])
    fresh = S3BlobStore(tmp_path / "third", objects(s3_endpoint, "t1/blobs"))
    assert not fresh.exists(ref)
    with pytest.raises(BlobMissingError):
        fresh.load_array(ref)


def test_janitor_expires_bucket_objects_but_keeps_inputs_of_unfinished_jobs(s3_endpoint, aws_env, tmp_path):
    store = S3BlobStore(tmp_path / "cache", objects(s3_endpoint, "t2/blobs"))
    used = store.put_array(np.zeros((2, 8, 8, 3), np.uint8))
    stale = store.put_array(np.ones((2, 8, 8, 3), np.uint8))
    assert store.collect_garbage(older_than_s=3600, keep=set()) == 0  # all fresh
    assert store.collect_garbage(older_than_s=-1, keep={used.blake3}) == 1
    assert store.exists(used) and not store.exists(stale)
    assert not store.path(stale).exists()  # the local copy went too


def test_settings_choose_the_store_and_a_bucket_is_required(tmp_path):
    from pydantic import ValidationError

    from service.settings import Settings

    with pytest.raises(ValidationError, match="REWARD3D_S3_BUCKET"):
        Settings(blob_store="s3")
    assert type(open_blob_store(Settings(blob_dir=tmp_path))).__name__ == "DirectoryBlobStore"


def test_where_blobs_live_does_not_change_the_scorer_fingerprint_but_scoring_modes_do(tmp_path):
    from service.jobs.cache import scorer_fingerprint
    from service.settings import Settings

    def fingerprint(**values):
        return scorer_fingerprint(Settings(blob_dir=tmp_path, **values), versions={}, device_type="cpu")

    s3 = fingerprint(blob_store="s3", s3_bucket="b", s3_endpoint_url="http://minio:9000")
    assert s3 == fingerprint()
    assert fingerprint(trajectory_without_target="smoothness") != fingerprint()


def test_service_with_s3_and_no_shared_directory(s3_endpoint, aws_env, redis_url, fresh_redis, tmp_path):
    """Upload -> bucket -> worker on "another machine" (its own cache dir) -> result and report
    page, which the API reads back from the bucket."""
    s3 = dict(blob_store="s3", s3_bucket=BUCKET, s3_prefix="t3", s3_endpoint_url=s3_endpoint,
              s3_region="us-east-1")  # fmt: skip
    api_settings = make_settings(redis_url, tmp_path / "api", **s3)
    worker_settings = make_settings(redis_url, tmp_path / "worker", **s3)
    assert api_settings.resolved_blob_dir() != worker_settings.resolved_blob_dir()
    server = ApiServer(api_settings).start()
    worker = WorkerProcess(worker_settings, tmp_path / "worker.log").start().wait_warm(fresh_redis)
    try:
        video, geometry = clip_arrays("orbit", 6, 36, 64, seed=7)
        headers, parts = encode_binary([video], geometry=[geometry], options={"long_side": 64},
                                       items=[{"id": "v0", "report": True}])  # fmt: skip
        with httpx.Client(base_url=server.url, headers=auth(), timeout=120) as client:
            response = client.post("/v1/score?wait=90", headers=headers, content=body_bytes(parts))
            assert response.status_code == 200, response.text
            job = response.json()
            item = job["items"][0]
            assert job["status"] == "finished" and item["status"] == "ok", json.dumps(job)[:500]
            assert np.isfinite(item["result"]["total"])
            # The worker fetched the video from the bucket into its own cache...
            worker_cache = list((tmp_path / "worker" / "blobs").glob("??/*.npy"))
            assert worker_cache, "the worker read no blob from the bucket"
            # ...and its report page reached the API through the bucket.
            page = client.get(item["report"])
            assert page.status_code == 200 and page.text.lstrip().lower().startswith("<!doctype html")
            assert not (tmp_path / "api" / "blobs" / "reports").exists()
    finally:
        worker.stop()
        server.stop()


def test_an_unreachable_bucket_is_a_503_with_retry_after_and_nothing_is_accepted(
    aws_env, redis_url, fresh_redis, tmp_path
):
    pytest.importorskip("moto.server")
    server_s3, endpoint = start_s3_server()
    settings = make_settings(redis_url, tmp_path / "api", blob_store="s3", s3_bucket=BUCKET,
                             s3_prefix="t4", s3_endpoint_url=endpoint, s3_region="us-east-1")  # fmt: skip
    server = ApiServer(settings).start()
    try:
        server_s3.stop()  # the store goes away after the API started
        jobs_before = set(fresh_redis.scan_iter(match=keys.job("*")))
        video, geometry = clip_arrays("orbit", 4, 16, 24, seed=11)
        headers, parts = encode_binary([video], geometry=[geometry])
        with httpx.Client(base_url=server.url, headers=auth(), timeout=60) as client:
            response = client.post("/v1/score", headers=headers, content=body_bytes(parts))
            assert response.status_code == 503, response.text
            assert response.headers["retry-after"] and response.json()["code"] == "unavailable"
            assert "blob store" in response.json()["detail"]
            assert client.get("/healthz").status_code == 200
        assert set(fresh_redis.scan_iter(match=keys.job("*"))) == jobs_before  # no job was created
    finally:
        server.stop()


def test_a_store_outage_during_scoring_delays_the_job_but_fails_no_item(
    aws_env, redis_url, fresh_redis, tmp_path
):
    """The bucket vanishes between the upload and the worker's download, then comes back:
    the job is retried with backoff and finishes ok (a per-item failure would be a lost reward)."""
    pytest.importorskip("moto.server")
    import time

    from moto.server import ThreadedMotoServer

    server_s3, endpoint = start_s3_server()
    port = int(endpoint.rsplit(":", 1)[1])
    s3 = dict(blob_store="s3", s3_bucket=BUCKET, s3_prefix="t5", s3_endpoint_url=endpoint,
              s3_region="us-east-1", retry_backoff_s=[2, 2, 2])  # fmt: skip
    api = ApiServer(make_settings(redis_url, tmp_path / "api", **s3)).start()
    worker = None
    try:
        video, geometry = clip_arrays("orbit", 6, 36, 64, seed=12)
        headers, parts = encode_binary([video], geometry=[geometry], options={"long_side": 64})
        with httpx.Client(base_url=api.url, headers=auth(), timeout=120) as client:
            accepted = client.post("/v1/score", headers=headers, content=body_bytes(parts))
            assert accepted.status_code == 202, accepted.text  # no worker yet: it waits queued
            server_s3.stop()  # moto keeps its objects in this process: a restart finds them
            worker = WorkerProcess(make_settings(redis_url, tmp_path / "worker", **s3),
                                   tmp_path / "worker.log").start().wait_warm(fresh_redis)  # fmt: skip
            time.sleep(3.0)  # the worker takes the job, cannot download, the job waits for its retry
            server_s3 = ThreadedMotoServer(ip_address="127.0.0.1", port=port)
            server_s3.start()
            job = client.get(f"/v1/jobs/{accepted.json()['id']}?wait=60").json()
            assert job["status"] == "finished", job
            assert job["items"][0]["status"] == "ok", job["items"][0]
        assert "unreachable" in (tmp_path / "worker.log").read_text()  # the outage really happened
    finally:
        if worker is not None:
            worker.stop()
        api.stop()
        server_s3.stop()

"""Issue 15 (reliability): each finding reproduced, then shown fixed.

1 supervision that heals  2 workers outlive Redis outages  3 status after a re-queue
4 slow clients  5 no server paths  6 reasons for bad JSON  7 schema = server  8 no cut dequeue
9 private files, refused uploads removed.
Timing is never asserted: order and causality are; time limits are only safety timeouts.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import stat
import sys
import textwrap
import time
from pathlib import Path

import httpx
import pytest
import redis

from service.api.encode import encode_binary
from service.jobs import keys

from .conftest import API_KEY, ApiServer, WorkerProcess, auth, body_bytes, clip_arrays, make_settings
from .test_service_chaos import PrivateRedis

OPTIONS = {"long_side": 64, "max_frames": 6}
VIDEO, GEOMETRY = clip_arrays("orbit", 6, 36, 64)


def wait_for(predicate, timeout: float, what: str, interval: float = 0.05):
    """Poll until ``predicate()`` is truthy (its value), failing after a generous timeout."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out waiting for {what}")


def binary_request(videos=(VIDEO,), geometry=(GEOMETRY,), **fields) -> tuple[dict, bytes]:
    headers, parts = encode_binary(list(videos), geometry=list(geometry), options=OPTIONS, **fields)
    return headers, body_bytes(parts)


# -- 1. supervision ----------------------------------------------------------------------------
# A stand-in for `reward3d worker`: becomes ready (writes its ready file) unless told to fail.
FAKE_WORKER = textwrap.dedent("""
    import os, pathlib, sys, time
    if os.environ.get("FAIL_UNLESS") and not os.path.exists(os.environ["FAIL_UNLESS"]):
        sys.exit(3)  # e.g. a model that cannot load
    pathlib.Path(os.environ["REWARD3D_WORKER_READY_FILE"]).write_text("{}")
    time.sleep(600)
""")


def fake_pool(tmp_path, monkeypatch, **env):
    from service.cli_service import WorkerPool

    for name, value in env.items():
        monkeypatch.setenv(name, value)
    settings = make_settings("redis://127.0.0.1:6379/15", tmp_path)
    pool = WorkerPool(settings, 2, command=[sys.executable, "-c", FAKE_WORKER])
    pool.TICK_S, pool.RESTART_BASE_S, pool.RESTART_MAX_S, pool.WARM_RESTART_MAX_S = 0.02, 0.05, 0.3, 0.2
    return pool


def ready_pids(pool) -> list[int]:
    return [s.process.pid for s in pool.slots if s.process is not None and s.ready_at is not None]


def test_pool_restarts_warm_workers_however_often_they_die(tmp_path, monkeypatch):
    """main: three deaths within 30 s of a spawn and the pool stopped restarting for good."""
    pool = fake_pool(tmp_path, monkeypatch)
    pool.start()
    try:
        seen = set()
        for _ in range(6):  # twice the old limit, in quick succession
            pids = wait_for(lambda: len(ready_pids(pool)) == 2 and ready_pids(pool), 30, "two ready workers")
            seen |= set(pids)
            os.kill(pids[0], signal.SIGKILL)
            wait_for(lambda: pids[0] not in ready_pids(pool), 30, "the kill to be noticed")
        wait_for(lambda: len(ready_pids(pool)) == 2, 30, "both workers back")
        assert len(seen | set(ready_pids(pool))) == 8  # 2 first + 6 replacements
        assert pool.problem() is None
        assert all(slot.start_failures == 0 for slot in pool.slots)
    finally:
        pool.stop(timeout_s=5)


def test_pool_keeps_retrying_workers_that_fail_to_start_and_readyz_says_why(
        tmp_path, monkeypatch, redis_url, fresh_redis):  # fmt: skip
    flag = tmp_path / "model-is-there"
    pool = fake_pool(tmp_path, monkeypatch, FAIL_UNLESS=str(flag))
    pool.GIVE_UP_AFTER = 3
    settings = make_settings(redis_url, tmp_path)
    server = ApiServer(settings)
    server.app.state.worker_pool = pool
    server.start()
    pool.start()
    try:
        wait_for(pool.problem, 30, "the pool to report failing workers")
        response = httpx.get(f"{server.url}/readyz", timeout=10)
        assert response.status_code == 503
        assert "keep failing before their models are ready" in response.json()["detail"]
        failures = max(slot.start_failures for slot in pool.slots)
        wait_for(lambda: max(s.start_failures for s in pool.slots) > failures, 30, "retries to go on")
        flag.write_text("")  # the cause goes away: the background retries heal the pool
        wait_for(lambda: len(ready_pids(pool)) == 2, 30, "the pool to heal")
        assert pool.problem() is None
    finally:
        pool.stop(timeout_s=5)
        server.stop()


def test_a_pool_of_no_workers_is_fine(tmp_path):
    """`reward3d serve --workers 0`: an API-only process."""
    from service.cli_service import WorkerPool

    pool = WorkerPool(make_settings("redis://127.0.0.1:6379/15", tmp_path), 0)
    pool.start()
    assert pool.problem() is None and pool.processes == []
    pool.stop(timeout_s=1)


def test_worker_exits_at_once_with_one_line_when_redis_refuses_it(tmp_path):
    """Under Kubernetes a crash loop is the orchestrator's job: a refused login is final."""
    private = PrivateRedis(tmp_path)
    private.start()
    try:
        redis.Redis(port=private.port).config_set("requirepass", "the-right-one")
        settings = make_settings(f"redis://:wrong@127.0.0.1:{private.port}/0", tmp_path)
        worker = WorkerProcess(settings, tmp_path / "worker.log").start()
        code = worker.process.wait(120)
    finally:
        private.kill()
    output = (tmp_path / "worker.log").read_text()
    assert code == 1, output
    assert "the worker cannot use Redis" in output and "Traceback" not in output, output


# -- 2, 3, 8: one worker through idling, a Redis outage and a kill ------------------------------
@pytest.fixture(scope="module")
def outage_service(tmp_path_factory):
    root = tmp_path_factory.mktemp("outage")
    private = PrivateRedis(root).start()
    settings = make_settings(private.url, root, cache_ttl_s=0, heartbeat_ttl_s=2, heartbeat_interval_s=0.25)
    connection = redis.Redis.from_url(private.url)
    server = ApiServer(settings).start()
    worker = WorkerProcess(settings, root / "worker.log").start().wait_warm(connection)
    client = httpx.Client(base_url=server.url, headers=auth(), timeout=60)
    state = {"private": private, "settings": settings, "server": server, "worker": worker,
             "client": client, "root": root}  # fmt: skip
    yield state
    client.close()
    state["worker"].stop(timeout=10)  # (a test may have replaced it)
    worker.stop(timeout=10)
    server.stop()
    private.kill()


_unique = iter(range(100, 10_000))


def submit(client, videos=None, geometry=(GEOMETRY,)) -> str:
    """A new job (new pixels each time: the same content would return the earlier job)."""
    videos = videos or [clip_arrays("orbit", 6, 36, 64, seed=next(_unique))[0]]
    headers, body = binary_request(videos, geometry)
    response = client.post("/v1/score", headers=headers, content=body)
    assert response.status_code == 202, response.text
    return response.json()["id"]


def wait_ended(client, job_id: str, timeout: float = 120) -> dict:
    return wait_for(lambda: (body := client.get(f"/v1/jobs/{job_id}").json())["status"]
                    in ("finished", "failed", "cancelled") and body, timeout, f"job {job_id} to end")  # fmt: skip


def worker_info(private) -> dict:
    connection = redis.Redis(port=private.port)
    for key in connection.scan_iter(match=keys.worker_pattern()):
        return json.loads(connection.hget(key, "info"))
    return {}


def test_an_idle_worker_waits_on_redis_without_false_errors(outage_service):
    """main: redis-py's 5 s read timeout cut rq's blocking dequeue: 'Timeout reading from
    socket' logged as 'could not connect to Redis' every few seconds while Redis was fine."""
    worker = outage_service["worker"]
    time.sleep(7)  # more than one 5 s read timeout
    job_id = submit(outage_service["client"])
    assert wait_ended(outage_service["client"], job_id)["status"] == "finished"
    log = worker.log_path.read_text()
    assert "Timeout reading" not in log and "could not connect" not in log, log


def test_the_dequeue_connection_outwaits_a_blocking_dequeue(outage_service):
    """The cause of the false error lines: a pooled connection with redis-py's default 5 s
    read timeout (made before rq raised it) cut rq's blocking BLMOVE."""
    from service.jobs.worker import dequeue_connection

    connection = dequeue_connection(outage_service["private"].url)
    connection.ping()  # a pooled connection exists before the blocking call, as in a worker
    assert connection.blmove("chaos:empty", "chaos:other", 7) is None  # waited, was not cut


def test_worker_outlives_a_redis_outage_with_its_models_loaded(outage_service):
    """main: the job in hand failed on the outage, rq's work() returned, and building the next
    rq worker raised redis.ConnectionError: the process exited."""
    private, worker, client = outage_service["private"], outage_service["worker"], outage_service["client"]
    before = worker_info(private)
    videos = [clip_arrays("orbit", 6, 36, 64, seed=s)[0] for s in range(20, 28)]
    job_id = submit(client, videos, [GEOMETRY] * 8)
    wait_for(lambda: client.get(f"/v1/jobs/{job_id}").json()["status"] == "running", 60, "the job to run")
    private.kill()  # mid-job
    time.sleep(15)
    assert worker.process.poll() is None
    private.start()  # same port, same append-only file
    assert wait_ended(client, job_id)["status"] == "finished"
    assert wait_ended(client, submit(client))["status"] == "finished"
    assert worker.process.poll() is None
    after = wait_for(lambda: worker_info(private), 30, "the worker's liveness key")
    assert (after["pid"], after["started_at"]) == (before["pid"], before["started_at"])  # not reloaded


def test_status_is_queued_again_after_the_worker_is_lost(outage_service):
    """main: 'running' for as long as it took, with no worker alive."""
    private, worker, client = outage_service["private"], outage_service["worker"], outage_service["client"]
    videos = [clip_arrays("orbit", 6, 36, 64, seed=s)[0] for s in range(1, 9)]
    job_id = submit(client, videos, [GEOMETRY] * 8)
    wait_for(lambda: client.get(f"/v1/jobs/{job_id}").json()["status"] == "running", 60, "the job to run")
    worker.signal(signal.SIGKILL)
    worker.process.wait(30)
    body = wait_for(lambda: (b := client.get(f"/v1/jobs/{job_id}").json())["status"] != "running" and b,
                    60, "the watchdog to re-queue the job")  # fmt: skip
    assert body["status"] == "queued" and body["attempts"] == 1, body
    replacement = WorkerProcess(outage_service["settings"], outage_service["root"] / "w2.log").start()
    outage_service["worker"] = replacement  # stopped by the fixture
    body = wait_ended(client, job_id)
    assert body["status"] == "finished" and body["attempts"] == 2, body


# -- 4. slow clients ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def guarded_server(redis_url, fresh_redis, tmp_path_factory):
    settings = make_settings(redis_url, tmp_path_factory.mktemp("slow"), request_header_timeout_s=2,
                             request_body_timeout_s=1, min_upload_kib_s=1, max_connections_per_client=6,
                             max_json_mb=1)  # fmt: skip
    server = ApiServer(settings).start()
    yield server
    server.stop()


def connect(server, source: str = "127.0.0.1") -> socket.socket:
    host, port = server.url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)), timeout=30, source_address=(source, 0))
    return sock


def read_response(sock) -> tuple[int, dict]:
    """Status and problem body of the one response on this connection (until it closes)."""
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split(b" ")[1]), json.loads(body)


def request_head(path: str, length: int, content_type: str = "application/octet-stream", **headers) -> bytes:
    lines = [f"POST {path} HTTP/1.1", "Host: test", f"Authorization: Bearer {API_KEY}",
             f"Content-Type: {content_type}", f"Content-Length: {length}"]  # fmt: skip
    lines += [f"{k.replace('_', '-')}: {v}" for k, v in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def test_partial_headers_get_408(guarded_server):
    with connect(guarded_server) as sock:
        sock.sendall(b"POST /v1/score HTTP/1.1\r\nHost: test\r\n")  # and nothing more
        status, problem = read_response(sock)
    assert status == 408 and problem["code"] == "request-timeout"


def test_a_stalled_body_gets_408(guarded_server):
    headers, body = binary_request()
    with connect(guarded_server) as sock:
        sock.sendall(request_head("/v1/score", len(body), **{
            "Inference-Header-Content-Length": headers["Inference-Header-Content-Length"]}))  # fmt: skip
        sock.sendall(body[: len(body) // 2])  # then stalls
        status, problem = read_response(sock)
    assert status == 408 and problem["code"] == "request-timeout", problem


def test_a_trickled_body_gets_408(guarded_server):
    """Never idle long enough for the idle limit, but far below the minimum rate (1 KiB/s)."""
    body = json.dumps({"items": [{"id": "x" * 3000}]}).encode()
    with connect(guarded_server) as sock:
        sock.sendall(request_head("/v1/score", len(body), content_type="application/json"))
        sock.settimeout(0.25)
        response, sent = b"", 0
        while sent < len(body) and not response:
            try:
                sock.sendall(body[sent : sent + 1])  # a byte every 0.25 s
                sent += 1
                response += sock.recv(65536)
            except TimeoutError:
                continue
            except (BrokenPipeError, ConnectionResetError):
                break
        sock.settimeout(30)
        try:
            while chunk := sock.recv(65536):
                response += chunk
        except ConnectionResetError:
            pass
    assert sent < len(body)  # refused before it was all sent
    assert response.startswith(b"HTTP/1.1 408"), response[:200]


def test_one_client_cannot_hold_every_connection(guarded_server):
    held = [connect(guarded_server, "127.0.0.3") for _ in range(6)]
    try:
        with connect(guarded_server, "127.0.0.3") as extra:
            status, problem = read_response(extra)
        assert status == 429 and problem["code"] == "too-many-connections"
        other = httpx.get(f"{guarded_server.url}/healthz", timeout=10)  # another client is served
        assert other.status_code == 200
    finally:
        for sock in held:
            sock.close()


def test_json_over_its_limit_is_refused_before_the_body_is_read(guarded_server):
    """main: the JSON limit was applied only while reading, so this waited for a body."""
    with connect(guarded_server) as sock:
        sock.sendall(request_head("/v1/score", 2 * 2**20, content_type="application/json"))
        status, problem = read_response(sock)
    assert status == 413 and problem["code"] == "body-too-large", problem


# -- 5. item errors name no server path --------------------------------------------------------
def test_item_errors_carry_no_server_path(redis_url, fresh_redis, tmp_path):
    from service.jobs.blobs import DirectoryBlobStore
    from service.jobs.records import ItemSpec, JobRecords
    from service.jobs.stats import StatsWriter
    from service.jobs.tasks import WorkerContext, score_item
    from service.pipeline import RewardPipeline

    # A real backend: the pipeline builds its geometry model before decoding (the oracle one
    # of the service tests needs per-request arrays this item does not have).
    settings = make_settings(redis_url, tmp_path).model_copy(update={"geometry_backend": "classical"})
    store = DirectoryBlobStore(settings.resolved_blob_dir())
    writer = store.writer("file", suffix=".mp4")
    writer.write(b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 8)  # an mp4 that is not one
    item = ItemSpec(video=writer.commit())
    context = WorkerContext(settings=settings, connection=fresh_redis,
                            records=JobRecords(fresh_redis, result_ttl_s=60), store=store,
                            pipeline=RewardPipeline(settings), stats=StatsWriter(fresh_redis),
                            name="test", fingerprint="f" * 64, geometry_backend="classical")  # fmt: skip
    outcome = json.loads(score_item(context, "job", 0, item))
    detail = outcome["error"]["detail"]
    assert outcome["status"] == "failed" and outcome["error"]["code"] == "invalid_input"
    assert "video" in detail  # still says what is wrong
    assert str(tmp_path) not in detail and item.video.blake3 not in detail and "/" not in detail, detail


# -- 6, 7. bad JSON and the schema -------------------------------------------------------------
@pytest.fixture(scope="module")
def plain_server(redis_url, fresh_redis, tmp_path_factory):
    settings = make_settings(redis_url, tmp_path_factory.mktemp("plain"))
    server = ApiServer(settings).start()
    yield server
    server.stop()


@pytest.mark.parametrize("header, reason", [
    (b'{"inputs": [], "id": "\\ud800"}', "surrogate"),
    (b"[" * 100_000 + b"]" * 100_000, "nested deeper than"),
    (b'{"inputs": [], "id": "\xff\xfe"}', "not valid UTF-8"),
    (b'{"inputs": [', "is Inference-Header-Content-Length right?"),
])  # fmt: skip
def test_bad_json_gets_the_right_reason(plain_server, header, reason):
    response = httpx.post(f"{plain_server.url}/v1/score", content=header, timeout=30, headers={
        **auth(), "Content-Type": "application/octet-stream",
        "Inference-Header-Content-Length": str(len(header))})  # fmt: skip
    assert response.status_code == 400 and response.json()["code"] == "body-framing"
    assert reason in response.json()["detail"], response.json()


def test_json_body_reasons(plain_server):
    response = httpx.post(f"{plain_server.url}/v1/score", content=b'{"items": [{"id": "\\udc00"}]}',
                          headers={**auth(), "Content-Type": "application/json"}, timeout=30)  # fmt: skip
    assert response.status_code == 400 and "surrogate" in response.json()["detail"]


def test_schema_refuses_an_empty_shape_like_the_server(plain_server):
    schema = httpx.get(f"{plain_server.url}/openapi.json", timeout=30).json()["components"]["schemas"]
    assert schema["Base64Tensor"]["properties"]["shape"]["minItems"] == 1  # (the binary header has no schema)
    header = json.dumps({"inputs": [{"name": "video", "datatype": "UINT8", "shape": []}]}).encode()
    response = httpx.post(f"{plain_server.url}/v1/score", content=header, timeout=30, headers={
        **auth(), "Content-Type": "application/octet-stream",
        "Inference-Header-Content-Length": str(len(header))})  # fmt: skip
    assert response.status_code == 422


# -- 9. private files, refused uploads removed -------------------------------------------------
def blob_files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file())


def test_uploads_are_private_and_refused_ones_removed_at_once(plain_server):
    settings = plain_server.app.state.services.settings
    root = settings.resolved_blob_dir()
    client = httpx.Client(base_url=plain_server.url, headers=auth(), timeout=30)
    headers, body = binary_request()
    accepted = client.post("/v1/score", headers={**headers, "Idempotency-Key": "k1"}, content=body)
    assert accepted.status_code == 202
    stored = blob_files(root)
    assert stored
    for path in [root, *root.rglob("*")]:
        mode = stat.S_IMODE(path.stat().st_mode)
        assert mode == (0o700 if path.is_dir() else 0o600), (path, oct(mode))
    # Other content under the same key: refused after its tensors were stored.
    other = clip_arrays("push_in", 6, 36, 64, seed=7)
    headers, body = binary_request([other[0]], [other[1]])
    refused = client.post("/v1/score", headers={**headers, "Idempotency-Key": "k1"}, content=body)
    assert refused.status_code == 422 and refused.json()["code"] == "idempotency-key-reused"
    assert blob_files(root) == stored  # nothing of the refused request is left


def test_report_pages_are_private(tmp_path):
    from service.jobs.reports import ReportStore

    path = ReportStore(tmp_path / "blobs").write("job1", 0, "<html></html>")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert stat.S_IMODE(path.parent.parent.stat().st_mode) == 0o700

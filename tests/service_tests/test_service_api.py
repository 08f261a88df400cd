"""Submit -> result through real HTTP, a real Redis and a real worker process: the results are
exactly those of the in-process pipeline, in every upload format."""

from __future__ import annotations

import io
import json
import time

import av
import httpx
import numpy as np
import pytest
from rq.suspension import resume, suspend

from service.api.encode import encode_binary, encode_json, encode_npy, encode_safetensors
from service.schemas import ScoreOptions

from .conftest import (
    OTHER_KEY,
    ApiServer,
    WorkerProcess,
    auth,
    body_bytes,
    clip_arrays,
    make_settings,
    without_timings,
)

OPTIONS = {"long_side": 64, "max_frames": 6}
SHAPE = (6, 36, 64)  # frames, height, width


@pytest.fixture(scope="module")
def service(redis_url, fresh_redis, tmp_path_factory):
    root = tmp_path_factory.mktemp("api")
    settings = make_settings(redis_url, root)
    server = ApiServer(settings).start()
    worker = WorkerProcess(settings, root / "worker.log").start().wait_warm(fresh_redis)
    client = httpx.Client(base_url=server.url, headers=auth(), timeout=120)
    yield settings, server, client, fresh_redis
    client.close()
    worker.stop()
    server.stop()


@pytest.fixture(scope="module")
def pipeline(service):
    from service.pipeline import RewardPipeline

    return RewardPipeline(service[0])


@pytest.fixture(scope="module")
def clips():
    motions = ["orbit", "push_in", "move_right", "static"]
    return [clip_arrays(motions[i % 4], *SHAPE, seed=i + 1) for i in range(8)]


def in_process(pipeline, video, geometry, prompt=None, options=OPTIONS) -> dict:
    result = pipeline(video, prompt=prompt, geometry_arrays=geometry, options=ScoreOptions(**options))
    return without_timings(json.loads(result.model_dump_json()))


def post(client, encoded, wait: float = 60, **headers):
    request_headers, parts = encoded
    return client.post(f"/v1/score?wait={wait}", headers={**request_headers, **headers},
                       content=body_bytes(parts))  # fmt: skip


def test_one_video_matches_in_process(service, pipeline, clips):
    _, _, client, _ = service
    video, geometry = clips[0]
    response = post(client, encode_binary([video], geometry=[geometry], options=OPTIONS,
                                          items=[{"prompt": "The camera orbits left.", "id": "v0"}]))  # fmt: skip
    assert response.status_code == 200, response.text
    job = response.json()
    assert job["status"] == "finished" and job["progress"] == {"done": 1, "total": 1}
    assert response.headers["location"] == f"/v1/jobs/{job['id']}"
    item = job["items"][0]
    assert item["status"] == "ok" and item["id"] == "v0" and item["error"] is None
    assert set(item["result"]["timings_ms"]) >= {"decode", "geometry", "gaussians", "render", "terms"}
    expected = in_process(pipeline, video, geometry, prompt="The camera orbits left.")
    assert without_timings(item["result"]) == expected
    assert expected["terms"]["trajectory"]["status"] == "ok"


def test_group_of_eight_matches_in_process(service, pipeline, clips):
    _, _, client, _ = service
    videos = np.stack([video for video, _ in clips])  # a GRPO group: one [8,T,H,W,3] tensor
    prompts = ["orbit left", "push in", "move right", None] * 2
    items = [{"prompt": p, "id": f"g{i}"} for i, p in enumerate(prompts)]
    items[3]["options"] = {"terms": ["reconstruction"]}  # per-item options override the request's
    response = post(client, encode_binary(videos, geometry=[g for _, g in clips], items=items,
                                          options=OPTIONS))  # fmt: skip
    assert response.status_code == 200, response.text
    job = response.json()
    assert [item["id"] for item in job["items"]] == [f"g{i}" for i in range(8)]
    for index, item in enumerate(job["items"]):
        options = {**OPTIONS, **(items[index].get("options") or {})}
        expected = in_process(pipeline, *clips[index], prompt=prompts[index], options=options)
        assert item["status"] == "ok"
        assert without_timings(item["result"]) == expected, f"item {index}"
    assert set(job["items"][3]["result"]["terms"]) == {"reconstruction"}


def test_every_tensor_format_stores_the_same_bytes(service, clips):
    """The same video and fields through binary, .npy, safetensors and JSON: the same request
    fingerprint (hence the same job), so every format delivered bit-identical tensors."""
    _, _, client, _ = service
    video, geometry = clips[4]
    items = [{"prompt": "push in"}]
    first = post(client, encode_binary([video], items=items, options=OPTIONS), wait=0).json()
    assert first["deduplicated"] is False
    for encoded in (encode_npy(video, items=items, options=OPTIONS),
                    encode_safetensors([video], items=items, options=OPTIONS),
                    encode_json([video], items=items, options=OPTIONS),
                    encode_binary(video[None], items=items, options=OPTIONS)):  # fmt: skip
        again = post(client, encoded, wait=0)
        assert again.status_code in (200, 202), again.text
        assert again.json()["id"] == first["id"] and again.json()["deduplicated"] is True
    # Without geometry, this oracle-backed worker cannot score: the item fails, with a reason.
    done = client.get(f"/v1/jobs/{first['id']}?wait=60").json()
    assert done["status"] == "finished"
    assert done["items"][0]["status"] == "failed"
    assert done["items"][0]["error"]["code"] == "invalid_input"
    assert "oracle" in done["items"][0]["error"]["detail"]


def _mp4(video: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    with av.open(buffer, "w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=8)
        stream.width, stream.height, stream.pix_fmt = video.shape[2], video.shape[1], "yuv444p"
        stream.options = {"qp": "0"}
        for frame in video:
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return buffer.getvalue()


def _npy(array) -> tuple[str, bytes, str]:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return ("g.npy", buffer.getvalue(), "application/x-npy")


def test_multipart_video_file_is_decoded_by_the_worker(service, pipeline, clips, tmp_path):
    _, _, client, _ = service
    video, geometry = clips[1]
    data = _mp4(video)
    files = [("video", ("clip.mp4", data, "video/mp4"))]
    files += [(name, _npy(geometry[name])) for name in ("depth", "world_to_camera", "intrinsics")]
    fields = {"request": json.dumps({"items": [{"prompt": "push in"}], "options": OPTIONS})}
    response = client.post("/v1/score?wait=60", files=files, data=fields)
    assert response.status_code == 200, response.text
    item = response.json()["items"][0]
    assert item["status"] == "ok", item
    (tmp_path / "clip.mp4").write_bytes(data)
    expected = in_process(pipeline, str(tmp_path / "clip.mp4"), geometry, prompt="push in")
    assert without_timings(item["result"]) == expected


def test_cache_hit_returns_the_same_result(service, clips):
    _, _, client, _ = service
    video, geometry = clips[2]
    first = post(client, encode_binary([video], geometry=[geometry], options=OPTIONS,
                                       items=[{"id": "first"}])).json()  # fmt: skip
    second = post(client, encode_binary([video], geometry=[geometry], options=OPTIONS,
                                        items=[{"id": "second"}])).json()  # fmt: skip
    assert second["id"] != first["id"]  # another request (another tag), a new job...
    assert first["items"][0]["cached"] is False and second["items"][0]["cached"] is True
    assert second["items"][0]["result"] == first["items"][0]["result"]  # ...served from the cache


def test_idempotency_key(service, clips):
    _, _, client, _ = service
    video, geometry = clips[3]
    encoded = encode_binary([video], geometry=[geometry], options=OPTIONS)
    first = post(client, encoded, wait=0, **{"Idempotency-Key": "train-step-7-rank-3"})
    again = post(client, encoded, wait=0, **{"Idempotency-Key": "train-step-7-rank-3"})
    assert first.status_code in (200, 202) and again.json()["id"] == first.json()["id"]
    assert again.json()["deduplicated"] is True
    other = encode_binary([video[:, ::-1].copy()], geometry=[geometry], options=OPTIONS)
    reused = post(client, other, wait=0, **{"Idempotency-Key": "train-step-7-rank-3"})
    assert reused.status_code == 422 and reused.json()["code"] == "idempotency-key-reused"


def test_long_poll_and_other_keys_cannot_see_the_job(service, clips):
    _, server, client, _ = service
    video, geometry = clips[5]
    submitted = post(client, encode_binary([video], geometry=[geometry], options=OPTIONS,
                                           items=[{"id": "poll"}]), wait=0)  # fmt: skip
    assert submitted.status_code in (200, 202)
    job_id = submitted.json()["id"]
    started = time.monotonic()
    done = client.get(f"/v1/jobs/{job_id}?wait=60")
    assert done.status_code == 200 and done.json()["status"] == "finished"
    assert time.monotonic() - started < 30
    stranger = httpx.get(f"{server.url}/v1/jobs/{job_id}", headers=auth(OTHER_KEY))
    assert stranger.status_code == 404 and stranger.json()["code"] == "not-found"


def test_failed_item_is_reported_per_item(service, clips):
    """A group where one item cannot be scored: the others are scored, the bad one is masked."""
    _, _, client, _ = service
    videos = [clips[6][0], clips[7][0]]
    items = [{"id": "good"}, {"id": "bad", "options": {"frame_stride": 1000}}]  # 1 frame left
    job = post(client, encode_binary(videos, geometry=[clips[6][1], clips[7][1]], items=items,
                                     options=OPTIONS)).json()  # fmt: skip
    assert job["status"] == "finished"
    good, bad = job["items"]
    assert good["status"] == "ok" and good["result"]["total"] is not None
    assert bad["status"] == "failed" and bad["result"] is None
    assert bad["error"]["code"] == "invalid_input" and "frame" in bad["error"]["detail"]


def test_cancel_a_queued_job(service, clips):
    _, _, client, connection = service
    video, geometry = clips[0]
    suspend(connection)  # workers take nothing while suspended
    try:
        job = post(client, encode_binary([video], geometry=[geometry], options=OPTIONS,
                                         items=[{"id": "to-cancel"}]), wait=0).json()  # fmt: skip
        assert job["status"] == "queued"
        cancelled = client.delete(f"/v1/jobs/{job['id']}")
        assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
        assert cancelled.json()["items"][0]["status"] == "cancelled"
        assert client.delete(f"/v1/jobs/{job['id']}").status_code == 200  # idempotent
    finally:
        resume(connection)
    time.sleep(1.5)  # the worker dequeues it and drops it
    assert client.get(f"/v1/jobs/{job['id']}").json()["status"] == "cancelled"
    finished = post(client, encode_binary([video], geometry=[geometry], options=OPTIONS,
                                          items=[{"id": "done"}])).json()  # fmt: skip
    conflict = client.delete(f"/v1/jobs/{finished['id']}")
    assert conflict.status_code == 409 and conflict.json()["code"] == "job-already-ended"


def test_health_ready_info_and_metrics(service):
    settings, server, client, _ = service
    assert httpx.get(f"{server.url}/healthz").json() == {"status": "ok"}  # no key needed
    ready = httpx.get(f"{server.url}/readyz")
    assert ready.status_code == 200 and ready.json() == {"status": "ready", "workers": 1}
    info = client.get("/v1/info").json()
    assert info["scoring"]["long_side"] == settings.long_side and info["auth"] == "bearer"
    assert info["workers"][0]["geometry_backend"] == "oracle"
    assert info["limits"]["max_items_per_request"] == settings.max_items_per_request
    assert httpx.get(f"{server.url}/metrics").status_code == 401
    text = client.get("/metrics").text
    for name in ("reward3d_http_request_duration_seconds_bucket", "reward3d_queue_depth",
                 "reward3d_oldest_unfinished_job_age_seconds", 'reward3d_stage_seconds_bucket{le="+Inf",stage="render"}',
                 "reward3d_queue_wait_seconds_count", "reward3d_cache_hits_total",
                 'reward3d_item_failures_total{reason="invalid_input"}', "reward3d_workers_alive 1.0",
                 'reward3d_upload_bytes_total{format="binary"}'):  # fmt: skip
        assert name in text, name

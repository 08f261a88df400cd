"""Bad input: every case gets its documented status and problem code (docs/service.md,
"Errors"), never a 500 or a traceback, and the server keeps serving."""

from __future__ import annotations

import io
import json
import struct

import httpx
import numpy as np
import pytest

from service.api.encode import encode_binary, encode_json, encode_safetensors

from .conftest import API_KEY, OTHER_KEY, ApiServer, auth, body_bytes, clip_arrays, make_settings

VIDEO, GEOMETRY = clip_arrays("orbit", 4, 16, 24)


@pytest.fixture(scope="module")
def server(redis_url, fresh_redis, tmp_path_factory):
    root = tmp_path_factory.mktemp("bad")
    settings = make_settings(redis_url, root, max_body_mb=2, max_json_mb=0.5, max_input_frames=64,
                             max_input_side=512, max_items_per_request=4, max_queued_jobs=4,
                             max_inflight_per_key=3)  # fmt: skip
    server = ApiServer(settings).start()  # no worker: accepted jobs stay queued
    yield server
    server.stop()


def binary(header: dict, tensors: list[bytes], **extra_headers) -> tuple[dict, bytes]:
    head = json.dumps(header).encode()
    headers = {"Content-Type": "application/octet-stream",
               "Inference-Header-Content-Length": str(len(head)), **extra_headers}  # fmt: skip
    return headers, head + b"".join(tensors)


def tensor(name, datatype, shape, **parameters):
    entry = {"name": name, "datatype": datatype, "shape": list(shape)}
    if parameters:
        entry["parameters"] = parameters
    return entry


def valid_binary(video=VIDEO, geometry=GEOMETRY, **fields):
    headers, parts = encode_binary([video], geometry=[geometry] if geometry else None, **fields)
    return headers, body_bytes(parts)


def with_header(fn, geometry=GEOMETRY):
    """Rebuild a valid binary request after editing its JSON header."""
    headers, body = valid_binary(geometry=geometry)
    length = int(headers["Inference-Header-Content-Length"])
    header = json.loads(body[:length])
    fn(header)
    new_headers, new_body = binary(header, [body[length:]])
    return new_headers, new_body


def npy_bytes(array, fortran=False) -> bytes:
    """A client-side .npy file (allow_pickle only to *build* the object-dtype case: the server
    reads the header and refuses it without unpickling anything)."""
    buffer = io.BytesIO()
    np.save(buffer, np.asfortranarray(array) if fortran else array, allow_pickle=True)
    return buffer.getvalue()


def chunked(body: bytes):
    def generate():
        for start in range(0, len(body), 4096):
            yield body[start : start + 4096]

    return generate()


# (id, how to send it, expected status, expected problem code)
CASES = [
    # authentication
    ("no-api-key", lambda c: c.post("/v1/score", headers={"Authorization": ""}, content=b"x"), 401, "unauthorized"),
    ("wrong-api-key", lambda c: c.post("/v1/score", headers=auth("wrong-key-0123456789"), content=b"x"), 401, "unauthorized"),
    ("basic-auth", lambda c: c.get("/v1/info", headers={"Authorization": "Basic dXNlcjpwYXNz"}), 401, "unauthorized"),
    ("no-key-on-jobs", lambda c: c.get("/v1/jobs/abc", headers={"Authorization": ""}), 401, "unauthorized"),
    # binary framing
    ("binary-without-header-length", lambda c: c.post("/v1/score", headers={"Content-Type": "application/octet-stream"}, content=b"\x00" * 64), 400, "body-framing"),
    ("header-length-not-integer", lambda c: c.post("/v1/score", headers={**valid_binary()[0], "Inference-Header-Content-Length": "ten"}, content=valid_binary()[1]), 400, "body-framing"),
    ("header-length-beyond-body", lambda c: c.post("/v1/score", headers={**valid_binary()[0], "Inference-Header-Content-Length": "999999"}, content=valid_binary()[1]), 400, "body-framing"),
    ("header-length-too-short", lambda c: c.post("/v1/score", headers={**valid_binary()[0], "Inference-Header-Content-Length": "20"}, content=valid_binary()[1]), 400, "body-framing"),
    ("header-length-too-long", lambda c: c.post("/v1/score", headers={**valid_binary()[0], "Inference-Header-Content-Length": str(int(valid_binary()[0]["Inference-Header-Content-Length"]) + 7)}, content=valid_binary()[1]), 400, "body-framing"),
    ("truncated-body-chunked", lambda c: c.post("/v1/score", headers={k: v for k, v in valid_binary()[0].items() if k != "Content-Length"}, content=chunked(valid_binary()[1][:-100])), 400, "body-framing"),
    ("truncated-body-content-length", lambda c: c.post("/v1/score", headers={k: v for k, v in valid_binary()[0].items() if k != "Content-Length"}, content=valid_binary()[1][:-100]), 400, "body-framing"),
    ("extra-bytes-after-tensors", lambda c: c.post("/v1/score", headers={k: v for k, v in valid_binary()[0].items() if k != "Content-Length"}, content=valid_binary()[1] + b"\x00" * 10), 400, "body-framing"),
    ("binary-data-size-lie", lambda c: send(c, with_header(lambda h: h["inputs"][0]["parameters"].update(binary_data_size=5))), 400, "body-framing"),
    ("shape-lie", lambda c: send(c, with_header(lambda h: h["inputs"][0].update(shape=[8, 16, 24, 3], parameters={}), geometry=None)), 400, "body-framing"),
    ("not-json-header", lambda c: send(c, binary_raw(b"{not json}")), 400, "body-framing"),
    ("empty-body", lambda c: c.post("/v1/score", headers={"Content-Type": "application/octet-stream"}, content=b""), 400, "body-framing"),
    # tensors
    ("dtype-not-accepted", lambda c: send(c, binary({"inputs": [tensor("video", "INT32", [1, 4, 16, 24, 3])]}, [b"\x00" * 4608 * 4])), 422, "invalid-tensor"),
    ("video-float64", lambda c: send(c, binary({"inputs": [tensor("video.0", "FP64", [4, 16, 24, 3])]}, [np.zeros((4, 16, 24, 3)).tobytes()])), 422, "invalid-tensor"),
    ("video-rank-3", lambda c: send(c, binary({"inputs": [tensor("video.0", "UINT8", [4, 16, 24])]}, [b"\x00" * 1536])), 422, "invalid-tensor"),
    ("no-channel-axis", lambda c: send(c, binary({"inputs": [tensor("video.0", "UINT8", [4, 16, 24, 5])]}, [b"\x00" * 7680])), 422, "invalid-tensor"),
    ("zero-frames", lambda c: send(c, binary({"inputs": [tensor("video.0", "UINT8", [0, 16, 24, 3])]}, [])), 422, "video-limits"),
    ("one-frame", lambda c: send(c, binary({"inputs": [tensor("video.0", "UINT8", [1, 16, 24, 3])]}, [b"\x00" * 1152])), 422, "video-limits"),
    ("huge-dimensions-declared", lambda c: send(c, binary({"inputs": [tensor("video.0", "UINT8", [2, 100000, 100000, 3])]}, [])), 422, "video-limits"),
    ("too-many-frames", lambda c: send(c, binary({"inputs": [tensor("video.0", "UINT8", [65, 16, 24, 3])]}, [])), 422, "video-limits"),
    ("too-many-items", lambda c: send(c, binary({"inputs": [tensor("video", "UINT8", [5, 4, 16, 24, 3])]}, [])), 422, "video-limits"),
    ("nan-in-video", lambda c: send(c, valid_binary(video=_with_nan(VIDEO), geometry=None)), 422, "invalid-tensor"),
    ("float-video-out-of-range", lambda c: send(c, valid_binary(video=VIDEO.astype(np.float32), geometry=None)), 422, "invalid-tensor"),
    ("unknown-tensor-name", lambda c: send(c, with_header(lambda h: h["inputs"][0].update(name="pixels.0"))), 422, "invalid-tensor"),
    ("duplicate-tensor", lambda c: send(c, binary({"inputs": [tensor("video.0", "UINT8", [2, 8, 8, 3])] * 2}, [b"\x00" * 384] * 2)), 422, "invalid-tensor"),
    ("item-index-gap", lambda c: send(c, binary({"inputs": [tensor("video.1", "UINT8", [2, 8, 8, 3])]}, [b"\x00" * 384])), 422, "invalid-tensor"),
    ("partial-geometry", lambda c: send(c, valid_binary(geometry={"depth": GEOMETRY["depth"]})), 422, "invalid-tensor"),
    ("pose-shape-mismatch", lambda c: send(c, valid_binary(geometry={**GEOMETRY, "world_to_camera": GEOMETRY["world_to_camera"][:3]})), 422, "invalid-tensor"),
    ("negative-depth", lambda c: send(c, valid_binary(geometry={**GEOMETRY, "depth": -GEOMETRY["depth"]})), 422, "invalid-tensor"),
    ("nan-pose", lambda c: send(c, valid_binary(geometry={**GEOMETRY, "world_to_camera": GEOMETRY["world_to_camera"] * np.nan})), 422, "invalid-tensor"),
    # request fields
    ("items-count-mismatch", lambda c: send(c, valid_binary(items=[{}, {}])), 422, "invalid-request"),
    ("unknown-header-field", lambda c: send(c, with_header(lambda h: h.update(colour="blue"))), 422, "invalid-request"),
    ("unknown-option", lambda c: send(c, valid_binary(options={"fast": True})), 422, "invalid-request"),
    ("unknown-term", lambda c: send(c, valid_binary(options={"terms": ["beauty"]})), 422, "invalid-request"),
    ("one-pose-trajectory", lambda c: send(c, valid_binary(items=[{"trajectory": {"world_to_camera": [np.eye(4).tolist()]}}])), 422, "invalid-request"),
    ("prompt-not-string", lambda c: send(c, valid_binary(items=[{"prompt": 7}])), 422, "invalid-request"),
    ("bad-idempotency-key", lambda c: c.post("/v1/score", headers={**valid_binary()[0], "Idempotency-Key": "no spaces allowed"}, content=valid_binary()[1]), 422, "invalid-request"),
    ("negative-wait", lambda c: c.post("/v1/score?wait=-1", headers=valid_binary()[0], content=valid_binary()[1]), 422, "invalid-request"),
    # other formats
    ("unsupported-content-type", lambda c: c.post("/v1/score", headers={"Content-Type": "text/plain"}, content=b"hello"), 415, "unsupported-media-type"),
    ("json-syntax-error", lambda c: c.post("/v1/score", headers={"Content-Type": "application/json"}, content=b"{\"items\": ["), 400, "body-framing"),
    ("json-unknown-field", lambda c: send(c, _json(lambda b: b.update(extra=1))), 422, "invalid-request"),
    ("json-bad-base64", lambda c: send(c, _json(lambda b: b["items"][0]["video"].update(b64="@@not base64@@"))), 422, "invalid-tensor"),
    ("json-size-lie", lambda c: send(c, _json(lambda b: b["items"][0]["video"].update(shape=[4, 16, 24, 4]))), 422, "invalid-tensor"),
    ("json-too-large", lambda c: c.post("/v1/score", headers={"Content-Type": "application/json"}, content=b" " * (600 * 1024)), 413, "body-too-large"),
    ("npy-bad-magic", lambda c: c.post("/v1/score", headers={"Content-Type": "application/x-npy"}, content=b"NUMPY" + b"\x00" * 100), 400, "body-framing"),
    ("npy-object-dtype", lambda c: c.post("/v1/score", headers={"Content-Type": "application/x-npy"}, content=npy_bytes(np.array([[1, "a"]], dtype=object))), 422, "invalid-tensor"),
    ("npy-fortran-order", lambda c: c.post("/v1/score", headers={"Content-Type": "application/x-npy"}, content=npy_bytes(VIDEO, fortran=True)), 422, "invalid-tensor"),
    ("npy-wrong-rank", lambda c: c.post("/v1/score", headers={"Content-Type": "application/x-npy"}, content=npy_bytes(VIDEO[0])), 422, "invalid-tensor"),
    ("npy-bad-request-header", lambda c: c.post("/v1/score", headers={"Content-Type": "application/x-npy", "Reward3D-Request": "{\"items\": 3}"}, content=npy_bytes(VIDEO)), 422, "invalid-request"),
    ("safetensors-hole", lambda c: send(c, _safetensors_with_hole()), 400, "body-framing"),
    ("multipart-not-a-video", lambda c: c.post("/v1/score", files=[("video", ("a.mp4", b"this is text, not a video", "video/mp4"))]), 422, "invalid-video-file"),
    ("multipart-png-image", lambda c: c.post("/v1/score", files=[("video", ("a.png", _png(), "image/png"))]), 422, "video-limits"),
    ("multipart-unknown-field", lambda c: c.post("/v1/score", files=[("audio", ("a.wav", b"RIFF", "audio/wav"))]), 422, "invalid-request"),
    ("multipart-no-video", lambda c: c.post("/v1/score", data={"request": "{}"}, files=[("depth", ("d.npy", b"x", "application/x-npy"))]), 422, "invalid-request"),
    # size, routes
    ("oversized-body", lambda c: c.post("/v1/score", headers={"Content-Type": "application/octet-stream", "Inference-Header-Content-Length": "2"}, content=b"{}" + b"\x00" * (3 * 2**20)), 413, "body-too-large"),
    ("unknown-job", lambda c: c.get("/v1/jobs/0123456789abcdef0123456789abcdef"), 404, "not-found"),
    ("unknown-route", lambda c: c.get("/v2/score"), 404, "not-found"),
    ("wrong-method", lambda c: c.put("/v1/score", content=b"x"), 405, "method-not-allowed"),
]


def send(client, pair, path: str = "/v1/score"):
    headers, body = pair
    return client.post(path, headers=headers, content=body)


def binary_raw(head: bytes):
    return ({"Content-Type": "application/octet-stream", "Inference-Header-Content-Length": str(len(head))},
            head + b"\x00" * 10)  # fmt: skip


def _with_nan(video):
    values = video.astype(np.float32) / 255
    values[1, 2, 3, 0] = np.nan
    return values


def _json(edit):
    headers, body = encode_json([VIDEO], geometry=[GEOMETRY])
    payload = json.loads(body)
    edit(payload)
    return headers, json.dumps(payload).encode()


def _safetensors_with_hole():
    headers, parts = encode_safetensors([VIDEO])
    body = body_bytes(parts)
    (length,) = struct.unpack("<Q", body[:8])
    header = json.loads(body[8 : 8 + length])
    begin, end = header["video.0"]["data_offsets"]
    header["video.0"]["data_offsets"] = [begin + 8, end + 8]
    head = json.dumps(header).encode()
    headers = {"Content-Type": headers["Content-Type"]}
    return headers, len(head).to_bytes(8, "little") + head + b"\x00" * 8 + body[8 + length :]


def _png() -> bytes:
    import cv2

    ok, encoded = cv2.imencode(".png", VIDEO[0])
    return encoded.tobytes()


@pytest.mark.parametrize("case", CASES, ids=[case[0] for case in CASES])
def test_bad_input(server, case):
    name, make, status, code = case
    with httpx.Client(base_url=server.url, headers=auth(), timeout=30) as client:
        response = make(client)
        assert response.status_code == status, (name, response.status_code, response.text[:300])
        assert response.headers["content-type"].startswith("application/problem+json")
        problem = response.json()
        assert problem["code"] == code and problem["status"] == status
        assert problem["type"] == f"urn:reward3d:problem:{code}" and problem["detail"]
        assert "Traceback" not in response.text and 'File "' not in response.text
        # ...and the server keeps serving
        assert client.get("/healthz").status_code == 200


def test_there_are_at_least_thirty_cases():
    assert len(CASES) >= 30 and len({case[0] for case in CASES}) == len(CASES)


def test_limits_answer_429_with_retry_after_and_valid_requests_still_work(server):
    def request(seed):
        video, geometry = clip_arrays("orbit", 4, 16, 24, seed=seed)
        return valid_binary(video=video, geometry=geometry)

    with httpx.Client(base_url=server.url, headers=auth(OTHER_KEY), timeout=30) as client:
        accepted = [send(client, request(seed)) for seed in (1, 2, 3)]
        assert [r.status_code for r in accepted] == [202] * 3, accepted[-1].text
        limited = send(client, request(4))  # a 4th unfinished job for this key
        assert limited.status_code == 429 and limited.json()["code"] == "too-many-in-flight"
        assert int(limited.headers["Retry-After"]) >= 1
        assert client.delete(f"/v1/jobs/{accepted[0].json()['id']}").status_code == 200
        assert send(client, request(4)).status_code == 202  # a slot was freed
    with httpx.Client(base_url=server.url, headers=auth(API_KEY), timeout=30) as client:
        assert send(client, request(5)).status_code == 202  # 4 unfinished jobs in all
        full = send(client, request(6))
        assert full.status_code == 429 and full.json()["code"] == "queue-full"
        assert int(full.headers["Retry-After"]) >= 1
        assert client.get("/healthz").status_code == 200


def test_video_file_on_an_api_without_pyav_is_a_415_not_a_500(monkeypatch, tmp_path):
    # The slim API image may be built without PyAV; encoded files must then be refused clearly.
    import sys

    from service.api.errors import Problem
    from service.api.ingest.tensors import Limits
    from service.api.ingest.video_files import probe_video

    monkeypatch.setitem(sys.modules, "av", None)  # `import av` now raises ImportError
    path = tmp_path / "clip.mp4"
    path.write_bytes(b"\x00" * 64)
    with pytest.raises(Problem) as raised:
        probe_video(path, Limits(max_items=1, max_frames=64, max_side=512, max_body_bytes=1 << 20), "video[0]")
    assert raised.value.code == "unsupported-media-type" and raised.value.status == 415
    assert "PyAV" in raised.value.detail

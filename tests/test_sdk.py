"""The SDK's pieces that need no server (trainer_client.wire, .schemas, .client, .flow_grpo):
bodies byte-identical to the service's reference encoder, result models identical to the
service's, video conversion and client-side sampling/resizing as the service does them,
retry waits, failure masks, the flow_grpo adapter. The SDK against a real server (faults,
deadlines, idempotency, the trainer end to end) is tests/service_tests/test_sdk_service.py."""

import json
import math
import subprocess
import sys
import time
from email.utils import formatdate
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from service.api import encode as reference
from trainer_client.client import (
    AsyncRewardClient,
    DeadlineExceeded,
    ItemFailure,
    RequestRejected,
    RetryPolicy,
    Scores,
    parse_retry_after,
)
from trainer_client.schemas import JobPublic
from trainer_client.wire import CHUNK_BYTES, area_resize, body_chunks, encode_binary, sample_indices, to_uint8_videos

REPO = Path(__file__).resolve().parents[1]


def joined(parts) -> bytes:
    return b"".join(bytes(p) for p in parts)


# -- one source of truth for the wire format and the result schema ----------------------------
def test_binary_bodies_are_byte_identical_to_the_service_reference_encoder():
    rng = np.random.default_rng(0)
    batch = rng.integers(0, 256, (3, 4, 10, 12, 3), dtype=np.uint8)
    uneven = [rng.integers(0, 256, (4, 10, 12, 3), dtype=np.uint8), rng.random((5, 8, 16, 3), dtype=np.float32)]
    geometry = [{"depth": rng.random((4, 5, 6), dtype=np.float32), "world_to_camera": np.tile(np.eye(4), (4, 1, 1)),
                 "intrinsics": np.eye(3)}, None]  # fmt: skip
    fields = {"items": [{"prompt": "orbit left", "id": "a"}, {}], "options": {"terms": ["quality"], "long_side": 64}}
    cases = [
        (batch, {}),
        (list(batch), {"items": [{"prompt": "p"}] * 3}),
        (uneven, {"geometry": geometry, **fields}),
        ((uneven[0] / 255).astype(">f4"), {}),  # one video, big-endian: sent little-endian
    ]
    for videos, kwargs in cases:
        ours = encode_binary(videos, **kwargs)
        headers, parts = reference.encode_binary(videos, **kwargs)
        assert ours.headers == headers
        assert joined(ours.parts) == joined(parts)
        chunks = list(ours.chunks())
        assert joined(chunks) == joined(parts) and max(len(c) for c in chunks) <= CHUNK_BYTES
        assert ours.size == int(headers["Content-Length"])
    assert joined(body_chunks([b"x" * 10, memoryview(np.arange(4.0))], size=3)) == b"x" * 10 + np.arange(4.0).tobytes()


def test_result_models_are_the_services():
    """The SDK keeps its own copies (it must not import service): they must not drift."""
    from service.api.schemas import JobPublic as ServiceJob
    from service.schemas import RewardResult as ServiceResult
    from trainer_client.schemas import RewardResult

    assert RewardResult.model_json_schema() == ServiceResult.model_json_schema()

    def types_only(schema):  # descriptions may be worded differently; names and types may not
        if isinstance(schema, dict):
            return {k: types_only(v) for k, v in schema.items() if k != "description"}
        return [types_only(v) for v in schema] if isinstance(schema, list) else schema

    assert types_only(JobPublic.model_json_schema()) == types_only(ServiceJob.model_json_schema())


# -- videos in --------------------------------------------------------------------------------
def test_videos_are_converted_to_uint8_channels_last_copies():
    rng = np.random.default_rng(1)
    floats = rng.random((2, 5, 3, 6, 7)).astype(np.float32)  # [B,T,C,H,W] in [0,1]
    expected = np.rint(floats.transpose(0, 1, 3, 4, 2) * 255).astype(np.uint8)
    for videos in (floats, torch.from_numpy(floats), list(torch.from_numpy(floats))):
        arrays, kept = to_uint8_videos(videos)
        assert kept == [None, None] and all(a.flags.c_contiguous for a in arrays)
        assert np.array_equal(np.stack(arrays), expected)
    bf16, _ = to_uint8_videos(torch.from_numpy(floats).to(torch.bfloat16))
    assert np.abs(np.stack(bf16).astype(int) - expected).max() <= 2  # bf16 has 8 bits of mantissa

    uint8 = expected.copy()
    arrays, _ = to_uint8_videos(uint8)
    tensors, _ = to_uint8_videos(torch.from_numpy(uint8))
    uint8[:] = 0  # the caller reuses its buffers: the SDK's copies do not change
    assert np.array_equal(np.stack(arrays), expected) and np.array_equal(np.stack(tensors), expected)

    grey, _ = to_uint8_videos(np.full((3, 8, 9, 1), 7, np.uint8))  # one video, one channel
    rgba, _ = to_uint8_videos(np.full((1, 3, 4, 8, 9), 0.5, np.float32))  # alpha dropped
    assert grey[0].shape == (3, 8, 9, 3) and rgba[0].shape == (3, 8, 9, 3) and rgba[0].max() == 128
    uneven, _ = to_uint8_videos([expected[0], expected[1, :3, :4]])
    assert [a.shape for a in uneven] == [(5, 6, 7, 3), (3, 4, 7, 3)]

    with pytest.raises(ValueError, match="NaN"):
        to_uint8_videos(np.full((1, 2, 3, 4, 4), np.nan, np.float32))
    with pytest.raises(ValueError, match="dimensions"):
        to_uint8_videos(np.zeros((4, 4), np.uint8))
    with pytest.raises(ValueError, match="dtype"):
        to_uint8_videos(np.zeros((1, 2, 4, 4, 3), np.int16))
    with pytest.raises(ValueError, match="channel axis"):
        to_uint8_videos(np.zeros((1, 2, 5, 6, 7), np.uint8))


def test_client_side_sampling_and_resizing_are_the_services():
    from service.pipeline.decode import sample_indices as service_sample_indices

    for frames in (1, 2, 7, 16, 81, 100):
        for max_frames in (2, 9, 16):
            for stride in (1, 2, 5):
                assert sample_indices(frames, max_frames=max_frames, frame_stride=stride) == \
                    service_sample_indices(frames, max_frames=max_frames, frame_stride=stride)  # fmt: skip
    clip = torch.arange(81, dtype=torch.float32).view(1, 81, 1, 1, 1).expand(1, 81, 3, 8, 8) / 255  # frame i = i/255
    arrays, kept = to_uint8_videos(clip, max_frames=16, frame_stride=2)
    assert kept[0] == sample_indices(81, max_frames=16, frame_stride=2)
    assert arrays[0][:, 0, 0, 0].tolist() == kept[0]  # only the sampled frames were converted

    rng = np.random.default_rng(2)
    for height, width, long_side in [(480, 832, 448), (100, 60, 37), (64, 64, 32), (33, 97, 50), (9, 300, 299)]:
        video = rng.integers(0, 256, (2, height, width, 3), dtype=np.uint8)
        ours = area_resize(video, long_side)
        new_h, new_w = ours.shape[1:3]
        opencv = np.stack([cv2.resize(f.astype(np.float32) / 255, (new_w, new_h), interpolation=cv2.INTER_AREA)
                           for f in video])  # fmt: skip  (what the service's decode step computes)
        assert max(new_h, new_w) == long_side
        assert np.abs(ours / 255.0 - opencv).max() <= 0.5 / 255 + 1e-5  # uint8 rounding only
    small = rng.integers(0, 256, (2, 20, 30, 3), dtype=np.uint8)
    assert area_resize(small, 64) is small  # never enlarged client-side


def test_prepare_with_downsample_sends_sampled_frames_and_matching_geometry():
    client = AsyncRewardClient("http://127.0.0.1:9", api_key="k")
    video = np.zeros((1, 20, 96, 160, 3), np.uint8)
    video[0, :, :, :, 0] = np.arange(20)[:, None, None]  # frame index in the red channel
    geometry = [{"depth": np.arange(20.0)[:, None, None] * np.ones((20, 4, 5)),
                 "world_to_camera": np.tile(np.eye(4), (20, 1, 1)), "intrinsics": np.eye(3)}]  # fmt: skip
    prepared = client.prepare(video, prompts=["push in"], geometry=geometry, terms=["quality"],
                              scoring={"long_side": 64, "max_frames": 9, "frame_stride": 1},
                              deadline=time.monotonic() + 10, deadline_s=10)  # fmt: skip
    body = prepared.encode()
    header = json.loads(bytes(body.parts[0]))
    shapes = {tensor["name"]: tensor["shape"] for tensor in header["inputs"]}
    picked = sample_indices(20, max_frames=9)
    assert shapes == {"video.0": [9, 38, 64, 3], "depth.0": [9, 4, 5], "world_to_camera.0": [9, 4, 4],
                      "intrinsics.0": [3, 3]}  # fmt: skip
    assert header["options"] == {"terms": ["quality"], "long_side": 64, "max_frames": 9, "frame_stride": 1}
    assert header["items"] == [{"prompt": "push in"}]
    sent = np.frombuffer(body.parts[1], np.uint8).reshape(9, 38, 64, 3)
    assert sent[:, 0, 0, 0].tolist() == picked
    assert np.frombuffer(body.parts[2], np.float64).reshape(9, 4, 5)[:, 0, 0].tolist() == picked
    with pytest.raises(ValueError, match="1 videos but 2 prompts"):
        client.prepare(video, prompts=["a", "b"], deadline=0, deadline_s=1)


def test_numpy_callers_never_import_torch():
    code = (
        "import sys, numpy as np, time\n"
        "from trainer_client import RewardClient\n"
        "from trainer_client.client import AsyncRewardClient\n"
        "c = AsyncRewardClient('http://127.0.0.1:9', api_key='k')\n"
        "c.prepare(np.zeros((2, 3, 8, 8, 3), np.uint8), deadline=0, deadline_s=1).encode()\n"
        "print('torch' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


# -- retries and results ----------------------------------------------------------------------
def test_retry_waits_are_jittered_capped_and_honour_retry_after():
    policy = RetryPolicy(base_delay_s=0.5, max_delay_s=4.0, retry_after_jitter=0.2)
    for attempt, ceiling in [(1, 0.5), (2, 1.0), (3, 2.0), (4, 4.0), (9, 4.0)]:
        delays = [policy.delay(attempt) for _ in range(200)]
        assert ceiling / 2 <= min(delays) and max(delays) <= ceiling and np.std(delays) > 0
    after = [policy.delay(1, retry_after=3.0) for _ in range(200)]
    assert 3.0 <= min(after) and max(after) <= 3.6
    assert parse_retry_after("7") == 7.0 and parse_retry_after(" 0.5 ") == 0.5
    assert 55 < parse_retry_after(formatdate(time.time() + 60, usegmt=True)) <= 60
    assert parse_retry_after(None) is None and parse_retry_after("soon") is None


def job_with(*items) -> JobPublic:
    versions = {"reward3d": "t", "reward_spec": "t"}
    entries = []
    for index, (status, total, error) in enumerate(items):
        result = None
        if status == "ok":
            terms = {"quality": {"score": 0.25, "status": "ok"},
                     "trajectory": {"status": "failed", "reason": "no camera path"}}  # fmt: skip
            result = {"total": total, "terms": terms, "versions": versions}
        entries.append({"index": index, "status": status, "result": result,
                        "error": {"code": error, "detail": "why"} if error else None})  # fmt: skip
    return JobPublic.model_validate({"id": "j", "status": "finished", "created_at": 0.0, "attempts": 1,
                                     "progress": {"done": len(items), "total": len(items)}, "items": entries})  # fmt: skip


def test_scores_mask_failed_items_and_null_totals_never_zero():
    scores = Scores.from_job(job_with(("ok", 0.7, None), ("ok", None, None), ("failed", None, "timeout"),
                                      ("cancelled", None, "cancelled")), 4)  # fmt: skip
    assert scores.ok.tolist() == [True, False, False, False]
    assert scores.totals[0] == 0.7 and np.isnan(scores.totals[1:]).all()
    assert scores.errors[0] is None and "trajectory: no camera path" in scores.errors[1]
    assert isinstance(scores[2], ItemFailure) and scores[2].code == "timeout" and "cancelled" in scores.errors[3]
    assert scores.term("quality")[:2].tolist() == [0.25, 0.25] and np.isnan(scores.term("trajectory")).all()
    assert scores.job_id == "j"
    with pytest.raises(Exception, match="for 3 videos"):
        Scores.from_job(job_with(("ok", 0.7, None)), 3)
    with pytest.raises(Exception, match="answered for items"):  # not the items that were sent
        Scores.from_job(job_with(("ok", 0.7, None)), 1, ids=["rank1-sample0"])


# -- the flow_grpo adapter --------------------------------------------------------------------
class FakeClient:
    """Stands in for RewardClient: records what it was sent, answers from a script."""

    def __init__(self, outcome):
        self.outcome = outcome
        self.sent = []

    def score(self, videos, prompts=None, terms=None, weights=None, **kwargs):
        self.sent.append((tuple(videos.shape), prompts, terms))
        if isinstance(self.outcome, Exception):
            raise self.outcome
        return self.outcome

    def info(self):
        return {"scoring": {"terms": ["reconstruction", "quality"]}}


def test_flow_grpo_reward_fn_gives_per_term_lists_avg_and_a_mask():
    from trainer_client.flow_grpo import make_reward_fn

    scores = Scores.from_job(job_with(("ok", 0.7, None), ("failed", None, "invalid_input")), 2)
    client = FakeClient(scores)
    videos = torch.rand(2, 3, 5, 8, 8)  # Wan's output_type="pt": [B,C,T,H,W]
    rewards, meta = make_reward_fn(client, terms=["quality", "trajectory"])(videos, ["a", "b"], {}, True)
    assert client.sent[0] == ((2, 5, 3, 8, 8), ["a", "b"], ["quality", "trajectory"])  # sent as [B,T,C,H,W]
    assert set(rewards) == {"quality", "trajectory", "avg"}
    assert rewards["avg"][0] == 0.7 and rewards["quality"][0] == 0.25
    assert all(math.isnan(values[1]) for values in rewards.values())  # failed: NaN everywhere, never 0
    assert math.isnan(rewards["trajectory"][0])  # a term that failed on an ok sample
    assert meta["ok"] == [True, False] and "invalid_input" in meta["errors"][1] and meta["job_id"] == "j"

    late = FakeClient(DeadlineExceeded(5.0, attempts=3, last_error=None, job_id="k"))
    rewards, meta = make_reward_fn(late, layout="BTHWC")(np.zeros((2, 5, 8, 8, 3), np.uint8), ["a", "b"], {})
    assert late.sent[0][0] == (2, 5, 3, 8, 8)
    assert set(rewards) == {"reconstruction", "quality", "avg"}  # the service's default terms
    assert meta["ok"] == [False, False] and np.isnan(rewards["avg"]).all() and meta["job_id"] == "k"

    with pytest.raises(RequestRejected):
        make_reward_fn(FakeClient(RequestRejected(401, "unauthorized", "no key")), terms=["quality"])(videos, ["a", "b"])
    with pytest.raises(ValueError, match="layout"):
        make_reward_fn(client, layout="TBCHW")


# -- the trainer's reward.source: http ---------------------------------------------------------
def test_trainer_http_source_is_the_sdk_configured_from_the_reward_section():
    from trainer_client.client import RewardClient
    from trainer_client.rewards import ResultsRewardSource
    from trainer_client.trainer.config import RewardConfig
    from trainer_client.trainer.loop import build_reward_source

    config = RewardConfig(source="http", url="http://127.0.0.1:9", api_key="k" * 20, timeout_s=77,
                          max_workers=3, options={"long_side": 64})  # fmt: skip
    source = build_reward_source(config)  # nothing listens there: a warning, not an error
    try:
        assert isinstance(source, ResultsRewardSource) and isinstance(source.client, RewardClient)
        inner = source.client._client
        assert (inner.url, inner.deadline_s, inner.max_in_flight, inner.downsample, inner.options) == \
            ("http://127.0.0.1:9", 77.0, 3, True, {"long_side": 64})  # fmt: skip
    finally:
        source.close()

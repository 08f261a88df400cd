"""The trainer's reward seam (trainer_client.rewards): formats, the in-process source, failure
masks, and the adapter for clients that return service RewardResult objects."""

import concurrent.futures
import threading

import numpy as np
import pytest
import torch

from service.schemas import RewardResult, TermResult, TermStatus, Versions
from trainer_client.rewards import (
    InProcessRewardSource,
    RewardSource,
    ResultsRewardSource,
    as_uint8_video,
    brightness_reward,
    sample_from_result,
)


def test_video_formats_are_normalised_to_uint8_channels_last():
    video = np.random.default_rng(0).random((2, 3, 3, 4, 5)).astype(np.float32)  # [B,T,C,H,W]
    frames = as_uint8_video(video)
    assert frames.shape == (2, 3, 4, 5, 3) and frames.dtype == np.uint8
    assert frames[1, 2, 3, 4, 0] == round(video[1, 2, 0, 3, 4] * 255)
    assert np.array_equal(as_uint8_video(torch.from_numpy(video).to(torch.bfloat16)).shape, frames.shape)
    assert as_uint8_video(frames) is not None and np.array_equal(as_uint8_video(torch.from_numpy(frames)), frames)
    with pytest.raises(ValueError, match="5-D"):
        as_uint8_video(np.zeros((3, 4, 5, 3), np.uint8))
    with pytest.raises(ValueError, match=r"\[B,T,H,W,3\]"):
        as_uint8_video(np.zeros((1, 2, 3, 4, 5), np.uint8))
    with pytest.raises(ValueError, match="C=3"):
        as_uint8_video(np.zeros((1, 2, 4, 4, 4), np.float32))


def test_brightness_reward_is_the_mean_pixel_value():
    frames = np.zeros((2, 1, 2, 2, 3), np.uint8)
    frames[1] = 255
    assert brightness_reward(frames, ["a", "b"]) == [{"brightness": 0.0}, {"brightness": 1.0}]
    with pytest.raises(ValueError, match="only 'brightness'"):
        brightness_reward(frames, ["a", "b"], terms=["quality"])


def scripted(frames, prompts, *, terms=None):
    """A reward function with per-sample failures chosen by the prompt."""
    out = []
    for prompt in prompts:
        if prompt == "fail":
            out.append(None)
        elif prompt == "nan":
            out.append({"a": float("nan")})
        else:
            out.append({"a": 0.2, "b": 0.6})
    return out


def test_in_process_source_totals_and_per_sample_failures():
    source = InProcessRewardSource(scripted, max_workers=1)
    assert isinstance(source, RewardSource)
    try:
        videos = np.zeros((4, 1, 2, 2, 3), np.uint8)
        batch = source.submit(videos, ["ok", "fail", "nan", "ok"], weights={"a": 1.0, "b": 3.0}).result(5)
    finally:
        source.close()
    assert batch.ok.tolist() == [True, False, False, True]
    assert batch.totals[0] == pytest.approx((0.2 + 3 * 0.6) / 4)
    assert np.isnan(batch.totals[1]) and np.isnan(batch.totals[2])
    assert "no score" in batch.samples[1].error and "non-finite" in batch.samples[2].error
    assert batch.term_scores()["b"][0] == pytest.approx(0.6)


def test_an_exception_fails_the_whole_batch_with_its_message():
    def broken(frames, prompts, *, terms=None):
        raise RuntimeError("geometry backend unavailable")

    def short(frames, prompts, *, terms=None):
        return [{"a": 1.0}]

    source = InProcessRewardSource(broken)
    other = InProcessRewardSource(short)
    try:
        batch = source.submit(np.zeros((2, 1, 2, 2, 3), np.uint8), ["x", "y"]).result(5)
        assert not batch.ok.any()
        assert all("geometry backend unavailable" in s.error for s in batch.samples)
        batch = other.submit(np.zeros((2, 1, 2, 2, 3), np.uint8), ["x", "y"]).result(5)
        assert not batch.ok.any() and "1 results for 2 videos" in batch.samples[0].error
        with pytest.raises(ValueError, match="2 videos but 1 prompts"):
            source.submit(np.zeros((2, 1, 2, 2, 3), np.uint8), ["x"])
    finally:
        source.close()
        other.close()


def test_submit_returns_before_the_reward_is_computed():
    # Causality, not timing: the reward cannot finish until the test releases it, so submit()
    # returning with the future pending proves it did not wait for the computation.
    release, started = threading.Event(), threading.Event()

    def gated_reward(frames, prompts, terms=None):
        started.set()
        assert release.wait(5), "the test never released the reward"
        return brightness_reward(frames, prompts)

    source = InProcessRewardSource(gated_reward)
    try:
        future = source.submit(np.zeros((1, 1, 2, 2, 3), np.uint8), ["x"])
        assert started.wait(5) and not future.done()  # running in the pool, not finished
        release.set()
        assert future.result(5).ok.all()
    finally:
        release.set()
        source.close()


def _result(total, terms):
    return RewardResult(
        total=total,
        terms=terms,
        versions=Versions(reward3d="0", reward_spec="0"),
    )


def test_service_results_convert_to_samples():
    ok = _result(
        0.7,
        {
            "reconstruction": TermResult(score=0.8, status=TermStatus.OK),
            "trajectory": TermResult(status=TermStatus.NOT_APPLICABLE, reason="no camera words"),
        },
    )
    failed = _result(None, {"reconstruction": TermResult(status=TermStatus.FAILED, reason="too few frames registered")})
    sample = sample_from_result(ok)
    assert sample.ok and sample.total == 0.7 and sample.terms == {"reconstruction": 0.8}
    sample = sample_from_result(failed)
    assert not sample.ok and "too few frames registered" in sample.error
    # the JSON form (what an SDK might hand back before parsing) reads the same
    assert sample_from_result(ok.model_dump(mode="json")) == sample_from_result(ok)
    assert not sample_from_result(None).ok
    assert "TimeoutError" in sample_from_result(TimeoutError("late")).error


class FakeClient:
    """Stands in for trainer_client.RewardClient: submit() returns a future of results."""

    def __init__(self, results=None, error=None):
        self.results, self.error, self.closed, self.calls = results, error, False, []

    def submit(self, videos, *, prompts, terms, weights):
        self.calls.append((prompts, terms, weights))
        future = concurrent.futures.Future()
        if self.error is not None:
            future.set_exception(self.error)
        else:
            future.set_result(self.results)
        return future

    def close(self):
        self.closed = True


def test_results_source_adapts_a_client_and_masks_its_failures():
    good = _result(0.5, {"quality": TermResult(score=0.5, status=TermStatus.OK)})
    client = FakeClient(results=[good, None])
    source = ResultsRewardSource(client)
    batch = source.submit(np.zeros((2, 1, 2, 2, 3), np.uint8), ["a", "b"], terms=["quality"]).result(1)
    assert batch.ok.tolist() == [True, False]
    assert client.calls == [(["a", "b"], ["quality"], None)]
    source.close()
    assert client.closed

    batch = ResultsRewardSource(FakeClient(error=ConnectionError("service down"))).submit(
        np.zeros((2, 1, 2, 2, 3), np.uint8), ["a", "b"]
    ).result(1)
    assert not batch.ok.any() and "service down" in batch.samples[0].error
    batch = ResultsRewardSource(FakeClient(results=[good])).submit(np.zeros((2, 1, 2, 2, 3), np.uint8), ["a", "b"]).result(1)
    assert not batch.ok.any() and "1 results for 2 videos" in batch.samples[1].error

"""The reconstruction term on exact geometry: clean wins, every corruption loses."""

import dataclasses

import cv2
import numpy as np
import pytest
import torch

from service.pipeline import RewardPipeline
from service.pipeline.decode import frames_to_video
from service.pipeline.gaussians import lift_gaussians
from service.pipeline.geometry.oracle import OracleGeometry
from service.pipeline.render.held_out import render_held_out
from service.pipeline.terms.reconstruction import reconstruction_term
from service.schemas import ScoreOptions, TermStatus
from service.settings import Settings
from service.synthetic import make_clip

HEIGHT, WIDTH = 126, 224


@pytest.fixture(scope="module")
def clip():
    return make_clip("orbit", 8, HEIGHT, WIDTH, detail=0.5)


@pytest.fixture(scope="module")
def pipeline():
    return RewardPipeline(Settings(geometry_backend="oracle", long_side=WIDTH))


def reconstruction(pipeline, frames, clip):
    result = pipeline(frames, geometry_arrays=clip.geometry_arrays(),
                      options=ScoreOptions(terms=["reconstruction"]))
    return result.terms["reconstruction"]


def elastic_warp(frames: np.ndarray, pixels: float, seed: int = 0) -> np.ndarray:
    """Smooth random per-frame displacement up to ``pixels`` (non-rigid, 3D-inconsistent)."""
    rng = np.random.default_rng(seed)
    out = []
    for frame in frames:
        h, w = frame.shape[:2]
        coarse = rng.normal(size=(2, h // 8 + 1, w // 8 + 1)).astype(np.float32)
        field = np.stack([cv2.resize(c, (w, h), interpolation=cv2.INTER_CUBIC) for c in coarse])
        field *= pixels / np.abs(field).max()
        grid_x, grid_y = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
        out.append(cv2.remap(frame, grid_x + field[0], grid_y + field[1], cv2.INTER_LINEAR,
                             borderMode=cv2.BORDER_REFLECT))
    return np.stack(out)


def popping_object(frames: np.ndarray) -> np.ndarray:
    """A red square that appears in every other frame (objects popping in and out)."""
    out = frames.copy()
    side = frames.shape[1] // 3
    out[1::2, 10 : 10 + side, 20 : 20 + side] = (255, 0, 0)
    return out


def test_exact_geometry_scores_near_perfect(pipeline, clip):
    term = reconstruction(pipeline, clip.frames, clip)
    assert term.status == TermStatus.OK
    assert term.metrics["psnr"] > 30
    assert term.metrics["coverage"] > 0.95
    assert term.score > 0.8


def test_every_corruption_scores_strictly_lower(pipeline, clip):
    clean = reconstruction(pipeline, clip.frames, clip).score
    corrupted = {
        "elastic 2px": elastic_warp(clip.frames, 2),
        "elastic 4px": elastic_warp(clip.frames, 4),
        "shuffled": clip.frames[[0, 4, 2, 6, 1, 5, 3, 7]],
        "popping": popping_object(clip.frames),
    }
    scores = {name: reconstruction(pipeline, frames, clip).score for name, frames in corrupted.items()}
    for name, score in scores.items():
        assert score < clean - 0.05, (name, score, clean)
    assert scores["elastic 4px"] < scores["elastic 2px"]  # worse warp, lower reward


def test_blank_and_frozen_videos_are_not_rewarded(pipeline, clip):
    blank = np.full_like(clip.frames, 128)
    frozen = np.repeat(clip.frames[:1], len(clip.frames), axis=0)
    for frames in (blank, frozen):
        term = reconstruction(pipeline, frames, clip)
        assert term.status == TermStatus.OK
        assert term.score < 0.05
        assert term.reason
    # A partly frozen clip (the last half holds one frame) is penalised in proportion.
    half = clip.frames.copy()
    half[4:] = half[4]
    partly = reconstruction(pipeline, half, clip)
    assert partly.metrics["frames_frozen"] == 3
    assert partly.score < reconstruction(pipeline, clip.frames, clip).score - 0.2


def test_unregistered_frames_count_as_failures(pipeline, clip):
    # Only every other frame has a pose: the others score 0, so the term roughly halves.
    video = frames_to_video(clip.frames, max_frames=16, long_side=WIDTH)
    geometry = OracleGeometry(clip.geometry_arrays()).predict(video)
    geometry = dataclasses.replace(geometry, registered=torch.tensor([True, False] * 4))
    gaussians = lift_gaussians(video.frames, geometry)
    held_out = render_held_out(gaussians, geometry, pipeline.renderer, frames=video.frames)
    term = reconstruction_term(video.frames, geometry, held_out)
    assert term.metrics["frames_unregistered"] == 4
    assert term.score < 0.6 * reconstruction(pipeline, clip.frames, clip).score


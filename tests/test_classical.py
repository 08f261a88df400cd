"""The weights-free geometry backend on real (tests/data) and ray-cast (service.synthetic) clips."""

import math
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from scipy.stats import spearmanr

from service.pipeline import RewardPipeline
from service.pipeline.decode import frames_to_video
from service.pipeline.geometry.classical import ClassicalGeometry
from service.pipeline.transforms import (
    apply_sim3,
    camera_centers,
    rotation_geodesic_deg,
    umeyama_sim3,
)
from service.schemas import ScoreOptions, TermStatus
from service.settings import Settings
from service.synthetic import _look_at, make_clip, render_scene
from service.validation.chessboard import board_views, read_calibration

DATA = Path(__file__).parent / "data"
HEIGHT, WIDTH = 126, 224


@pytest.fixture(scope="module")
def backend() -> ClassicalGeometry:
    return ClassicalGeometry(settings=Settings(geometry_backend="classical"))


@pytest.fixture(scope="module")
def orbit():
    return make_clip("orbit", 8, HEIGHT, WIDTH, detail=0.5)


def predict(backend, frames: np.ndarray, **kwargs):
    video = frames_to_video(frames, max_frames=len(frames), long_side=max(frames.shape[1:3]))
    model = backend if not kwargs else ClassicalGeometry(settings=backend.settings, **kwargs)
    return video, model.predict(video)


def test_chessboard_pair_recovers_relative_pose(backend):
    """Two OpenCV chessboard views: rotation and translation direction vs. solvePnP."""
    camera_matrix, distortion = read_calibration(DATA / "chessboard" / "left_intrinsics.yml")
    views = board_views([DATA / "chessboard" / "left03.jpg", DATA / "chessboard" / "left04.jpg"],
                        camera_matrix, distortion)  # fmt: skip
    _, geometry = predict(backend, views.frames, intrinsics=views.camera_matrix)
    assert geometry.registered.all(), geometry.diagnostics
    estimated = geometry.world_to_camera.numpy()
    truth = views.world_to_camera
    relative_estimated = estimated[1] @ np.linalg.inv(estimated[0])
    relative_truth = truth[1] @ np.linalg.inv(truth[0])
    rotation_error = float(rotation_geodesic_deg(
        torch.from_numpy(relative_estimated[None, :3, :3]),
        torch.from_numpy(relative_truth[None, :3, :3]),
    )[0])  # fmt: skip
    direction_estimated = relative_estimated[:3, 3] / np.linalg.norm(relative_estimated[:3, 3])
    direction_truth = relative_truth[:3, 3] / np.linalg.norm(relative_truth[:3, 3])
    direction_error = math.degrees(math.acos(np.clip(direction_estimated @ direction_truth, -1, 1)))
    assert rotation_error < 2.0, rotation_error
    assert direction_error < 10.0, direction_error


def test_aloe_depth_ordering_matches_ground_truth_disparity(backend):
    """A rectified stereo pair seen as a 2-frame clip: nearer (higher disparity) must come out
    nearer (lower depth) on the confident pixels."""
    left = cv2.cvtColor(cv2.imread(str(DATA / "aloe" / "aloeL.jpg")), cv2.COLOR_BGR2RGB)
    right = cv2.cvtColor(cv2.imread(str(DATA / "aloe" / "aloeR.jpg")), cv2.COLOR_BGR2RGB)
    disparity = cv2.imread(str(DATA / "aloe_disparity_gt.png"), cv2.IMREAD_UNCHANGED)
    video, geometry = predict(backend, np.stack([left, right]))
    assert geometry.registered.all(), geometry.diagnostics
    disparity = cv2.resize(disparity, (video.width, video.height), interpolation=cv2.INTER_NEAREST)
    depth = geometry.depth[0].numpy()
    valid = (geometry.confidence[0].numpy() > 0.5) & (disparity > 0) & (depth > 0)
    assert valid.mean() > 0.3, valid.mean()
    rho = spearmanr(1.0 / depth[valid], disparity[valid]).statistic
    assert rho >= 0.8, rho


def test_same_input_gives_identical_geometry(backend, orbit):
    _, first = predict(backend, orbit.frames)
    _, second = predict(ClassicalGeometry(settings=Settings()), orbit.frames)
    for name in ("depth", "confidence", "world_to_camera", "intrinsics", "registered"):
        assert torch.equal(getattr(first, name), getattr(second, name)), name
    untimed = {k: v for k, v in first.diagnostics.items() if not k.endswith("_ms")}
    assert untimed == {k: v for k, v in second.diagnostics.items() if not k.endswith("_ms")}


def test_synthetic_orbit_poses_and_depth_are_accurate(backend, orbit):
    _, geometry = predict(backend, orbit.frames)
    assert geometry.registered.all(), geometry.diagnostics
    assert geometry.diagnostics["camera_motion"] == "translation"
    truth = torch.from_numpy(orbit.world_to_camera)
    estimated_centres = camera_centers(geometry.world_to_camera)
    true_centres = camera_centers(truth)
    scale, rotation, translation = umeyama_sim3(estimated_centres, true_centres)
    aligned = apply_sim3(scale, rotation, translation, estimated_centres)
    extent = float(torch.cdist(true_centres, true_centres).max())
    assert float((aligned - true_centres).norm(dim=1).mean()) / extent < 0.02
    # Depth up to one global scale (the best one, the median ratio) on confident pixels. The
    # focal length is estimated (~10 % off on 8 frames of a short arc), which bends depth a little.
    confident = (geometry.confidence > 0.5) & (geometry.depth > 0)
    assert confident.float().mean() > 0.5
    true_depth = torch.from_numpy(orbit.depth)
    ratio = (true_depth / geometry.depth.clamp_min(1e-9))[confident].median()
    relative = (geometry.depth * ratio - true_depth).abs() / true_depth.clamp_min(1e-6)
    assert float(relative[confident].median()) < 0.08


def _noisy(frames: np.ndarray, seed: int = 0) -> np.ndarray:
    """Sensor noise, so that a still camera's frames are not exact copies (frozen frames)."""
    rng = np.random.default_rng(seed)
    noise = rng.normal(0, 2.0, size=frames.shape)
    return np.clip(frames.astype(np.float64) + noise, 0, 255).round().astype(np.uint8)


def _panning_clip(num_frames: int = 6, yaw_deg: float = 12.0):
    """A camera turning in place (no translation), ray-cast in the synthetic room."""
    focal = WIDTH / (2 * math.tan(math.radians(30)))
    intrinsics = np.array([[focal, 0, WIDTH / 2], [0, focal, HEIGHT / 2], [0, 0, 1.0]])
    centre = np.array([0.0, -0.2, -1.0])
    frames, poses = [], []
    for i in range(num_frames):
        yaw = math.radians(-yaw_deg / 2 + yaw_deg * i / (num_frames - 1))
        pose = _look_at(centre, centre + np.array([math.sin(yaw), 0.1, math.cos(yaw)]))
        colour, _ = render_scene(pose, intrinsics, HEIGHT, WIDTH, detail=0.5)
        frames.append(np.round(colour * 255).astype(np.uint8))
        poses.append(pose)
    return np.stack(frames), np.stack(poses)


@pytest.fixture(scope="module")
def pipeline():
    return RewardPipeline(Settings(geometry_backend="classical", long_side=WIDTH))


def test_still_camera_is_flagged_and_not_rewarded(backend, pipeline):
    frames = _noisy(make_clip("static", 6, HEIGHT, WIDTH, detail=0.5).frames)
    _, geometry = predict(backend, frames)
    assert geometry.diagnostics["camera_motion"] == "static"
    assert geometry.diagnostics["depth_observable"] is False
    assert geometry.registered.all()  # the identity pose is an estimate, not a placeholder
    assert "does not move" in geometry.diagnostics["reason"]
    result = pipeline(frames, prompt="The camera stays fixed.", options=ScoreOptions(max_frames=6))
    reconstruction = result.terms["reconstruction"]
    assert reconstruction.status == TermStatus.OK
    assert reconstruction.score < 0.05 and "parallax" in reconstruction.reason
    assert result.terms["trajectory"].score > 0.9  # "fixed" was asked for and delivered


def test_turning_camera_gives_rotations_but_no_3d_evidence(backend, pipeline):
    frames, truth = _panning_clip()
    _, geometry = predict(backend, frames)
    assert geometry.diagnostics["camera_motion"] == "rotation", geometry.diagnostics
    assert geometry.registered.all()
    estimated = geometry.world_to_camera[:, :3, :3]
    truth_rotations = torch.from_numpy(truth[:, :3, :3])
    error = rotation_geodesic_deg(estimated[1:] @ estimated[0].T,
                                  truth_rotations[1:] @ truth_rotations[0].T)  # fmt: skip
    assert float(error.max()) < 1.0, error
    result = pipeline(frames, options=ScoreOptions(max_frames=len(frames)))
    assert result.terms["reconstruction"].score < 0.05


def test_blank_clip_is_flagged_not_garbage(backend, pipeline):
    frames = _noisy(np.full((6, HEIGHT, WIDTH, 3), 120, dtype=np.uint8))
    _, geometry = predict(backend, frames)
    assert not geometry.registered.any()
    assert "texture" in geometry.diagnostics["reason"]
    assert float(geometry.depth.abs().sum()) == 0.0
    result = pipeline(frames, options=ScoreOptions(max_frames=6))
    reconstruction = result.terms["reconstruction"]
    assert reconstruction.status == TermStatus.OK and reconstruction.score == 0.0
    assert reconstruction.reason


def test_reconstruction_with_classical_geometry_drops_under_corruption(pipeline, orbit):
    """End to end on exact footage: warps and flicker lower the score (geometry estimated)."""
    from service.validation.corruptions import corrupt

    def reconstruction(frames):
        options = ScoreOptions(max_frames=len(frames), terms=["reconstruction"])
        return pipeline(frames, options=options).terms["reconstruction"].score

    clean = reconstruction(orbit.frames)
    assert clean > 0.3
    # Severities well above the estimation noise of 8 small frames; every severity on real
    # footage is bench/validate.py's job.
    for family, severity in (("elastic", 2), ("flicker", 3), ("popping", 2)):
        assert reconstruction(corrupt(orbit.frames, family, severity)) < clean - 0.05, family


def test_given_intrinsics_are_kept(backend, orbit):
    intrinsics = orbit.intrinsics[0]
    _, geometry = predict(backend, orbit.frames, intrinsics=intrinsics)
    assert geometry.diagnostics["focal_source"] == "given"
    assert torch.allclose(geometry.intrinsics, torch.from_numpy(intrinsics).expand(8, 3, 3))


def test_unregistered_frames_have_zero_depth(backend, orbit):
    # Splice in frames of something else (smooth random textures): they cannot join.
    rng = np.random.default_rng(0)
    other = np.stack([
        cv2.resize(rng.integers(0, 255, (HEIGHT // 8, WIDTH // 8, 3), dtype=np.uint8), (WIDTH, HEIGHT),
                   interpolation=cv2.INTER_CUBIC)
        for _ in range(3)
    ])  # fmt: skip
    frames = np.concatenate([orbit.frames, other])
    _, geometry = predict(backend, frames)
    assert geometry.registered[:8].all()
    unregistered = ~geometry.registered
    assert unregistered.any()
    assert float(geometry.depth[unregistered].abs().sum()) == 0.0
    assert float(geometry.confidence[unregistered].abs().sum()) == 0.0
    assert torch.isfinite(geometry.world_to_camera).all()  # placeholders, but finite

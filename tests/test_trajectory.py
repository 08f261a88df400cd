"""The trajectory term: camera words, explicit poses, invariances, and "not applicable"."""

import math

import pytest
import torch
from pydantic import ValidationError

from service.pipeline.terms.camera_words import MOTIONS, parse_camera_words, plan_to_path
from service.pipeline.terms.trajectory import (
    path_roughness,
    smoothness_term,
    target_from_request,
    trajectory_term,
)
from service.pipeline.transforms import (
    axis_angle_to_matrix,
    invert_rigid,
    make_rigid,
    rotation_about_y,
)
from service.pipeline.types import Geometry, PipelineInputError
from service.schemas import TermStatus, TrajectoryTarget

TIMES = torch.linspace(0, 1, 12, dtype=torch.float64)
OPPOSITE = {
    "push_in": "pull out", "pull_out": "push in", "move_left": "move right",
    "move_right": "move left", "move_up": "move down", "move_down": "move up",
    "pan_left": "pan right", "pan_right": "pan left", "tilt_up": "tilt down",
    "tilt_down": "tilt up", "orbit_left": "orbit right", "orbit_right": "orbit left",
}  # fmt: skip


def geometry_from_path(camera_to_world: torch.Tensor, depth_scale: float = 1.0) -> Geometry:
    count = camera_to_world.shape[0]
    # Relief (columns at depth 2 and 4), not a plane: a translation is only checkable where
    # depth is observable (evidence.clip_depth_evidence), see test_flat_scene_...
    depth = torch.full((count, 6, 8), 4.0 * depth_scale)
    depth[:, :, ::2] = 2.0 * depth_scale
    intrinsics = torch.tensor([[8.0, 0, 4], [0, 8.0, 3], [0, 0, 1]], dtype=torch.float64)
    return Geometry(
        depth=depth, confidence=torch.ones_like(depth),
        world_to_camera=invert_rigid(camera_to_world), intrinsics=intrinsics.repeat(count, 1, 1),
        registered=torch.ones(count, dtype=torch.bool), backend="test",
    )  # fmt: skip


def similarity(camera_to_world: torch.Tensor, seed: int) -> tuple[torch.Tensor, float]:
    """The same cameras in a world moved by a random similarity x -> s R x + t."""
    g = torch.Generator().manual_seed(seed)
    rotation = axis_angle_to_matrix(torch.randn(3, generator=g, dtype=torch.float64))
    scale = float(torch.rand(1, generator=g)) * 5 + 0.2
    shift = torch.randn(3, generator=g, dtype=torch.float64) * 10
    moved = camera_to_world.clone()
    moved[:, :3, :3] = rotation @ camera_to_world[:, :3, :3]
    moved[:, :3, 3] = scale * camera_to_world[:, :3, 3] @ rotation.T + shift
    return moved, scale


def score(prompt: str, camera_to_world: torch.Tensor, depth_scale: float = 1.0) -> float:
    target = target_from_request(prompt=prompt, trajectory=None, times=TIMES)
    return trajectory_term(geometry_from_path(camera_to_world, depth_scale), target).score


def word_path(words: str) -> torch.Tensor:
    return plan_to_path(parse_camera_words(f"Camera {words}."), TIMES)


@pytest.mark.parametrize(
    "prompt, motions",
    [
        ("Camera orbit left, then pull out. A canyon at dusk.", ["orbit_left", "pull_out"]),
        ("Camera move left, pull out, then pan right.", ["move_left", "pull_out", "pan_right"]),
        ("Camera orbit left, transitioning into a pan right.", ["orbit_left", "pan_right"]),
        ("Camera fixed. Waves crash on rocks.", ["fixed"]),
        ("The camera slowly pushes in, then tilts up to the sky.", ["push_in", "tilt_up"]),
        ("Camera pan right, then push in slowly.", ["pan_right", "push_in"]),
        ("A static camera watches a fox.", ["fixed"]),
    ],
)
def test_camera_words_are_parsed_in_order(prompt, motions):
    assert parse_camera_words(prompt).motions == motions


@pytest.mark.parametrize(
    "prompt",
    [None, "", "A bird moves left across a still lake.", "A chef tilts up the pan and moves in a circle."],
)
def test_prompts_without_camera_words_give_no_target(prompt):
    assert parse_camera_words(prompt) is None


def test_camera_words_move_the_camera_the_right_way():
    # OpenCV axes: x right, y down, z forward. Check where each word sends the camera.
    end = {m: word_path(m.replace("_", " "))[-1] for m in MOTIONS if m != "fixed"}
    assert end["push_in"][2, 3] > 0.9 and end["pull_out"][2, 3] < -0.9
    assert end["move_left"][0, 3] < -0.9 and end["move_right"][0, 3] > 0.9
    assert end["move_up"][1, 3] < -0.9 and end["move_down"][1, 3] > 0.9
    forward = lambda pose: pose[:3, 2]  # noqa: E731 - the camera's z axis in world
    assert forward(end["pan_left"])[0] < -0.2 and forward(end["pan_right"])[0] > 0.2
    assert forward(end["tilt_up"])[1] < -0.1 and forward(end["tilt_down"])[1] > 0.1
    # Orbit left: the camera moves left and turns right, keeping the point ahead in view.
    assert end["orbit_left"][0, 3] < -0.5 and forward(end["orbit_left"])[0] > 0.2
    assert end["orbit_right"][0, 3] > 0.5 and forward(end["orbit_right"])[0] < -0.2
    assert torch.equal(word_path("fixed"), torch.eye(4, dtype=torch.float64).repeat(12, 1, 1))


@pytest.mark.parametrize("motion", sorted(OPPOSITE))
def test_the_requested_motion_scores_high_and_its_opposite_low(motion):
    words = motion.replace("_", " ")
    path, _ = similarity(word_path(words), seed=len(motion))
    right = score(f"Camera {words}.", path)
    wrong = score(f"Camera {OPPOSITE[motion]}.", path)
    assert right > 0.99
    assert wrong < right - 0.3


def test_reversed_order_scores_lower_than_the_right_order():
    path = word_path("move right, then push in")
    assert score("Camera move right, then push in.", path) > 0.99
    assert score("Camera push in, then move right.", path) < 0.8
    reversed_path = torch.flip(path, dims=[0])
    assert score("Camera move right, then push in.", reversed_path) < 0.5


def test_score_is_invariant_to_a_global_similarity_of_the_estimate():
    # A noisy estimate of an orbit, then the same estimate in a scaled, rotated, shifted world.
    g = torch.Generator().manual_seed(0)
    path = word_path("orbit left, then pull out").clone()
    path[:, :3, 3] += torch.randn(12, 3, generator=g, dtype=torch.float64) * 0.05
    path[:, :3, :3] = path[:, :3, :3] @ axis_angle_to_matrix(torch.randn(12, 3, generator=g, dtype=torch.float64) * 0.02)
    reference = trajectory_term(geometry_from_path(path), target_from_request(
        prompt="Camera orbit left, then pull out.", trajectory=None, times=TIMES))
    for seed in range(3):
        moved, scale = similarity(path, seed)
        moved_term = trajectory_term(geometry_from_path(moved, depth_scale=scale), target_from_request(
            prompt="Camera orbit left, then pull out.", trajectory=None, times=TIMES))
        assert moved_term.score == pytest.approx(reference.score, abs=1e-6)
        for key in ("rotation_error_mean_deg", "translation_error_rel_path", "direction_cosine"):
            assert moved_term.metrics[key] == pytest.approx(reference.metrics[key], abs=1e-6)
    assert 0.3 < reference.score < 0.99  # the noise costs something, not everything


def test_pan_penalises_translation_relative_to_scene_depth():
    pan = word_path("pan left")
    drifting = pan.clone()
    drifting[:, 0, 3] = torch.linspace(0, 0.6, 12, dtype=torch.float64)  # 20% of depth 3
    assert score("Camera pan left.", pan) > 0.99
    assert score("Camera pan left.", drifting) < score("Camera pan left.", pan) - 0.1


def test_explicit_poses_of_any_length_are_resampled():
    # 30 poses of a right-turning arc given as world_to_camera; the estimate has 12 frames.
    times = torch.linspace(0, 1, 30, dtype=torch.float64)
    dense = torch.stack([make_rigid(rotation_about_y(0.5 * t), torch.tensor([2 * t, 0, t * t], dtype=torch.float64)) for t in times])
    target = TrajectoryTarget(world_to_camera=invert_rigid(dense).tolist())
    resolved = target_from_request(prompt="Camera push in.", trajectory=target, times=TIMES)
    assert resolved.source == "poses"  # explicit poses win over camera words
    estimate = torch.stack([make_rigid(rotation_about_y(0.5 * t), torch.tensor([2 * t, 0, t * t], dtype=torch.float64)) for t in TIMES])
    term = trajectory_term(geometry_from_path(similarity(estimate, 1)[0], similarity(estimate, 1)[1]), resolved)
    assert term.score > 0.99
    assert term.metrics["rotation_error_mean_deg"] < 1e-6


def test_opengl_poses_are_converted():
    pose = torch.eye(4, dtype=torch.float64)
    opengl = [pose.tolist(), make_rigid(torch.eye(3, dtype=torch.float64), torch.tensor([0, 0, -1.0], dtype=torch.float64)).tolist()]
    # OpenGL cameras look down -z: moving along -z is a push in.
    resolved = target_from_request(prompt=None, trajectory=TrajectoryTarget(camera_to_world=opengl, convention="opengl"), times=TIMES)
    assert resolved.camera_to_world[-1, 2, 3] == pytest.approx(1.0)


def test_bad_poses_are_rejected():
    with pytest.raises(ValidationError, match="finite"):
        TrajectoryTarget(camera_to_world=[[[math.nan] * 4] * 4] * 2)
    with pytest.raises(ValidationError, match="at least 2"):
        TrajectoryTarget(camera_to_world=[torch.eye(4).tolist()])
    with pytest.raises(ValidationError, match="exactly one"):
        TrajectoryTarget(camera_to_world=[torch.eye(4).tolist()] * 2, world_to_camera=[torch.eye(4).tolist()] * 2)
    skewed = torch.eye(4)
    skewed[0, 1] = 0.5
    with pytest.raises(PipelineInputError, match="proper rotations"):
        target_from_request(prompt=None, trajectory=TrajectoryTarget(camera_to_world=[torch.eye(4).tolist(), skewed.tolist()]), times=TIMES)


def test_too_few_registered_frames_score_zero_with_a_reason():
    geometry = geometry_from_path(word_path("push in"))
    geometry = Geometry(**{**geometry.__dict__, "registered": torch.tensor([True] * 3 + [False] * 9)})
    term = trajectory_term(geometry, target_from_request(prompt="Camera push in.", trajectory=None, times=TIMES))
    assert term.status == TermStatus.OK and term.score == 0.0
    assert "3 of 12" in term.reason


# --- path smoothness (no requested path) -------------------------------------------------------


def orbit_path(count: int = 16, degrees: float = 40.0) -> torch.Tensor:
    """A camera on a circle of radius 3 around the origin, looking at it: [count,4,4] c2w."""
    poses = []
    for angle in torch.linspace(0, math.radians(degrees), count, dtype=torch.float64):
        rotation = rotation_about_y(angle)
        centre = rotation @ torch.tensor([0.0, 0.0, -3.0], dtype=torch.float64)
        poses.append(make_rigid(rotation, centre))
    return torch.stack(poses)


def test_a_smooth_path_is_smooth_and_a_shuffled_one_is_not():
    orbit = orbit_path()
    smooth = max(path_roughness(orbit, 3.0))
    shuffled = max(path_roughness(orbit[torch.randperm(16, generator=torch.Generator().manual_seed(0))], 3.0))
    assert smooth < 0.05 < 0.5 < shuffled
    # dropping a block of frames makes one step larger: rougher than smooth, smoother than shuffled
    dropped = max(path_roughness(torch.cat([orbit[:5], orbit[10:]]), 3.0))
    assert smooth < dropped < shuffled


def test_roughness_is_scale_free_and_a_still_camera_is_smooth():
    orbit = orbit_path()
    scaled = orbit.clone()
    scaled[:, :3, 3] *= 7.0
    assert path_roughness(scaled, 21.0) == pytest.approx(path_roughness(orbit, 3.0), abs=1e-9)
    # a still camera: pose noise 100x below the per-step floor reads as smooth, not as zig-zag
    noise = torch.Generator().manual_seed(1)
    still = torch.eye(4, dtype=torch.float64).repeat(16, 1, 1)
    still[:, :3, 3] = 2e-5 * torch.randn(16, 3, generator=noise, dtype=torch.float64)
    still[:, :3, :3] = axis_angle_to_matrix(2e-5 * torch.randn(16, 3, generator=noise, dtype=torch.float64))
    assert max(path_roughness(still, 1.0)) < 0.1


def test_smoothness_term_scores_the_clean_order_above_a_shuffle():
    orbit = orbit_path()
    clean = smoothness_term(geometry_from_path(orbit))
    order = torch.randperm(16, generator=torch.Generator().manual_seed(0))
    shuffled = smoothness_term(geometry_from_path(orbit[order]))
    assert clean.status == TermStatus.OK and clean.score > 0.95
    assert shuffled.score < 0.1 and "zig-zags" in shuffled.reason
    assert clean.metrics["target_source"] == "none"


def test_smoothness_is_opt_in_and_off_means_not_applicable():
    import numpy as np

    from service.pipeline import RewardPipeline
    from service.settings import Settings
    from service.synthetic import make_clip

    clip = make_clip("orbit", 8, 36, 64, supersample=1)
    arrays = clip.geometry_arrays()
    order = np.array([0, 5, 2, 7, 1, 6, 3, 4])
    shuffled = {k: v[order] for k, v in arrays.items()}
    default = RewardPipeline(Settings(geometry_backend="oracle", long_side=64, num_threads=1))
    assert default(clip.frames, geometry_arrays=arrays).terms["trajectory"].status == TermStatus.NOT_APPLICABLE
    smooth = RewardPipeline(Settings(geometry_backend="oracle", long_side=64, num_threads=1,
                                     trajectory_without_target="smoothness"))  # fmt: skip
    clean_term = smooth(clip.frames, geometry_arrays=arrays).terms["trajectory"]
    shuffled_term = smooth(clip.frames[order], geometry_arrays=shuffled).terms["trajectory"]
    assert clean_term.status == TermStatus.OK and clean_term.score > 0.9
    assert shuffled_term.score < 0.5 * clean_term.score


def test_a_flat_scene_cannot_confirm_a_requested_translation():
    """A flat picture sliding has a camera path too; with no depth variation the translation it
    follows is not paid (the rotation part of a request still is)."""
    target = target_from_request(prompt="The camera moves right.", trajectory=None, times=TIMES)
    relief = geometry_from_path(target.camera_to_world)
    flat = geometry_from_path(target.camera_to_world)
    flat.depth[:] = 3.0
    assert trajectory_term(relief, target).score > 0.9
    result = trajectory_term(flat, target)
    assert result.score < 0.05 and "observable" in result.reason

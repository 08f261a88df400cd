"""Term `trajectory`: does the estimated camera path follow the requested one?

The target comes from explicit poses (any length, resampled at the frames' times) or from
camera words in the prompt (camera_words.py). No target: ``not_applicable``, never 0.

Both paths are re-expressed relative to their first registered frame (which makes the score
invariant to any global similarity transform of the estimate), then:

- rotation: geodesic error between estimated and target relative rotations, per frame;
  ``rotation_score = exp(-(0.5 * mean + 0.5 * final error) / 5 deg)``.
- translation, when the target translates: the estimated centres are scaled onto the target
  by the least-squares scale s >= 0 (the deterministic, closed-form Sim(3) restricted to scale:
  the first camera already fixes rotation and origin, and a free rotation would forgive a
  path in the wrong direction); ``translation_score = exp(-(mean error / target path length)
  / 0.25)``. A path in the wrong direction gets s = 0 and a large error.
- translation, when the target stays in place (pan, tilt, fixed): estimated translation
  relative to the median scene depth, ``translation_score = exp(-extent / 0.1)``.
- mix by motion type: weights (0.2 + 0.6 [target translates], 0.2 + 0.6 [target rotates]),
  normalised: push/pull/move 0.8/0.2, pan/tilt 0.2/0.8, orbit and fixed 0.5/0.5.

Path smoothness: a camera carried through a real scene moves smoothly, while shuffled, jittered
or dropped frames make the estimated path zig-zag. ``path_roughness`` (0 = constant velocity,
~0.75 = shuffled) is reported with every target; with no target and
``trajectory_without_target = "smoothness"`` it is the score, ``exp(-(roughness / 0.3)^2)``
(measured on great_wall windows: clean 0.00-0.06, dropped frames ~0.27, homography jitter
0.3-0.76, shuffled ~0.75). It closes a hole: without a requested path, a shuffled copy of slow
footage shows more parallax than the clean clip and would otherwise score higher.

Reported too: a full Umeyama Sim(3) alignment of the centres (deterministic, no RANSAC) and its
ATE relative to the target path length, the direction cosine, rotation errors in degrees.
Fewer than half of the frames registered: score 0 ("the camera path could not be followed").
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from service.pipeline.evidence import DEPTH_PARALLAX_FULL, clip_depth_evidence
from service.pipeline.terms.camera_words import parse_camera_words, plan_to_path
from service.pipeline.transforms import (
    OPENGL_TO_OPENCV,
    apply_sim3,
    interpolate_poses,
    invert_rigid,
    matrix_to_axis_angle,
    relative_to_first,
    rotation_angle_deg,
    rotation_geodesic_deg,
    umeyama_sim3,
)
from service.pipeline.types import Geometry, PipelineInputError
from service.schemas import TermResult, TermStatus, TrajectoryTarget

ROTATION_SIGMA_DEG = 5.0
TRANSLATION_SIGMA = 0.25  # mean error as a fraction of the target path length
STILL_SIGMA = 0.1  # translation as a fraction of the median scene depth
MIN_REGISTERED_FRACTION = 0.5
HAS_ROTATION_DEG = 0.5
ROUGHNESS_SIGMA = 0.3
# Motion below these per-step floors is pose noise, not a path (a still camera is smooth).
ROUGHNESS_FLOOR_TRANSLATION = 0.002  # fraction of the median scene depth
ROUGHNESS_FLOOR_ROTATION_RAD = math.radians(0.2)


class TargetPath:
    """A requested path sampled at the video's frame times."""

    def __init__(self, camera_to_world: Tensor, source: str, description: str,
                 has_translation: bool, has_rotation: bool) -> None:  # fmt: skip
        self.camera_to_world = camera_to_world  # [T,4,4] float64, OpenCV axes
        self.source = source  # "prompt" or "poses"
        self.description = description
        self.has_translation = has_translation
        self.has_rotation = has_rotation


def target_from_request(
    *, prompt: str | None, trajectory: TrajectoryTarget | None, times: Tensor  # times [T]
) -> TargetPath | None:
    """Explicit poses win over camera words; None when neither asks for a path."""
    if trajectory is not None:
        return _target_from_poses(trajectory, times)
    plan = parse_camera_words(prompt)
    if plan is None:
        return None
    return TargetPath(
        plan_to_path(plan, times),
        source="prompt",
        description=" -> ".join(plan.motions),
        has_translation=plan.has_translation,
        has_rotation=plan.has_rotation,
    )


def _target_from_poses(trajectory: TrajectoryTarget, times: Tensor) -> TargetPath:
    if trajectory.camera_to_world is not None:
        camera_to_world = torch.tensor(trajectory.camera_to_world, dtype=torch.float64)
    else:
        camera_to_world = invert_rigid(torch.tensor(trajectory.world_to_camera, dtype=torch.float64))
    if trajectory.convention == "opengl":
        camera_to_world = camera_to_world @ OPENGL_TO_OPENCV
    rotation = camera_to_world[:, :3, :3]
    orthogonality = (rotation @ rotation.transpose(1, 2) - torch.eye(3, dtype=torch.float64)).abs()
    if orthogonality.max() > 1e-3 or (torch.det(rotation) < 0).any():
        raise PipelineInputError("trajectory rotations must be proper rotations (orthonormal, det +1)")
    key_times = torch.linspace(0, 1, camera_to_world.shape[0], dtype=torch.float64)
    path = relative_to_first(interpolate_poses(camera_to_world, key_times, times))
    extent = path[:, :3, 3].norm(dim=-1).max()
    return TargetPath(
        path,
        source="poses",
        description=f"{camera_to_world.shape[0]} explicit poses",
        has_translation=bool(extent > 1e-9),
        has_rotation=bool(rotation_angle_deg(path[:, :3, :3]).max() > HAS_ROTATION_DEG),
    )


def not_applicable() -> TermResult:
    return TermResult(
        status=TermStatus.NOT_APPLICABLE,
        reason="no camera path requested (no explicit poses, no camera words in the prompt)",
    )


def path_roughness(camera_to_world: Tensor, depth_scale: float) -> tuple[float, float]:
    """How much a camera path zig-zags: (translation, rotation) roughness, each >= 0.

    camera_to_world: [T,4,4], frames in time order, OpenCV axes; depth_scale: the scene's
    median depth (same units as the translations), so the result is scale-free.
    Roughness = total change of velocity / (2 x total velocity): 0 for constant velocity, about
    1 for a path that jumps back and forth. Each step's floor (noise level) is added to the
    denominator, so a still camera's pose noise reads as smooth. Rotational velocity is the
    axis-angle of R[t+1] R[t]^T. Fewer than 3 frames: (0, 0).
    """
    if camera_to_world.shape[0] < 3:
        return 0.0, 0.0
    centres = camera_to_world[:, :3, 3].double() / max(depth_scale, 1e-12)  # [T,3]
    velocity = centres[1:] - centres[:-1]  # [T-1,3]
    change = (velocity[1:] - velocity[:-1]).norm(dim=-1).sum()
    floor = velocity.shape[0] * ROUGHNESS_FLOOR_TRANSLATION
    translation = float(change / (2 * velocity.norm(dim=-1).sum() + floor))
    rotations = camera_to_world[:, :3, :3].double()
    spin = matrix_to_axis_angle(rotations[1:] @ rotations[:-1].transpose(-1, -2))  # [T-1,3] rad
    change = (spin[1:] - spin[:-1]).norm(dim=-1).sum()
    floor = spin.shape[0] * ROUGHNESS_FLOOR_ROTATION_RAD
    rotation = float(change / (2 * spin.norm(dim=-1).sum() + floor))
    return translation, rotation


def smoothness_term(geometry: Geometry) -> TermResult:
    """The trajectory term when no path was requested and smoothness scoring is on."""
    registered = torch.nonzero(geometry.registered).flatten()
    num_frames = geometry.num_frames
    metrics = {"target_source": "none", "target": "no path requested: smoothness only",
               "frames_registered": int(registered.numel())}  # fmt: skip
    if registered.numel() < max(3, math.ceil(MIN_REGISTERED_FRACTION * num_frames)):
        return _path_not_followed(registered.numel(), num_frames, metrics)
    camera_to_world = invert_rigid(geometry.world_to_camera[registered])
    translation, rotation = path_roughness(camera_to_world, _median_depth(geometry, registered))
    roughness = max(translation, rotation)
    metrics.update(path_roughness=roughness, path_roughness_translation=translation,
                   path_roughness_rotation=rotation)  # fmt: skip
    score = math.exp(-((roughness / ROUGHNESS_SIGMA) ** 2))
    reason = "no camera path requested: scored on the smoothness of the estimated path"
    if score < 0.5:
        reason += f" (roughness {roughness:.2f}: the path zig-zags, as with shuffled or jittered frames)"
    return TermResult(score=score, status=TermStatus.OK, reason=reason, metrics=metrics)


def trajectory_term(geometry: Geometry, target: TargetPath) -> TermResult:
    registered = torch.nonzero(geometry.registered).flatten()
    num_frames = geometry.num_frames
    base_metrics = {"target_source": target.source, "target": target.description,
                    "frames_registered": int(registered.numel())}  # fmt: skip
    if registered.numel() < max(2, math.ceil(MIN_REGISTERED_FRACTION * num_frames)):
        return _path_not_followed(registered.numel(), num_frames, base_metrics)
    estimated = relative_to_first(invert_rigid(geometry.world_to_camera[registered]))
    wanted = relative_to_first(target.camera_to_world[registered])

    # Rotation: both paths start at the identity, so errors are directly comparable.
    rotation_errors = rotation_geodesic_deg(estimated[:, :3, :3], wanted[:, :3, :3])
    rotation_mean = float(rotation_errors.mean())
    rotation_final = float(rotation_errors[-1])
    rotation_score = math.exp(-(0.5 * rotation_mean + 0.5 * rotation_final) / ROTATION_SIGMA_DEG)

    depth_scale = _median_depth(geometry, registered)
    estimated_centres = estimated[:, :3, 3] / depth_scale
    wanted_centres = wanted[:, :3, 3]
    metrics = {
        **base_metrics,
        "rotation_error_mean_deg": rotation_mean,
        "rotation_error_final_deg": rotation_final,
        "rotation_extent_deg": float(rotation_angle_deg(estimated[:, :3, :3]).max()),
        "target_rotation_extent_deg": float(rotation_angle_deg(wanted[:, :3, :3]).max()),
        "translation_extent_rel_depth": float(estimated_centres.norm(dim=-1).max()),
        "rotation_score": rotation_score,
        # Reported, not scored, when a path is requested (the target already judges the path).
        # Roughness only sees steps between poses, so re-expressing them from the first is harmless.
        "path_roughness": max(path_roughness(estimated, depth_scale)),
    }
    if target.has_translation:
        path_length = float((wanted_centres[1:] - wanted_centres[:-1]).norm(dim=-1).sum())
        dot = float((estimated_centres * wanted_centres).sum())
        energy = float((estimated_centres**2).sum())
        scale = max(0.0, dot / energy) if energy > 1e-18 else 0.0
        error = float((scale * estimated_centres - wanted_centres).norm(dim=-1).mean())
        relative_error = error / max(path_length, 1e-12)
        translation_score = math.exp(-relative_error / TRANSLATION_SIGMA)
        norm = math.sqrt(energy) * float(wanted_centres.norm())
        metrics["direction_cosine"] = dot / norm if norm > 1e-18 else 0.0
        metrics["translation_error_rel_path"] = relative_error
        metrics["ate_sim3_rel_path"] = _sim3_ate(estimated_centres, wanted_centres, path_length)
    else:
        translation_score = math.exp(-metrics["translation_extent_rel_depth"] / STILL_SIGMA)
    metrics["translation_score"] = translation_score

    weight_t = 0.2 + 0.6 * target.has_translation
    weight_r = 0.2 + 0.6 * target.has_rotation
    score = (weight_t * translation_score + weight_r * rotation_score) / (weight_t + weight_r)
    metrics["translation_weight"] = weight_t / (weight_t + weight_r)
    reason = None
    if target.has_translation:
        # A translation is only checkable where depth is observable (evidence.py): a flat
        # picture sliding has a camera path too, and must not be paid for following it.
        height, width = geometry.depth.shape[1:]
        depth_evidence = clip_depth_evidence(geometry, DEPTH_PARALLAX_FULL * max(height, width))
        metrics["depth_evidence"] = depth_evidence
        score *= depth_evidence
        if depth_evidence < 0.5:
            reason = (f"depth is barely observable (3D evidence {depth_evidence:.2f}): "
                      "a homography explains the views, so the requested translation cannot be "
                      "confirmed")  # fmt: skip
    if registered.numel() < num_frames:
        note = f"scored on the {registered.numel()} of {num_frames} frames that registered"
        reason = f"{reason}; {note}" if reason else note
    return TermResult(score=min(1.0, max(0.0, score)), status=TermStatus.OK, reason=reason,
                      metrics=metrics)  # fmt: skip


def _path_not_followed(registered: int, num_frames: int, metrics: dict) -> TermResult:
    return TermResult(score=0.0, status=TermStatus.OK, metrics=metrics,
                      reason=f"the camera path could not be followed: {registered} of "
                      f"{num_frames} frames registered")  # fmt: skip


def _median_depth(geometry: Geometry, frames: Tensor) -> float:
    depth = geometry.depth[frames]
    positive = depth[depth > 0]
    if positive.numel() == 0:
        return 1.0
    # Subsample before the median: exact, deterministic, and cheap on large clips.
    step = max(1, positive.numel() // 200_000)
    return float(positive[::step].double().median())


def _sim3_ate(estimated: Tensor, wanted: Tensor, path_length: float) -> float | None:
    """Mean centre error after a full Umeyama Sim(3) fit, as a fraction of the path length."""
    if estimated.shape[0] < 3:
        return None
    scale, rotation, translation = umeyama_sim3(estimated, wanted)
    aligned = apply_sim3(scale, rotation, translation, estimated)
    return float((aligned - wanted).norm(dim=-1).mean()) / max(path_length, 1e-12)

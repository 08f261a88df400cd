"""Novel viewpoints off the estimated camera path, for the plausibility judge (pure functions).

A reconstruction can re-render its own input views well and still be a flat card or a smear
in 3D; views *near but off* the path reveal that. The recipe, deterministic, first K taken:

    interpolated_mid    halfway between the two middle frames (a time no frame was taken at)
    orbit_left/right    the middle camera orbited +-ORBIT_DEG around the scene centre
    extrapolated_end    the path continued past the last frame by EXTRAPOLATE of its last leg
    extrapolated_start  the same before the first frame
    interpolated_q1/q3  between the frames at 1/4 and 3/4 of the clip
    orbit_left2/right2  +-2 ORBIT_DEG

Nothing here favours one camera motion over another: every view stays within a few degrees
of a real camera. Conventions: docs/conventions.md (OpenCV axes, world_to_camera 4x4).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from service.pipeline.transforms import (
    axis_angle_to_matrix,
    interpolate_poses,
    invert_rigid,
    make_rigid,
    matrix_to_axis_angle,
    unproject_depth,
)

ORBIT_DEG = 8.0
EXTRAPOLATE = 0.15  # fraction of the path's last (first) leg continued past its end
CENTRE_SAMPLES = 4096  # pixels per frame used for the scene centre
MIN_CONFIDENCE = 0.5


@dataclass(frozen=True)
class NovelView:
    name: str
    world_to_camera: Tensor  # [4,4] float64
    intrinsics: Tensor  # [3,3] float64 pixels at the working resolution


def scene_centre(
    depth: Tensor,  # [T,H,W] z-depth, 0 = unknown
    confidence: Tensor,  # [T,H,W] in [0,1]
    world_to_camera: Tensor,  # [T,4,4]
    intrinsics: Tensor,  # [T,3,3]
) -> Tensor:  # [3] float64 world point
    """Median (per axis) of confidently reconstructed points on a regular pixel subsample:
    robust to floaters and sky. Falls back to a point at the median depth ahead of the middle
    camera when nothing is confident."""
    num_frames, height, width = depth.shape
    step = max(1, int(math.sqrt(height * width / CENTRE_SAMPLES)))
    camera_to_world = invert_rigid(world_to_camera.to(torch.float64))
    points = []
    for t in range(num_frames):
        d = depth[t].to(torch.float64)
        world = unproject_depth(d, intrinsics[t].to(torch.float64), camera_to_world[t])
        keep = (d > 0) & (confidence[t] >= MIN_CONFIDENCE) & torch.isfinite(world).all(-1)
        points.append(world[::step, ::step][keep[::step, ::step]])
    points = torch.cat(points)
    if points.shape[0] > 0:
        return points.median(dim=0).values
    middle = num_frames // 2
    positive = depth[depth > 0]
    distance = float(positive.median()) if positive.numel() else 1.0
    ahead = torch.tensor([0.0, 0.0, distance], dtype=torch.float64)
    return camera_to_world[middle, :3, :3] @ ahead + camera_to_world[middle, :3, 3]


def pose_between(camera_to_world: Tensor, position: float) -> Tensor:
    """camera_to_world [T,4,4] -> the pose [4,4] at fractional frame index ``position``
    (linear centre, slerped rotation)."""
    count = camera_to_world.shape[0]
    times = torch.arange(count, dtype=torch.float64)
    return interpolate_poses(camera_to_world, times, torch.tensor([position], dtype=torch.float64))[0]


def extrapolate(camera_to_world: Tensor, *, at_end: bool, fraction: float = EXTRAPOLATE) -> Tensor:
    """Continue the path past its last (or before its first) frame: apply ``fraction`` of the
    relative motion between the two frames at that end once more. [T,4,4] -> [4,4]."""
    if at_end:
        before, end = camera_to_world[-2], camera_to_world[-1]
    else:
        before, end = camera_to_world[1], camera_to_world[0]
    relative = invert_rigid(before) @ end  # the leg, in the `before` camera's frame
    rotation = axis_angle_to_matrix(fraction * matrix_to_axis_angle(relative[:3, :3]))
    step = make_rigid(rotation, fraction * relative[:3, 3])
    return end @ step


def orbit(camera_to_world: Tensor, centre: Tensor, angle_deg: float) -> Tensor:
    """Rotate a camera [4,4] by ``angle_deg`` about the axis through ``centre`` [3] along the
    camera's own up direction (-y): the camera moves sideways on a circle around the centre
    and turns with it, so the centre stays where it was in the image. Positive = to the left."""
    up = -camera_to_world[:3, 1]
    # A positive turn about `up` carries the camera to its right, hence the minus sign.
    rotation = axis_angle_to_matrix(-math.radians(angle_deg) * up)
    moved = camera_to_world.clone()
    moved[:3, :3] = rotation @ camera_to_world[:3, :3]
    moved[:3, 3] = rotation @ (camera_to_world[:3, 3] - centre) + centre
    return moved


def novel_views(
    world_to_camera: Tensor,  # [T,4,4]
    intrinsics: Tensor,  # [T,3,3]
    centre: Tensor,  # [3] world
    *,
    count: int,
) -> list[NovelView]:
    """The first ``count`` views of the recipe in the module docstring."""
    camera_to_world = invert_rigid(world_to_camera.to(torch.float64))
    last = camera_to_world.shape[0] - 1
    if last < 1:
        raise ValueError("novel views need at least 2 frames")

    def between(position: float) -> tuple[Tensor, Tensor]:
        """Halfway between two frames (a time no frame was taken at), nearest intrinsics."""
        position = min(position, last - 0.5)
        return pose_between(camera_to_world, position), intrinsics[round(position - 0.01)]

    middle, middle_k = camera_to_world[last // 2], intrinsics[last // 2]
    recipe: list[tuple[str, tuple[Tensor, Tensor]]] = [
        ("interpolated_mid", between(last // 2 + 0.5)),
        ("orbit_left", (orbit(middle, centre, ORBIT_DEG), middle_k)),
        ("orbit_right", (orbit(middle, centre, -ORBIT_DEG), middle_k)),
        ("extrapolated_end", (extrapolate(camera_to_world, at_end=True), intrinsics[-1])),
        ("extrapolated_start", (extrapolate(camera_to_world, at_end=False), intrinsics[0])),
        ("interpolated_q1", between(last // 4 + 0.5)),
        ("interpolated_q3", between((3 * last) // 4 + 0.5)),
        ("orbit_left2", (orbit(middle, centre, 2 * ORBIT_DEG), middle_k)),
        ("orbit_right2", (orbit(middle, centre, -2 * ORBIT_DEG), middle_k)),
    ]
    if not 1 <= count <= len(recipe):
        raise ValueError(f"between 1 and {len(recipe)} novel views, got {count}")
    return [
        NovelView(name, invert_rigid(pose), k.to(torch.float64).clone())
        for name, (pose, k) in recipe[:count]
    ]

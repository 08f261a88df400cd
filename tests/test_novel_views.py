"""Novel-view cameras for the plausibility judge (pure functions, on tensors)."""

from __future__ import annotations

import math

import pytest
import torch

from service.pipeline.render.novel_views import (
    extrapolate,
    novel_views,
    orbit,
    pose_between,
    scene_centre,
)
from service.pipeline.transforms import (
    axis_angle_to_matrix,
    camera_centers,
    invert_rigid,
    make_rigid,
    project_points,
    rotation_geodesic_deg,
)

K = torch.tensor([[60.0, 0, 40], [0, 60.0, 24], [0, 0, 1]], dtype=torch.float64)


def straight_path(count=5) -> torch.Tensor:
    """camera_to_world [T,4,4]: moving along +x by 0.1 and yawing 2 degrees per frame."""
    poses = []
    for t in range(count):
        rotation = axis_angle_to_matrix(torch.tensor([0.0, math.radians(2 * t), 0.0], dtype=torch.float64))
        poses.append(make_rigid(rotation, torch.tensor([0.1 * t, 0.0, 0.0], dtype=torch.float64)))
    return torch.stack(poses)


def test_orbit_keeps_the_centre_in_place_and_moves_left():
    camera_to_world = straight_path()[2]
    centre = camera_to_world[:3, :3] @ torch.tensor([0.2, -0.1, 3.0], dtype=torch.float64) + camera_to_world[:3, 3]
    moved = orbit(camera_to_world, centre, 8.0)
    before, _ = project_points(centre[None], invert_rigid(camera_to_world), K)
    after, _ = project_points(centre[None], invert_rigid(moved), K)
    assert torch.allclose(before, after, atol=1e-9)
    step_camera = invert_rigid(camera_to_world)[:3, :3] @ (moved[:3, 3] - camera_to_world[:3, 3])
    assert step_camera[0] < 0  # towards the camera's -x: left
    angle = rotation_geodesic_deg(moved[None, :3, :3], camera_to_world[None, :3, :3])
    assert float(angle) == pytest.approx(8.0)
    distance_before = (camera_to_world[:3, 3] - centre).norm()
    assert float((moved[:3, 3] - centre).norm()) == pytest.approx(float(distance_before))


def test_extrapolation_continues_the_path():
    # A constant screw motion: each frame = previous frame @ step (move 0.1 along x, yaw 2 deg).
    step = make_rigid(axis_angle_to_matrix(torch.tensor([0.0, math.radians(2), 0.0], dtype=torch.float64)),
                      torch.tensor([0.1, 0.0, 0.0], dtype=torch.float64))  # fmt: skip
    path = [torch.eye(4, dtype=torch.float64)]
    for _ in range(4):
        path.append(path[-1] @ step)
    path = torch.stack(path)
    assert torch.allclose(extrapolate(path, at_end=True, fraction=1.0), path[-1] @ step, atol=1e-12)
    assert torch.allclose(extrapolate(path, at_end=False, fraction=1.0), invert_rigid(step), atol=1e-12)
    half = invert_rigid(path[-1]) @ extrapolate(path, at_end=True, fraction=0.5)
    assert float(half[:3, 3].norm()) == pytest.approx(0.05)
    assert float(rotation_geodesic_deg(half[None, :3, :3], torch.eye(3, dtype=torch.float64)[None])) == pytest.approx(1.0)


def test_interpolated_view_lies_between_frames():
    path = straight_path()
    middle = pose_between(path, 1.5)
    assert torch.allclose(middle[:3, 3], torch.tensor([0.15, 0.0, 0.0], dtype=torch.float64))


def test_novel_views_recipe():
    world_to_camera = invert_rigid(straight_path(6))
    intrinsics = K.expand(6, 3, 3)
    centre = torch.tensor([0.25, 0.0, 3.0], dtype=torch.float64)
    views = novel_views(world_to_camera, intrinsics, centre, count=9)
    names = [v.name for v in views]
    assert names[:5] == ["interpolated_mid", "orbit_left", "orbit_right", "extrapolated_end",
                         "extrapolated_start"]  # fmt: skip
    centres = camera_centers(torch.stack([v.world_to_camera for v in views]))
    frame_centres = camera_centers(world_to_camera)
    assert not any(torch.allclose(c, f) for c in centres for f in frame_centres)  # all off-path
    assert float(centres[0, 0]) == pytest.approx(0.25)  # halfway between frames 2 and 3
    with pytest.raises(ValueError):
        novel_views(world_to_camera, intrinsics, centre, count=10)


def test_scene_centre_is_the_median_of_confident_points():
    depth = torch.full((2, 24, 40), 4.0)
    confidence = torch.ones(2, 24, 40)
    confidence[1] = 0.0  # the second frame is not trusted
    world_to_camera = torch.eye(4, dtype=torch.float64).repeat(2, 1, 1)
    world_to_camera[1, 0, 3] = 100.0
    intrinsics = torch.tensor([[30.0, 0, 20], [0, 30.0, 12], [0, 0, 1]], dtype=torch.float64).expand(2, 3, 3)
    centre = scene_centre(depth, confidence, world_to_camera, intrinsics)
    assert torch.allclose(centre, torch.tensor([0.0, 0.0, 4.0], dtype=torch.float64), atol=0.1)
    # Nothing confident: the median depth straight ahead of the middle camera (frame 1 here).
    fallback = scene_centre(depth, torch.zeros_like(confidence), world_to_camera, intrinsics)
    assert torch.allclose(fallback, torch.tensor([-100.0, 0.0, 4.0], dtype=torch.float64))

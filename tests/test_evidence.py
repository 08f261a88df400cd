"""The reconstruction term's evidence factor: parallax measured from the geometry alone."""

import math

import torch

from service.pipeline.terms.reconstruction import frame_parallax_px
from service.pipeline.transforms import make_rigid, rotation_about_y
from service.pipeline.types import Geometry

HEIGHT, WIDTH, FOCAL = 60, 80, 100.0


def geometry_with(world_to_camera: torch.Tensor, depth_value: float = 2.0) -> Geometry:
    num = world_to_camera.shape[0]
    intrinsics = torch.tensor([[FOCAL, 0, WIDTH / 2], [0, FOCAL, HEIGHT / 2], [0, 0, 1.0]],
                              dtype=torch.float64).expand(num, 3, 3).clone()  # fmt: skip
    return Geometry(
        depth=torch.full((num, HEIGHT, WIDTH), depth_value),
        confidence=torch.ones(num, HEIGHT, WIDTH),
        world_to_camera=world_to_camera.to(torch.float64),
        intrinsics=intrinsics,
        registered=torch.ones(num, dtype=torch.bool),
        backend="test",
    )


def test_a_camera_turning_in_place_has_no_parallax():
    rotations = torch.stack([rotation_about_y(math.radians(a)) for a in (0.0, 5.0, 10.0)])
    geometry = geometry_with(make_rigid(rotations, torch.zeros(3, 3, dtype=torch.float64)))
    assert frame_parallax_px(geometry, 1, [0, 2]) < 1e-6


def test_sideways_translation_gives_focal_times_baseline_over_depth():
    baseline, depth = 0.1, 2.0
    translations = torch.tensor([[0.0, 0, 0], [-baseline, 0, 0]], dtype=torch.float64)
    eye = torch.eye(3, dtype=torch.float64).expand(2, 3, 3)
    geometry = geometry_with(make_rigid(eye, translations), depth_value=depth)
    assert abs(frame_parallax_px(geometry, 0, [1]) - FOCAL * baseline / depth) < 1e-6
    # Invariant to a global scale of the scene (depth and translations together).
    scaled = geometry_with(make_rigid(eye, 3 * translations), depth_value=3 * depth)
    assert abs(frame_parallax_px(scaled, 0, [1]) - FOCAL * baseline / depth) < 1e-6
    assert frame_parallax_px(geometry, 0, []) == 0.0

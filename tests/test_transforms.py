"""Camera maths: conventions and closed-form alignment."""

import math

import pytest
import torch

from service.pipeline import transforms as tf


def random_rotation(generator: torch.Generator) -> torch.Tensor:
    return tf.axis_angle_to_matrix(torch.randn(3, generator=generator, dtype=torch.float64))


def test_point_in_front_lands_where_the_pinhole_model_says():
    # OpenCV: +x right, +y down, +z forward; pixel centres at +0.5.
    intrinsics = torch.tensor([[100.0, 0, 64], [0, 100.0, 48], [0, 0, 1]], dtype=torch.float64)
    world_to_camera = torch.eye(4, dtype=torch.float64)
    points = torch.tensor([[0.0, 0, 2], [0.2, 0, 2], [0, 0.2, 2]], dtype=torch.float64)
    uv, depth = tf.project_points(points, world_to_camera, intrinsics)
    assert torch.allclose(uv[0], torch.tensor([64.0, 48.0], dtype=torch.float64))
    assert uv[1, 0] > 64 and uv[1, 1] == pytest.approx(48)  # +x -> right
    assert uv[2, 1] > 48 and uv[2, 0] == pytest.approx(64)  # +y -> down
    assert torch.allclose(depth, torch.full((3,), 2.0, dtype=torch.float64))


def test_unproject_then_project_is_identity():
    g = torch.Generator().manual_seed(0)
    intrinsics = torch.tensor([[80.0, 0, 33], [0, 82.0, 21], [0, 0, 1]], dtype=torch.float64)
    world_to_camera = tf.make_rigid(random_rotation(g), torch.randn(3, generator=g, dtype=torch.float64))
    depth = torch.rand(6, 9, generator=g, dtype=torch.float64) + 1
    points = tf.unproject_depth(depth, intrinsics, tf.invert_rigid(world_to_camera))
    uv, z = tf.project_points(points.reshape(-1, 3), world_to_camera, intrinsics)
    assert torch.allclose(uv.reshape(6, 9, 2), tf.pixel_grid(6, 9, dtype=torch.float64), atol=1e-9)
    assert torch.allclose(z.reshape(6, 9), depth, atol=1e-12)


def test_invert_rigid_and_camera_centres():
    g = torch.Generator().manual_seed(1)
    world_to_camera = tf.make_rigid(random_rotation(g), torch.randn(3, generator=g, dtype=torch.float64))
    assert torch.allclose(world_to_camera @ tf.invert_rigid(world_to_camera), torch.eye(4, dtype=torch.float64))
    centre = tf.camera_centers(world_to_camera)
    # The centre maps to the camera origin.
    assert torch.allclose(tf.transform_points(world_to_camera, centre[None])[0], torch.zeros(3, dtype=torch.float64), atol=1e-12)


def test_quaternion_round_trip_and_rotation_angle():
    g = torch.Generator().manual_seed(2)
    rotations = torch.stack([random_rotation(g) for _ in range(50)])
    quats = tf.matrix_to_quat_wxyz(rotations)
    assert torch.allclose(tf.quat_wxyz_to_matrix(quats), rotations, atol=1e-9)
    angle = tf.rotation_angle_deg(tf.rotation_about_y(math.radians(30)))
    assert float(angle) == pytest.approx(30.0, abs=1e-9)
    assert float(tf.rotation_angle_deg(tf.rotation_about_x(math.radians(179.9)))) == pytest.approx(179.9, abs=1e-6)


def test_yaw_and_pitch_directions_follow_opencv_axes():
    forward = torch.tensor([0.0, 0, 1], dtype=torch.float64)
    assert (tf.rotation_about_y(0.3) @ forward)[0] > 0  # +y rotation turns the view right (+x)
    assert (tf.rotation_about_x(0.3) @ forward)[1] < 0  # +x rotation turns the view up (-y)


def test_umeyama_recovers_a_known_similarity_exactly():
    g = torch.Generator().manual_seed(3)
    source = torch.randn(20, 3, generator=g, dtype=torch.float64)
    rotation = random_rotation(g)
    target = 2.5 * source @ rotation.T + torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64)
    scale, r, t = tf.umeyama_sim3(source, target)
    assert float(scale) == pytest.approx(2.5, abs=1e-10)
    assert torch.allclose(r, rotation, atol=1e-10)
    assert torch.allclose(tf.apply_sim3(scale, r, t, source), target, atol=1e-10)


def test_umeyama_is_deterministic_and_handles_degenerate_input():
    g = torch.Generator().manual_seed(4)
    source = torch.randn(10, 3, generator=g, dtype=torch.float64)
    target = torch.randn(10, 3, generator=g, dtype=torch.float64)
    first = tf.umeyama_sim3(source, target)
    second = tf.umeyama_sim3(source.clone(), target.clone())
    assert all(torch.equal(a, b) for a, b in zip(first, second))
    scale, rotation, _ = tf.umeyama_sim3(torch.ones(5, 3), torch.randn(5, 3))
    assert float(scale) == 0.0 and torch.equal(rotation, torch.eye(3, dtype=torch.float64))
    with pytest.raises(ValueError):
        tf.umeyama_sim3(torch.ones(5, 3), torch.ones(4, 3))


def test_interpolate_poses_hits_keyframes_and_midpoints():
    poses = torch.stack([
        tf.make_rigid(torch.eye(3, dtype=torch.float64), torch.zeros(3, dtype=torch.float64)),
        tf.make_rigid(tf.rotation_about_y(math.radians(40)), torch.tensor([2.0, 0, 0], dtype=torch.float64)),
    ])
    times = torch.tensor([0.0, 1.0], dtype=torch.float64)
    out = tf.interpolate_poses(poses, times, torch.tensor([0.0, 0.5, 1.0, 1.5]))
    assert torch.allclose(out[0], poses[0]) and torch.allclose(out[2], poses[1], atol=1e-12)
    assert torch.allclose(out[3], poses[1], atol=1e-12)  # clamped beyond the end
    assert float(tf.rotation_angle_deg(out[1, :3, :3])) == pytest.approx(20.0, abs=1e-9)
    assert torch.allclose(out[1, :3, 3], torch.tensor([1.0, 0, 0], dtype=torch.float64))

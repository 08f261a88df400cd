"""Pure camera maths on tensors (no I/O, no models). Conventions: docs/conventions.md.

OpenCV camera axes (x right, y down, z forward). ``world_to_camera`` maps world points into the
camera frame: ``points_camera = R @ points_world + t``. Pixel (row i, column j) has its centre
at ``u = j + 0.5, v = i + 0.5``. Quaternions are wxyz. Work is done in float64 where precision
matters (alignment, rotations) and returned in the input dtype otherwise.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

OPENGL_TO_OPENCV = torch.diag(torch.tensor([1.0, -1.0, -1.0, 1.0], dtype=torch.float64))


def invert_rigid(transform: Tensor) -> Tensor:
    """Inverse of rigid 4x4 transforms [...,4,4] (world_to_camera <-> camera_to_world)."""
    rotation = transform[..., :3, :3]
    translation = transform[..., :3, 3:]
    inverse = torch.zeros_like(transform)
    rotation_t = rotation.transpose(-1, -2)
    inverse[..., :3, :3] = rotation_t
    inverse[..., :3, 3:] = -rotation_t @ translation
    inverse[..., 3, 3] = 1.0
    return inverse


def make_rigid(rotation: Tensor, translation: Tensor) -> Tensor:
    """4x4 transforms [...,4,4] from rotations [...,3,3] and translations [...,3]."""
    out = torch.zeros(rotation.shape[:-2] + (4, 4), dtype=rotation.dtype, device=rotation.device)
    out[..., :3, :3] = rotation
    out[..., :3, 3] = translation
    out[..., 3, 3] = 1.0
    return out


def camera_centers(world_to_camera: Tensor) -> Tensor:
    """Camera centres in world coordinates [...,3] from world_to_camera [...,4,4]."""
    rotation = world_to_camera[..., :3, :3]
    translation = world_to_camera[..., :3, 3:]
    return (-rotation.transpose(-1, -2) @ translation)[..., 0]


def transform_points(transform: Tensor, points: Tensor) -> Tensor:
    """Apply a 4x4 transform [4,4] to points [...,3]."""
    return points @ transform[:3, :3].transpose(0, 1) + transform[:3, 3]


def project_points(
    points_world: Tensor,  # [N,3]
    world_to_camera: Tensor,  # [4,4]
    intrinsics: Tensor,  # [3,3] pixels
) -> tuple[Tensor, Tensor]:
    """Pinhole projection. Returns pixels_uv [N,2] (u right, v down, pixels) and z-depth [N]."""
    points_camera = transform_points(world_to_camera.to(points_world.dtype), points_world)
    depth = points_camera[:, 2]
    k = intrinsics.to(points_world.dtype)
    safe_depth = torch.where(depth.abs() < 1e-12, torch.full_like(depth, 1e-12), depth)
    u = k[0, 0] * points_camera[:, 0] / safe_depth + k[0, 2]
    v = k[1, 1] * points_camera[:, 1] / safe_depth + k[1, 2]
    return torch.stack([u, v], dim=-1), depth


def pixel_grid(height: int, width: int, dtype=torch.float32, device=None) -> Tensor:
    """Pixel-centre coordinates [H,W,2] as (u, v) = (j + 0.5, i + 0.5)."""
    v, u = torch.meshgrid(
        torch.arange(height, dtype=dtype, device=device) + 0.5,
        torch.arange(width, dtype=dtype, device=device) + 0.5,
        indexing="ij",
    )
    return torch.stack([u, v], dim=-1)


def unproject_depth(
    depth: Tensor,  # [H,W] z-depth
    intrinsics: Tensor,  # [3,3] pixels
    camera_to_world: Tensor,  # [4,4]
) -> Tensor:
    """World points [H,W,3] of every pixel centre at its z-depth."""
    height, width = depth.shape
    uv = pixel_grid(height, width, dtype=depth.dtype, device=depth.device)
    k = intrinsics.to(depth.dtype)
    x = (uv[..., 0] - k[0, 2]) / k[0, 0] * depth
    y = (uv[..., 1] - k[1, 2]) / k[1, 1] * depth
    points_camera = torch.stack([x, y, depth], dim=-1)
    return transform_points(camera_to_world.to(depth.dtype), points_camera)


def rotation_about_x(angle_rad: float | Tensor) -> Tensor:
    """[3,3] rotation about +x (OpenCV: positive angle turns the z axis towards -y, i.e. up)."""
    a = torch.as_tensor(angle_rad, dtype=torch.float64)
    c, s = torch.cos(a), torch.sin(a)
    one, zero = torch.ones_like(a), torch.zeros_like(a)
    return torch.stack(
        [torch.stack([one, zero, zero]), torch.stack([zero, c, -s]), torch.stack([zero, s, c])]
    )


def rotation_about_y(angle_rad: float | Tensor) -> Tensor:
    """[3,3] rotation about +y (OpenCV: positive angle turns the z axis towards +x, i.e. right)."""
    a = torch.as_tensor(angle_rad, dtype=torch.float64)
    c, s = torch.cos(a), torch.sin(a)
    one, zero = torch.ones_like(a), torch.zeros_like(a)
    return torch.stack(
        [torch.stack([c, zero, s]), torch.stack([zero, one, zero]), torch.stack([-s, zero, c])]
    )


def axis_angle_to_matrix(axis_angle: Tensor) -> Tensor:
    """Rodrigues: rotation vectors [...,3] (radians) -> rotations [...,3,3]."""
    angle = axis_angle.norm(dim=-1, keepdim=True)
    axis = axis_angle / angle.clamp_min(1e-12)
    x, y, z = axis.unbind(-1)
    zero = torch.zeros_like(x)
    skew = torch.stack([zero, -z, y, z, zero, -x, -y, x, zero], dim=-1).reshape(
        axis_angle.shape[:-1] + (3, 3)
    )
    eye = torch.eye(3, dtype=axis_angle.dtype, device=axis_angle.device).expand_as(skew)
    s = torch.sin(angle)[..., None]
    c = torch.cos(angle)[..., None]
    return eye + s * skew + (1 - c) * (skew @ skew)


def matrix_to_axis_angle(rotation: Tensor) -> Tensor:
    """Rotations [...,3,3] -> rotation vectors [...,3] (radians), via quaternions (stable at pi)."""
    quat = matrix_to_quat_wxyz(rotation)
    quat = torch.where(quat[..., :1] < 0, -quat, quat)
    sin_half = quat[..., 1:].norm(dim=-1, keepdim=True)
    angle = 2 * torch.atan2(sin_half, quat[..., :1])
    return quat[..., 1:] / sin_half.clamp_min(1e-12) * angle


def quat_wxyz_to_matrix(quat: Tensor) -> Tensor:
    """Unit quaternions [...,4] (wxyz) -> rotations [...,3,3]."""
    q = quat / quat.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    w, x, y, z = q.unbind(-1)
    rows = [
        1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y),
        2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x),
        2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y),
    ]  # fmt: skip
    return torch.stack(rows, dim=-1).reshape(quat.shape[:-1] + (3, 3))


def matrix_to_quat_wxyz(rotation: Tensor) -> Tensor:
    """Rotations [...,3,3] -> unit quaternions [...,4] (wxyz), branch-free and stable."""
    m = rotation
    m00, m11, m22 = m[..., 0, 0], m[..., 1, 1], m[..., 2, 2]
    # Four candidate magnitudes; take the largest to avoid dividing by a tiny number.
    candidates = torch.stack(
        [1 + m00 + m11 + m22, 1 + m00 - m11 - m22, 1 - m00 + m11 - m22, 1 - m00 - m11 + m22], -1
    )
    best = candidates.argmax(dim=-1)
    r = torch.sqrt(candidates.clamp_min(1e-12))  # = 2|q_k| for the k-th component
    quats = torch.stack(
        [
            torch.stack([r[..., 0] ** 2, m[..., 2, 1] - m[..., 1, 2],
                         m[..., 0, 2] - m[..., 2, 0], m[..., 1, 0] - m[..., 0, 1]], -1)
            / (2 * r[..., 0:1]),
            torch.stack([m[..., 2, 1] - m[..., 1, 2], r[..., 1] ** 2,
                         m[..., 1, 0] + m[..., 0, 1], m[..., 0, 2] + m[..., 2, 0]], -1)
            / (2 * r[..., 1:2]),
            torch.stack([m[..., 0, 2] - m[..., 2, 0], m[..., 1, 0] + m[..., 0, 1],
                         r[..., 2] ** 2, m[..., 2, 1] + m[..., 1, 2]], -1)
            / (2 * r[..., 2:3]),
            torch.stack([m[..., 1, 0] - m[..., 0, 1], m[..., 0, 2] + m[..., 2, 0],
                         m[..., 2, 1] + m[..., 1, 2], r[..., 3] ** 2], -1)
            / (2 * r[..., 3:4]),
        ],
        dim=-2,
    )  # fmt: skip
    quat = torch.gather(quats, -2, best[..., None, None].expand(best.shape + (1, 4)))[..., 0, :]
    return quat / quat.norm(dim=-1, keepdim=True)


def rotation_angle_deg(rotation: Tensor) -> Tensor:
    """Angle of rotations [...,3,3] in degrees, in [0, 180]."""
    trace = rotation[..., 0, 0] + rotation[..., 1, 1] + rotation[..., 2, 2]
    cos = ((trace - 1) / 2).clamp(-1.0, 1.0)
    # acos is ill-conditioned near 0 and 180 degrees: use atan2 of the skew part instead.
    skew = torch.stack(
        [
            rotation[..., 2, 1] - rotation[..., 1, 2],
            rotation[..., 0, 2] - rotation[..., 2, 0],
            rotation[..., 1, 0] - rotation[..., 0, 1],
        ],
        dim=-1,
    )
    sin = skew.norm(dim=-1) / 2
    return torch.rad2deg(torch.atan2(sin, cos))


def rotation_geodesic_deg(rotation_a: Tensor, rotation_b: Tensor) -> Tensor:
    """Geodesic distance between rotations [...,3,3], degrees."""
    return rotation_angle_deg(rotation_a.transpose(-1, -2) @ rotation_b)


def umeyama_sim3(
    source: Tensor,  # [N,3]
    target: Tensor,  # [N,3]
    *,
    with_scale: bool = True,
) -> tuple[Tensor, Tensor, Tensor]:
    """Least-squares similarity with ``target ~= scale * rotation @ source + translation``.

    Closed form (Umeyama 1991), float64, deterministic: no sampling, no RANSAC. Returns
    (scale [], rotation [3,3], translation [3]). Degenerate inputs (all source points equal)
    give scale 0 and the identity rotation.
    """
    if source.shape != target.shape or source.ndim != 2 or source.shape[1] != 3:
        raise ValueError(f"expected two [N,3] point sets, got {source.shape} and {target.shape}")
    src = source.to(torch.float64)
    dst = target.to(torch.float64)
    n = src.shape[0]
    mean_src, mean_dst = src.mean(0), dst.mean(0)
    src_c, dst_c = src - mean_src, dst - mean_dst
    variance_src = (src_c**2).sum() / n
    if variance_src < 1e-24:
        eye = torch.eye(3, dtype=torch.float64)
        return torch.tensor(0.0, dtype=torch.float64), eye, mean_dst.clone()
    covariance = dst_c.T @ src_c / n
    u, singular, vh = torch.linalg.svd(covariance)
    sign = torch.ones(3, dtype=torch.float64)
    if torch.det(u) * torch.det(vh) < 0:
        sign[2] = -1.0
    rotation = u @ torch.diag(sign) @ vh
    scale = (singular * sign).sum() / variance_src if with_scale else torch.tensor(1.0).double()
    translation = mean_dst - scale * rotation @ mean_src
    return scale, rotation, translation


def apply_sim3(scale: Tensor, rotation: Tensor, translation: Tensor, points: Tensor) -> Tensor:
    """``scale * rotation @ p + translation`` for points [...,3]."""
    return scale * points.to(torch.float64) @ rotation.T + translation


def slerp_rotations(rotation_a: Tensor, rotation_b: Tensor, weight: Tensor) -> Tensor:
    """Spherical interpolation between rotations [...,3,3] with weight [...] in [0,1]."""
    delta = matrix_to_axis_angle(rotation_a.transpose(-1, -2) @ rotation_b)
    return rotation_a @ axis_angle_to_matrix(delta * weight[..., None])


def interpolate_poses(
    camera_to_world: Tensor,  # [N,4,4]
    times: Tensor,  # [N] increasing
    query_times: Tensor,  # [M]
) -> Tensor:
    """Poses [M,4,4] at query_times: linear centres, slerped rotations, clamped at the ends."""
    times = times.to(torch.float64)
    query = query_times.to(torch.float64).clamp(times[0], times[-1])
    upper = torch.searchsorted(times, query, right=True).clamp(1, len(times) - 1)
    lower = upper - 1
    span = (times[upper] - times[lower]).clamp_min(1e-12)
    weight = ((query - times[lower]) / span).clamp(0, 1)
    poses = camera_to_world.to(torch.float64)
    rotation = slerp_rotations(poses[lower, :3, :3], poses[upper, :3, :3], weight)
    centre = poses[lower, :3, 3] + weight[:, None] * (poses[upper, :3, 3] - poses[lower, :3, 3])
    return make_rigid(rotation, centre)


def relative_to_first(camera_to_world: Tensor) -> Tensor:
    """Re-express a path [T,4,4] in the first camera's frame (the first pose becomes identity)."""
    first_inverse = invert_rigid(camera_to_world[0])
    return first_inverse @ camera_to_world


def fov_to_focal(fov_deg: float, size_px: int) -> float:
    """Focal length in pixels for a field of view (degrees) across ``size_px`` pixels."""
    return size_px / (2 * math.tan(math.radians(fov_deg) / 2))

"""EWA projection of 3D Gaussians to 2D screen-space Gaussians (shared by the torch renderers).

Follows the rules gsplat uses, so its CUDA rasterizer can be checked against our reference:
- covariance from quaternion (wxyz) and scales: Sigma = R S S^T R^T,
- local affine approximation of the pinhole projection (Jacobian at the mean), with the
  camera-space direction clamped to 1.3x the field of view (avoids huge Jacobians off-screen),
- a 0.3 px^2 screen-space blur added to the 2D covariance (anti-aliasing floor),
- Gaussians closer than ``near`` are culled; the screen radius is sqrt(2 ln 255) = 3.33 sigma of
  the major axis: beyond it even an opaque Gaussian's alpha is under 1/255 and would be skipped,
  so culling by radius never changes a pixel (the brute-force reference needs no radius).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from service.pipeline.transforms import quat_wxyz_to_matrix

BLUR_PX2 = 0.3  # added to the 2D covariance diagonal, pixels^2
NEAR_PLANE = 0.01
RADIUS_SIGMAS = math.sqrt(2 * math.log(255.0))  # alpha = 1/255 at this distance for opacity 1
FAR_PLANE = 1e10


@dataclass(frozen=True)
class ProjectedGaussians:
    means2d: Tensor  # [N,2] pixels (u, v), pixel centres at +0.5
    conics: Tensor  # [N,3] inverse 2D covariance (a, b, c) for [[a, b], [b, c]]
    depths: Tensor  # [N] camera z
    radii: Tensor  # [N] int pixels (0 = culled)


def covariance_3d(quats: Tensor, scales: Tensor) -> Tensor:
    """World-space covariances [N,3,3] from wxyz quaternions [N,4] and std devs [N,3]."""
    rotation = quat_wxyz_to_matrix(quats)
    m = rotation * scales[:, None, :]  # R @ diag(s)
    return m @ m.transpose(1, 2)


def project_gaussians(
    means: Tensor,  # [N,3] world
    quats: Tensor,  # [N,4] wxyz
    scales: Tensor,  # [N,3]
    world_to_camera: Tensor,  # [4,4]
    intrinsics: Tensor,  # [3,3] pixels
    width: int,
    height: int,
) -> ProjectedGaussians:
    dtype = means.dtype
    rotation = world_to_camera[:3, :3].to(dtype)
    translation = world_to_camera[:3, 3].to(dtype)
    points_camera = means @ rotation.T + translation
    x, y, z = points_camera.unbind(-1)
    fx, fy = intrinsics[0, 0].to(dtype), intrinsics[1, 1].to(dtype)
    cx, cy = intrinsics[0, 2].to(dtype), intrinsics[1, 2].to(dtype)

    valid = (z > NEAR_PLANE) & (z < FAR_PLANE)
    safe_z = torch.where(valid, z, torch.ones_like(z))

    # Clamp the direction used for the Jacobian to 1.3x the field of view (gsplat's rule).
    tan_fov_x, tan_fov_y = 0.5 * width / fx, 0.5 * height / fy
    lim_x_pos = (width - cx) / fx + 0.3 * tan_fov_x
    lim_x_neg = cx / fx + 0.3 * tan_fov_x
    lim_y_pos = (height - cy) / fy + 0.3 * tan_fov_y
    lim_y_neg = cy / fy + 0.3 * tan_fov_y
    tx = safe_z * torch.clamp(x / safe_z, -lim_x_neg, lim_x_pos)
    ty = safe_z * torch.clamp(y / safe_z, -lim_y_neg, lim_y_pos)

    zeros = torch.zeros_like(safe_z)
    jacobian = torch.stack(
        [
            torch.stack([fx / safe_z, zeros, -fx * tx / safe_z**2], -1),
            torch.stack([zeros, fy / safe_z, -fy * ty / safe_z**2], -1),
        ],
        dim=-2,
    )  # [N,2,3]
    cov_camera = rotation @ covariance_3d(quats, scales) @ rotation.T
    cov2d = jacobian @ cov_camera @ jacobian.transpose(1, 2)
    a = cov2d[:, 0, 0] + BLUR_PX2
    b = cov2d[:, 0, 1]
    c = cov2d[:, 1, 1] + BLUR_PX2
    det = a * c - b * b
    valid = valid & (det > 0)
    safe_det = torch.where(valid, det, torch.ones_like(det))
    conics = torch.stack([c / safe_det, -b / safe_det, a / safe_det], dim=-1)

    mid = 0.5 * (a + c)
    major = mid + torch.sqrt(torch.clamp(mid * mid - det, min=0.1))
    radii = torch.ceil(RADIUS_SIGMAS * torch.sqrt(major))
    means2d = torch.stack([fx * x / safe_z + cx, fy * y / safe_z + cy], dim=-1)
    on_screen = (
        (means2d[:, 0] + radii > 0)
        & (means2d[:, 0] - radii < width)
        & (means2d[:, 1] + radii > 0)
        & (means2d[:, 1] - radii < height)
    )
    valid = valid & on_screen
    radii = torch.where(valid, radii, torch.zeros_like(radii)).to(torch.long)
    return ProjectedGaussians(means2d=means2d, conics=conics, depths=z, radii=radii)

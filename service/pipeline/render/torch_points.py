"""Fast renderer: a soft z-buffer point splat, pure torch (the CPU default).

Each Gaussian is treated as an isotropic screen-space disc: its centre projects with the
pinhole model, its screen std is ``sigma_px = mean(scale) * focal / z`` (at least half a
pixel). It splats with a tent (bilinear) kernel of half-width ``s = max(1, 1.4 sigma_px)``
pixels onto the 2R x 2R pixel centres around it (R = round(s) <= MAX_RADIUS): at native
resolution that is plain bilinear splatting (a point on a pixel centre lands on that pixel
alone); a magnified point spreads wider so surfaces stay closed.
Per pixel, the nearest depth wins; every splat within ``depth_tolerance`` (relative) of it is
blended by its weight, which averages the frames that see the same surface. Coverage is ``alpha = min(1, sum of weight * opacity)``: tent weights of a dense surface sum to
about 1 per frame that sees the pixel, so surfaces are opaque and holes get only faint tails.

It approximates the EWA reference (torch_ewa.py): same conventions, no anisotropy, no
translucency through surfaces. Vectorised with scatter ops; no Python loop over points.
"""

from __future__ import annotations

import torch
from torch import Tensor

from service.pipeline.render.projection import NEAR_PLANE
from service.pipeline.types import Gaussians, RenderOutput

MAX_RADIUS = 4  # pixels; larger discs are clipped (a point that close is a floater anyway)
WINDOW_PER_SIGMA = 1.4  # tent half-width (pixels) per screen sigma; native points (0.7) -> 1
MIN_SIGMA_PX = 0.5


def is_available() -> tuple[bool, str]:
    return True, "pure torch (fast z-buffer splat, CPU default)"


class TorchPointRenderer:
    name = "torch_points"
    differentiable = False

    def __init__(self, depth_tolerance: float = 0.03) -> None:
        self.depth_tolerance = depth_tolerance

    def versions(self) -> dict[str, str]:
        return {"renderer": f"torch_points-1(tol={self.depth_tolerance})"}

    def render(
        self,
        gaussians: Gaussians,
        *,
        world_to_camera: Tensor,  # [V,4,4]
        intrinsics: Tensor,  # [V,3,3] pixels
        width: int,
        height: int,
        background: Tensor | None = None,  # [3], default black
    ) -> RenderOutput:
        return render_points(
            gaussians,
            world_to_camera=world_to_camera,
            intrinsics=intrinsics,
            width=width,
            height=height,
            background=background,
            depth_tolerance=self.depth_tolerance,
        )


@torch.no_grad()
def render_points(
    gaussians: Gaussians,
    *,
    world_to_camera: Tensor,  # [V,4,4]
    intrinsics: Tensor,  # [V,3,3]
    width: int,
    height: int,
    background: Tensor | None = None,  # [3]
    depth_tolerance: float = 0.03,
) -> RenderOutput:
    device = gaussians.means.device
    if background is None:
        background = torch.zeros(3, device=device)
    outputs = [
        _render_view(gaussians, world_to_camera[v], intrinsics[v], width, height, background,
                     depth_tolerance)
        for v in range(world_to_camera.shape[0])
    ]  # fmt: skip
    return RenderOutput(
        rgb=torch.stack([o[0] for o in outputs]),
        depth=torch.stack([o[1] for o in outputs]),
        alpha=torch.stack([o[2] for o in outputs]),
    )


def _render_view(
    gaussians: Gaussians,
    world_to_camera: Tensor,  # [4,4]
    intrinsics: Tensor,  # [3,3]
    width: int,
    height: int,
    background: Tensor,  # [3]
    depth_tolerance: float,
) -> tuple[Tensor, Tensor, Tensor]:
    # Dense tensors throughout (out-of-image splats go to a spare "dump" pixel): boolean
    # compaction and fancy indexing cost more than the arithmetic here.
    device = gaussians.means.device
    rotation = world_to_camera[:3, :3].float()
    translation = world_to_camera[:3, 3].float()
    fx, fy = float(intrinsics[0, 0]), float(intrinsics[1, 1])
    cx, cy = float(intrinsics[0, 2]), float(intrinsics[1, 2])

    points_camera = gaussians.means @ rotation.T + translation
    z = points_camera[:, 2]
    safe_z = torch.where(z > NEAR_PLANE, z, torch.ones_like(z))
    u = fx * points_camera[:, 0] / safe_z + cx
    v = fy * points_camera[:, 1] / safe_z + cy
    sigma_px = (gaussians.scales.mean(dim=1) * 0.5 * (fx + fy) / safe_z).clamp_min(MIN_SIGMA_PX)
    # Window of 2R x 2R pixel centres around the point: R = 1 is the 2x2 block bracketing it
    # (a point at its native resolution); magnified points (larger sigma) get larger windows.
    half = torch.round(WINDOW_PER_SIGMA * sigma_px).clamp(1, MAX_RADIUS)
    keep = (
        (z > NEAR_PLANE)
        & (u + half > 0) & (u - half < width)
        & (v + half > 0) & (v - half < height)
        & (gaussians.opacities > 0)
    )  # fmt: skip
    if not bool(keep.all()):
        u, v, z, sigma_px, half = u[keep], v[keep], z[keep], sigma_px[keep], half[keep]
        opacities, colors = gaussians.opacities[keep], gaussians.colors[keep]
    else:
        opacities, colors = gaussians.opacities, gaussians.colors
    if u.numel() == 0:  # nothing in view (e.g. absurd cameras): background, alpha 0
        rgb = background.to(device=device, dtype=torch.float32).expand(height, width, 3).clone()
        empty = torch.zeros(height, width, device=device)
        return rgb, empty, empty.clone()
    col0 = torch.floor(u - 0.5)  # the pixel whose centre is just left of / above the point
    row0 = torch.floor(v - 0.5)
    dump = height * width

    pixel_ids, depths, weights, splat_colors = [], [], [], []
    single = bool(half.min() == half.max())  # the common case: one window size for all
    radii = [float(half[0])] if single else torch.unique(half).tolist()
    for r in radii:
        if single:
            cols0, rows0, us, vs, zs, sig, op, co = col0, row0, u, v, z, sigma_px, opacities, colors
        else:
            group = half == r
            cols0, rows0, us, vs = col0[group], row0[group], u[group], v[group]
            zs, sig, op, co = z[group], sigma_px[group], opacities[group], colors[group]
        offsets = torch.arange(-int(r) + 1, int(r) + 1, device=device, dtype=u.dtype)
        di, dj = torch.meshgrid(offsets, offsets, indexing="ij")
        col = cols0[:, None] + dj.reshape(1, -1)  # [G,K]
        row = rows0[:, None] + di.reshape(1, -1)
        # Tent weights (bilinear splatting widened to the footprint): a point exactly on a pixel
        # centre at native resolution gives that pixel weight 1 and its neighbours 0.
        inv_width = (1.0 / (WINDOW_PER_SIGMA * sig).clamp_min(1.0))[:, None]
        tent_u = (1 - (col + 0.5 - us[:, None]).abs() * inv_width).clamp_min(0)
        tent_v = (1 - (row + 0.5 - vs[:, None]).abs() * inv_width).clamp_min(0)
        inside = (col >= 0) & (col < width) & (row >= 0) & (row < height)
        ids = torch.where(inside, row * width + col, torch.full_like(col, dump)).long()
        window = ids.shape[1]
        pixel_ids.append(ids.reshape(-1))
        weights.append((tent_u * tent_v * op[:, None]).reshape(-1))
        depths.append(zs[:, None].expand(-1, window).reshape(-1))
        splat_colors.append(co[:, None, :].expand(-1, window, 3).reshape(-1, 3))
    if not pixel_ids:
        return (
            background.expand(height, width, 3).clone(),
            torch.zeros(height, width, device=device),
            torch.zeros(height, width, device=device),
        )
    pixel_ids = torch.cat(pixel_ids)
    depths = torch.cat(depths)
    weights = torch.cat(weights)
    splat_colors = torch.cat(splat_colors)

    nearest = torch.full((dump + 1,), float("inf"), device=device)
    nearest = nearest.scatter_reduce(0, pixel_ids, depths, reduce="amin")
    weights = weights * (depths <= nearest[pixel_ids] * (1 + depth_tolerance))

    weight_sum = torch.zeros(dump + 1, device=device).index_add_(0, pixel_ids, weights)
    color_sum = torch.zeros(dump + 1, 3, device=device).index_add_(
        0, pixel_ids, weights[:, None] * splat_colors
    )
    depth_sum = torch.zeros(dump + 1, device=device).index_add_(0, pixel_ids, weights * depths)
    weight_sum, color_sum, depth_sum = weight_sum[:dump], color_sum[:dump], depth_sum[:dump]
    covered = weight_sum > 0
    safe = weight_sum.clamp_min(1e-12)
    color = torch.where(covered[:, None], color_sum / safe[:, None], 0.0)
    depth = torch.where(covered, depth_sum / safe, 0.0)
    alpha = weight_sum.clamp(max=1.0)
    rgb = color * alpha[:, None] + background[None] * (1 - alpha[:, None])
    return rgb.reshape(height, width, 3), depth.reshape(height, width), alpha.reshape(height, width)

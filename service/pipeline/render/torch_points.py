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
    # compaction and fancy indexing cost more than the arithmetic they would save.
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
    # Points behind the camera or without opacity are sent off-image (their splats all land on
    # the dump pixel) rather than compacted away: masking costs more than the wasted arithmetic.
    visible = (z > NEAR_PLANE) & (gaussians.opacities > 0)
    opacities, colors = gaussians.opacities, gaussians.colors
    col0 = torch.where(visible, torch.floor(u - 0.5), -2.0 * MAX_RADIUS)
    row0 = torch.where(visible, torch.floor(v - 0.5), -2.0 * MAX_RADIUS)
    dump = height * width

    # One entry per window offset and point group: (pixel ids [G], weights [G], depths [G],
    # colours [G,3]). Offset-major loops avoid materialising [G,K] copies of depth and colour.
    splats: list[tuple[Tensor, Tensor, Tensor, Tensor]] = []
    single = bool(half.min() == half.max()) if half.numel() else True  # usually one size
    radii = ([float(half[0])] if half.numel() else []) if single else torch.unique(half).tolist()
    for r in radii:
        if single:
            cols0, rows0, us, vs, zs, sig, op, co = col0, row0, u, v, z, sigma_px, opacities, colors
        else:
            group = half == r
            cols0, rows0, us, vs = col0[group], row0[group], u[group], v[group]
            zs, sig, op, co = z[group], sigma_px[group], opacities[group], colors[group]
        # Tent weights (bilinear splatting widened to the footprint): a point exactly on a pixel
        # centre at native resolution gives that pixel weight 1 and its neighbours 0.
        inv_width = 1.0 / (WINDOW_PER_SIGMA * sig).clamp_min(1.0)
        du0, dv0 = cols0 + 0.5 - us, rows0 + 0.5 - vs  # offset of the window's first centre
        tents_u, tents_v, cols, rows = [], [], [], []
        for offset in range(-int(r) + 1, int(r) + 1):
            tents_u.append((1 - (du0 + offset).abs() * inv_width).clamp_min(0))
            tents_v.append((1 - (dv0 + offset).abs() * inv_width).clamp_min(0))
            cols.append(cols0 + offset)
            rows.append(rows0 + offset)
        col_ok = [(c >= 0) & (c < width) for c in cols]
        row_ok = [(r_ >= 0) & (r_ < height) for r_ in rows]
        for i in range(len(rows)):
            for j in range(len(cols)):
                ids = torch.where(row_ok[i] & col_ok[j], rows[i] * width + cols[j], dump).long()
                splats.append((ids, tents_u[j] * tents_v[i] * op, zs, co))
    if not splats:
        return (
            background.expand(height, width, 3).clone(),
            torch.zeros(height, width, device=device),
            torch.zeros(height, width, device=device),
        )

    nearest = torch.full((dump + 1,), float("inf"), device=device)
    for ids, _, zs, _ in splats:
        nearest.scatter_reduce_(0, ids, zs, reduce="amin")
    limit = nearest * (1 + depth_tolerance)
    weight_sum = torch.zeros(dump + 1, device=device)
    color_sum = torch.zeros(dump + 1, 3, device=device)
    depth_sum = torch.zeros(dump + 1, device=device)
    for ids, weights, zs, co in splats:
        weights = weights * (zs <= limit[ids])
        weight_sum.index_add_(0, ids, weights)
        color_sum.index_add_(0, ids, weights[:, None] * co)
        depth_sum.index_add_(0, ids, weights * zs)
    weight_sum, color_sum, depth_sum = weight_sum[:dump], color_sum[:dump], depth_sum[:dump]
    covered = weight_sum > 0
    safe = weight_sum.clamp_min(1e-12)
    color = torch.where(covered[:, None], color_sum / safe[:, None], 0.0)
    depth = torch.where(covered, depth_sum / safe, 0.0)
    alpha = weight_sum.clamp(max=1.0)
    rgb = color * alpha[:, None] + background[None] * (1 - alpha[:, None])
    return rgb.reshape(height, width, 3), depth.reshape(height, width), alpha.reshape(height, width)

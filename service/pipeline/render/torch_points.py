"""Fast renderer: a z-buffered splat of pixel footprints, pure torch (the CPU default).

Each Gaussian is drawn as an isotropic screen-space square footprint. Conventions:
docs/conventions.md (OpenCV axes, world_to_camera, pixels with centres at +0.5, z-depth).

- Footprint. The centre projects with the pinhole model; the screen std is
  ``sigma_px = mean(scale) * focal / z``. A lifted Gaussian's scale is ``footprint_scale``
  (0.7) times its source pixel's footprint on the surface (gaussians.py), so ``sigma_px`` is
  that footprint as the *target* camera samples it, from the point's depth and the target's
  focal. The footprint covers the pixel centres within ``h = FOOTPRINT_PER_SIGMA * sigma_px``
  on both axes (h clamped to [0.5, 4] px). Points of one surface land ~sigma_px / 0.7 apart,
  so footprints of half-width sigma_px meet even where the target magnifies the surface 1.4x
  along one axis (an oblique view), and the 0.5 px floor covers every centre of a minified
  surface: no holes open between the points of a surface at the target's sampling rate.
  A larger footprint would fatten foreground edges over the background (those edges carry
  most of the error on oracle geometry; bench/render_quality.py).
- Depth test. Per pixel the nearest footprint covering it wins; footprints within
  ``depth_tolerance`` (relative) of that depth are the visible surface (several frames'
  copies of it), the rest are occluded. Only footprints that *cover* the pixel take part, so
  a kernel tail cannot win a pixel and leave it half covered (torch_points-1's pinholes).
- Normalisation. Colour and depth are the visible footprints' average weighted by
  ``opacity * tent(du) * tent(dv)`` (tent half-width max(1, 1.4 sigma_px): bilinear
  splatting at native size), divided by the weight sum, so a pixel's colour does not depend
  on how many points land on it. Coverage is ``alpha = 1 - prod(1 - min(opacity, 1 - 1e-6))``
  over the visible footprints: opaque wherever a confident surface reaches.

It approximates the EWA reference (torch_ewa.py; tested against it on smooth surfaces): same
projection, no anisotropy, no translucency through a surface. Vectorised: one set of tensor
ops per window offset and footprint size; no Python loop over points.
"""

from __future__ import annotations

import torch
from torch import Tensor

from service.pipeline.render.projection import NEAR_PLANE
from service.pipeline.types import Gaussians, RenderOutput

FOOTPRINT_PER_SIGMA = 1.0  # footprint half-width (pixels) per projected sigma; see above
MIN_HALF_WIDTH_PX = 0.5  # a minified surface (points denser than pixels) still covers each centre
MAX_HALF_WIDTH_PX = 4.0  # larger footprints are clipped (a point that close is a floater anyway)
TENT_PER_SIGMA = 1.4  # tent half-width per sigma (>= 1 px): plain bilinear at native size
KERNEL_FLOOR = 1e-3  # tent floor: a covering footprint always has some weight
OPACITY_MAX = 1 - 1e-6  # keeps log(1 - opacity) finite; one opaque surface is opaque
VERSION = "torch_points-2"  # 2: footprints from depth and focal, covering-only z-test, normalised blending


def is_available() -> tuple[bool, str]:
    return True, "pure torch (fast z-buffer splat, CPU default)"


class TorchPointRenderer:
    name = "torch_points"
    differentiable = False

    def __init__(self, depth_tolerance: float = 0.03) -> None:
        self.depth_tolerance = depth_tolerance

    def versions(self) -> dict[str, str]:
        return {"renderer": f"{VERSION}(tol={self.depth_tolerance})"}

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
    world_to_camera: Tensor,  # [V,4,4] world-to-camera, OpenCV axes
    intrinsics: Tensor,  # [V,3,3] pixels
    width: int,
    height: int,
    background: Tensor | None = None,  # [3]
    depth_tolerance: float = 0.03,
) -> RenderOutput:  # rgb [V,H,W,3], depth [V,H,W] z (0 = empty), alpha [V,H,W]
    device = gaussians.means.device
    if background is None:
        background = torch.zeros(3, device=device)
    outputs = [
        _render_view(gaussians, world_to_camera[v], intrinsics[v], width, height,
                     background.to(device), depth_tolerance)
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
) -> tuple[Tensor, Tensor, Tensor]:  # rgb [H,W,3], depth [H,W], alpha [H,W]
    # Dense per-point tensors throughout (splats outside the image go to a spare "dump"
    # pixel): boolean compaction and gathers cost more than the arithmetic they would save.
    device = gaussians.means.device
    rotation = world_to_camera[:3, :3].to(gaussians.means.dtype)
    translation = world_to_camera[:3, 3].to(gaussians.means.dtype)
    fx, fy = float(intrinsics[0, 0]), float(intrinsics[1, 1])
    cx, cy = float(intrinsics[0, 2]), float(intrinsics[1, 2])
    points_camera = gaussians.means @ rotation.T + translation
    z = points_camera[:, 2]
    safe_z = torch.where(z > NEAR_PLANE, z, torch.ones_like(z))
    u = fx * points_camera[:, 0] / safe_z + cx
    v = fy * points_camera[:, 1] / safe_z + cy
    sigma_px = gaussians.scales.mean(dim=1) * (0.5 * (fx + fy)) / safe_z
    # Footprint half-width h (pixels, square: |du|, |dv| <= h): covers every centre of a
    # surface whose points land up to 2h apart.
    half = (FOOTPRINT_PER_SIGMA * sigma_px).clamp(MIN_HALF_WIDTH_PX, MAX_HALF_WIDTH_PX)
    tent_width = (TENT_PER_SIGMA * sigma_px).clamp_min(1.0)
    visible = (z > NEAR_PLANE) & (gaussians.opacities > 0)
    opacity = gaussians.opacities.clamp(max=OPACITY_MAX)
    # Per-point constants of the accumulation rows (weight, weight*z, weight*rgb, log(1-a)):
    # built once as [6,N] rows, each scaled per splat by its kernel weight.
    base = torch.cat([opacity[None], (opacity * z)[None], opacity[None] * gaussians.colors.T,
                      torch.log1p(-opacity)[None]], dim=0)  # fmt: skip
    # The footprint's pixel centres (c + 0.5 in [u - h, u + h]): at most K = floor(2h) + 1
    # per axis from c0 = ceil(u - 0.5 - h); K = 2 for a point at its native resolution.
    col0 = torch.where(visible, torch.ceil(u - 0.5 - half), -4.0 * MAX_HALF_WIDTH_PX)
    row0 = torch.where(visible, torch.ceil(v - 0.5 - half), -4.0 * MAX_HALF_WIDTH_PX)
    size = torch.floor(2 * half) + 1
    dump = height * width

    # (pixel ids [G], kernel weights [G], depths [G], accumulation rows [G,6], log(1-a) [G])
    # per window offset.
    splats: list[tuple[Tensor, Tensor, Tensor, Tensor, Tensor]] = []
    # Usually one size (points at about their native resolution): min/max instead of a sort.
    low, high = (int(size.min()), int(size.max())) if size.numel() else (1, 0)
    for k in range(low, high + 1):
        group = None if low == high else torch.nonzero(size == k).flatten()
        if group is not None and not group.numel():
            continue

        def sel(x: Tensor, group=group) -> Tensor:
            return x if group is None else x[group]

        us, vs, hs, inv_w = sel(u), sel(v), sel(half), 1.0 / sel(tent_width)
        zs, log_clear = sel(z), sel(base[5])
        rows_base = base if group is None else base[:, group]
        cols = [sel(col0) + o for o in range(k)]
        rows = [sel(row0) + o for o in range(k)]
        # Tent (bilinear) blending weights, normalised later; the floor keeps a footprint
        # that covers a pixel beyond its tent from dividing by zero.
        ku = [(1 - (c + 0.5 - us).abs() * inv_w).clamp_min(0) + KERNEL_FLOOR for c in cols]
        kv = [(1 - (r + 0.5 - vs).abs() * inv_w).clamp_min(0) + KERNEL_FLOOR for r in rows]
        col_ok = [(c >= 0) & (c < width) & ((c + 0.5 - us).abs() <= hs) for c in cols]
        row_ok = [(r >= 0) & (r < height) & ((r + 0.5 - vs).abs() <= hs) for r in rows]
        for i in range(k):
            for j in range(k):
                ids = torch.where(row_ok[i] & col_ok[j], rows[i] * width + cols[j], dump).long()
                splats.append((ids, kv[i] * ku[j], zs, rows_base, log_clear))
    if not splats:
        return (
            background.expand(height, width, 3).clone(),
            torch.zeros(height, width, device=device),
            torch.zeros(height, width, device=device),
        )

    # 1. Z-buffer over the covering footprints; 2. the visible surface is the band behind it.
    nearest = torch.full((dump + 1,), float("inf"), device=device)
    for ids, _, zs, _, _ in splats:
        nearest.scatter_reduce_(0, ids, zs, reduce="amin")
    limit = nearest * (1 + depth_tolerance)
    # 3. Normalised blending of the visible surface; coverage from the footprints' opacities.
    sums = torch.zeros(6, dump + 1, device=device)  # weight, weight*z, weight*rgb, log(1-a)
    for ids, kernel, zs, rows_base, log_clear in splats:
        front = zs <= limit[ids]
        weight = kernel * front
        sums[0].index_add_(0, ids, weight * rows_base[0])
        sums[1].index_add_(0, ids, weight * rows_base[1])
        sums[2:5].index_add_(1, ids, weight * rows_base[2:5])
        sums[5].index_add_(0, ids, log_clear * front)  # coverage: a footprint, whatever its kernel
    sums = sums[:, :dump].T
    weight_sum = sums[:, 0]
    covered = weight_sum > 0
    safe = torch.where(covered, weight_sum, 1.0)
    depth = torch.where(covered, sums[:, 1] / safe, 0.0)
    color = torch.where(covered[:, None], sums[:, 2:5] / safe[:, None], 0.0)
    alpha = torch.where(covered, 1 - torch.exp(sums[:, 5]), 0.0)
    rgb = color * alpha[:, None] + background[None] * (1 - alpha[:, None])
    return rgb.reshape(height, width, 3), depth.reshape(height, width), alpha.reshape(height, width)

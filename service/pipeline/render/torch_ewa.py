"""The reference renderer: EWA Gaussian splatting, front-to-back alpha compositing, pure torch.

Compositing rules are gsplat's (so its CUDA rasterizer can be held to this one):
for each pixel, Gaussians sorted by camera depth, ``alpha = min(0.99, opacity * exp(power))``
with ``power = -0.5 d^T conic d`` (d from the pixel centre to the 2D mean; power > 0 skipped);
contributions with alpha < 1/255 are skipped; compositing stops before the Gaussian that would
bring the transmittance to 1e-4 or below. Processed in 16x16 tiles; differentiable.
"""

from __future__ import annotations

import torch
from torch import Tensor

from service.pipeline.render.projection import project_gaussians
from service.pipeline.types import Gaussians, RenderOutput

ALPHA_MAX = 0.99
ALPHA_MIN = 1.0 / 255.0
TRANSMITTANCE_MIN = 1e-4
TILE = 16


def is_available() -> tuple[bool, str]:
    return True, "pure torch (reference, differentiable; slower than torch_points on CPU)"


class TorchEWARenderer:
    name = "torch_ewa"
    differentiable = True

    def versions(self) -> dict[str, str]:
        return {"renderer": "torch_ewa-1"}

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
        return render_ewa(
            gaussians,
            world_to_camera=world_to_camera,
            intrinsics=intrinsics,
            width=width,
            height=height,
            background=background,
        )


def render_ewa(
    gaussians: Gaussians,
    *,
    world_to_camera: Tensor,  # [V,4,4]
    intrinsics: Tensor,  # [V,3,3]
    width: int,
    height: int,
    background: Tensor | None = None,  # [3]
) -> RenderOutput:
    device = gaussians.means.device
    if background is None:
        background = torch.zeros(3, device=device)
    rgbs, depths, alphas = [], [], []
    for view in range(world_to_camera.shape[0]):
        rgb, depth, alpha = _render_view(
            gaussians, world_to_camera[view], intrinsics[view], width, height, background
        )
        rgbs.append(rgb)
        depths.append(depth)
        alphas.append(alpha)
    return RenderOutput(rgb=torch.stack(rgbs), depth=torch.stack(depths), alpha=torch.stack(alphas))


def _render_view(
    gaussians: Gaussians,
    world_to_camera: Tensor,
    intrinsics: Tensor,
    width: int,
    height: int,
    background: Tensor,
) -> tuple[Tensor, Tensor, Tensor]:
    device, dtype = gaussians.means.device, gaussians.means.dtype
    projected = project_gaussians(
        gaussians.means, gaussians.quats, gaussians.scales, world_to_camera, intrinsics,
        width, height,
    )
    visible = torch.nonzero(projected.radii > 0).flatten()
    order = visible[torch.argsort(projected.depths[visible], stable=True)]
    means2d = projected.means2d[order]
    conics = projected.conics[order]
    radii = projected.radii[order].to(dtype)
    opacities = gaussians.opacities[order]
    colors = gaussians.colors[order]
    depths = projected.depths[order]

    # Start from the background; tiles overwrite their pixels (slice assignment keeps autograd).
    rgb = background.to(device=device, dtype=dtype).expand(height, width, 3).clone()
    depth_map = torch.zeros(height, width, device=device, dtype=dtype)
    alpha_map = torch.zeros(height, width, device=device, dtype=dtype)
    for top in range(0, height, TILE):
        for left in range(0, width, TILE):
            bottom, right = min(top + TILE, height), min(left + TILE, width)
            hit = (
                (means2d[:, 0] + radii > left)
                & (means2d[:, 0] - radii < right)
                & (means2d[:, 1] + radii > top)
                & (means2d[:, 1] - radii < bottom)
            )
            index = torch.nonzero(hit).flatten()
            if index.numel() == 0:
                continue
            v, u = torch.meshgrid(
                torch.arange(top, bottom, device=device, dtype=dtype) + 0.5,
                torch.arange(left, right, device=device, dtype=dtype) + 0.5,
                indexing="ij",
            )
            color_sum, depth_sum, transmittance = _composite(
                u.flatten(), v.flatten(), means2d[index], conics[index],
                opacities[index], colors[index], depths[index],
            )  # fmt: skip
            h, w = bottom - top, right - left
            alpha = 1.0 - transmittance
            expected_depth = torch.where(alpha > 0, depth_sum / alpha.clamp_min(1e-12), 0.0)
            rgb[top:bottom, left:right] = (
                color_sum + transmittance[:, None] * background.to(dtype)
            ).reshape(h, w, 3)
            depth_map[top:bottom, left:right] = expected_depth.reshape(h, w)
            alpha_map[top:bottom, left:right] = alpha.reshape(h, w)
    return rgb, depth_map, alpha_map


def _composite(
    u: Tensor,  # [P] pixel centres
    v: Tensor,  # [P]
    means2d: Tensor,  # [K,2] sorted front to back
    conics: Tensor,  # [K,3]
    opacities: Tensor,  # [K]
    colors: Tensor,  # [K,3]
    depths: Tensor,  # [K]
) -> tuple[Tensor, Tensor, Tensor]:
    """Composite K depth-sorted Gaussians over P pixels. Returns colour [P,3], depth*weight
    sum [P] and the final transmittance [P]."""
    dx = means2d[:, 0:1] - u[None]  # [K,P]
    dy = means2d[:, 1:2] - v[None]
    power = -0.5 * (conics[:, 0:1] * dx * dx + conics[:, 2:3] * dy * dy) - conics[:, 1:2] * dx * dy
    alpha = torch.clamp(opacities[:, None] * torch.exp(power), max=ALPHA_MAX)
    alpha = torch.where((power <= 0) & (alpha >= ALPHA_MIN), alpha, torch.zeros_like(alpha))
    transmittance_after = torch.cumprod(1.0 - alpha, dim=0)  # [K,P]
    transmittance_before = torch.cat(
        [torch.ones_like(transmittance_after[:1]), transmittance_after[:-1]], dim=0
    )
    # Stop before the Gaussian that would take transmittance to <= 1e-4; T is non-increasing,
    # so every later Gaussian is excluded too.
    included = transmittance_after > TRANSMITTANCE_MIN
    weights = torch.where(included, alpha * transmittance_before, torch.zeros_like(alpha))
    final_transmittance = torch.where(included, 1.0 - alpha, torch.ones_like(alpha)).prod(dim=0)
    color_sum = weights.T @ colors
    depth_sum = weights.T @ depths
    return color_sum, depth_sum, final_transmittance

"""Brute-force per-pixel compositor: the slow, obviously-correct oracle for the EWA renderer.

One Python loop per pixel and per Gaussian, written straight from the rules in torch_ewa.py.
Only for tests on tiny scenes.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from service.pipeline.render.projection import project_gaussians
from service.pipeline.render.torch_ewa import ALPHA_MAX, ALPHA_MIN, TRANSMITTANCE_MIN
from service.pipeline.types import Gaussians, RenderOutput


def _render_ewa(
    gaussians: Gaussians,
    *,
    world_to_camera: Tensor,  # [V,4,4]
    intrinsics: Tensor,  # [V,3,3]
    width: int,
    height: int,
    background: Tensor | None = None,  # [3]
) -> RenderOutput:
    background = torch.zeros(3) if background is None else background
    views = []
    for view in range(world_to_camera.shape[0]):
        p = project_gaussians(
            gaussians.means.double(), gaussians.quats.double(), gaussians.scales.double(),
            world_to_camera[view].double(), intrinsics[view].double(), width, height,
        )  # fmt: skip
        order = sorted(
            (i for i in range(gaussians.num_gaussians) if p.radii[i] > 0),
            key=lambda i: (float(p.depths[i]), i),
        )
        rgb = torch.zeros(height, width, 3, dtype=torch.float64)
        depth = torch.zeros(height, width, dtype=torch.float64)
        alpha_out = torch.zeros(height, width, dtype=torch.float64)
        for row in range(height):
            for col in range(width):
                px, py = col + 0.5, row + 0.5
                transmittance = 1.0
                color = [0.0, 0.0, 0.0]
                depth_sum = 0.0
                for i in order:
                    a, b, c = (float(x) for x in p.conics[i])
                    dx = float(p.means2d[i, 0]) - px
                    dy = float(p.means2d[i, 1]) - py
                    power = -0.5 * (a * dx * dx + c * dy * dy) - b * dx * dy
                    if power > 0:
                        continue
                    alpha = min(ALPHA_MAX, float(gaussians.opacities[i]) * math.exp(power))
                    if alpha < ALPHA_MIN:
                        continue
                    next_transmittance = transmittance * (1 - alpha)
                    if next_transmittance <= TRANSMITTANCE_MIN:
                        break
                    weight = alpha * transmittance
                    for k in range(3):
                        color[k] += weight * float(gaussians.colors[i, k])
                    depth_sum += weight * float(p.depths[i])
                    transmittance = next_transmittance
                for k in range(3):
                    rgb[row, col, k] = color[k] + transmittance * float(background[k])
                alpha_out[row, col] = 1 - transmittance
                depth[row, col] = depth_sum / (1 - transmittance) if transmittance < 1 else 0.0
        views.append((rgb, depth, alpha_out))
    return RenderOutput(
        rgb=torch.stack([v[0] for v in views]).float(),
        depth=torch.stack([v[1] for v in views]).float(),
        alpha=torch.stack([v[2] for v in views]).float(),
    )

"""Step 3: lift per-pixel depth to 3D Gaussians (one per kept pixel, "pixel-aligned").

For frame t and pixel centre (u, v) with depth z (docs/conventions.md):
- mean     = camera_to_world[t] @ (z * K^-1 [u, v, 1])
- scale    = footprint_scale * stride * z / focal (isotropic: the pixel's footprint at depth z)
- opacity  = confidence (pixels with confidence or depth 0 are dropped)
- colour   = the frame's pixel
A budget caps the total: frames are subsampled on a regular grid (stride s) and each kept
Gaussian grows by s to cover the pixels it stands for. Deterministic: no random sampling.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from service.pipeline.transforms import invert_rigid, unproject_depth
from service.pipeline.types import Gaussians, Geometry

MIN_CONFIDENCE = 0.05  # below this a pixel is noise, not evidence


def grid_stride(num_pixels_per_frame: int, num_frames: int, max_gaussians: int) -> int:
    """Smallest integer stride s with num_frames * num_pixels / s^2 <= max_gaussians."""
    total = num_pixels_per_frame * num_frames
    return max(1, math.ceil(math.sqrt(total / max_gaussians)))


def lift_gaussians(
    frames: Tensor,  # [T,H,W,3] float32 in [0,1]
    geometry: Geometry,
    *,
    max_gaussians: int = 4_000_000,
    footprint_scale: float = 0.7,
    frame_mask: Tensor | None = None,  # [T] bool: frames to lift (default: registered ones)
) -> Gaussians:
    """Pixel-aligned Gaussians from every (registered) frame, within the budget."""
    num_frames, height, width, _ = frames.shape
    if tuple(geometry.depth.shape) != (num_frames, height, width):
        raise ValueError(
            f"depth {tuple(geometry.depth.shape)} does not match frames {tuple(frames.shape)}"
        )
    if frame_mask is None:
        frame_mask = geometry.registered
    lifted = [int(t) for t in torch.nonzero(frame_mask).flatten()]
    stride = grid_stride(height * width, max(len(lifted), 1), max_gaussians)
    camera_to_world = invert_rigid(geometry.world_to_camera)

    parts: list[tuple[Tensor, ...]] = []
    for t in lifted:
        depth, confidence, colour, intrinsics = _subsample(
            geometry.depth[t], geometry.confidence[t], frames[t], geometry.intrinsics[t], stride
        )
        points = unproject_depth(depth.double(), intrinsics, camera_to_world[t]).float()
        keep = (depth > 0) & (confidence >= MIN_CONFIDENCE) & torch.isfinite(points).all(-1)
        # `intrinsics` is the coarse grid's (focal / stride): one coarse pixel spans
        # depth / coarse_focal = stride * depth / focal in the scene.
        coarse_focal = float(0.5 * (intrinsics[0, 0] + intrinsics[1, 1]))
        sigma = (footprint_scale / coarse_focal) * depth[keep]
        parts.append(
            (
                points[keep],
                sigma[:, None].expand(-1, 3),
                confidence[keep],
                colour[keep],
                torch.full((int(keep.sum()),), t, dtype=torch.long),
            )
        )
    if not parts:
        return _empty()
    means, scales, opacities, colors, source = (torch.cat(x) for x in zip(*parts))
    quats = torch.zeros(means.shape[0], 4)
    quats[:, 0] = 1.0  # isotropic: the orientation does not matter
    return Gaussians(
        means=means.contiguous(),
        quats=quats,
        scales=scales.contiguous(),
        opacities=opacities.clamp(0, 1).contiguous(),
        colors=colors.contiguous(),
        source_frame=source,
    )


def _subsample(
    depth: Tensor, confidence: Tensor, colour: Tensor, intrinsics: Tensor, stride: int
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Keep every ``stride``-th pixel; colours are box-filtered so a kept Gaussian carries the
    mean colour of the block it stands for. Intrinsics are re-expressed for the coarse grid."""
    if stride == 1:
        return depth, confidence, colour, intrinsics
    height, width = depth.shape
    rows, cols = height // stride, width // stride
    # Centre pixel of each block, so unprojection stays at the block's centre.
    offset = stride // 2
    depth_s = depth[offset::stride, offset::stride][:rows, :cols]
    confidence_s = confidence[offset::stride, offset::stride][:rows, :cols]
    colour_s = F.avg_pool2d(colour.permute(2, 0, 1)[None], stride)[0].permute(1, 2, 0)
    colour_s = colour_s[:rows, :cols]
    # Coarse pixel (i, j) centre sits at fine coordinate stride*(j + 0.5): u_fine = s * u_coarse.
    coarse = intrinsics.clone()
    coarse[0, :] /= stride
    coarse[1, :] /= stride
    coarse[2, 2] = 1.0
    return depth_s, confidence_s, colour_s, coarse


def _empty() -> Gaussians:
    return Gaussians(
        means=torch.zeros(0, 3),
        quats=torch.zeros(0, 4),
        scales=torch.zeros(0, 3),
        opacities=torch.zeros(0),
        colors=torch.zeros(0, 3),
        source_frame=torch.zeros(0, dtype=torch.long),
    )

"""3D evidence: how much of what frame t looks like from frame s only depth variation explains.

    pair_parallax(geometry, t, s)    -> PairParallax(baseline_px, depth_px, overlap)
    frame_parallax(geometry, t)(s)   -> the same, frame t's pixels sampled once for many s
    clip_depth_evidence(geometry, .) -> is depth observable in the clip at all, in [0,1]

Two displacements of frame t's pixels when they are seen from frame s (both in pixels of s):

- ``baseline_px``: the median distance between where a pixel lands at its estimated depth and
  where it would land at infinite depth. It is what the camera's *translation* does to the
  image; a camera that stands still or turns in place has 0. Partner choice uses it: a
  neighbour with too little baseline cannot test depth at all.
- ``depth_px`` (plane + parallax, Irani and Anandan): the displacement that the best homography
  between the two views cannot explain. A homography maps a plane exactly, whatever the camera
  does, and a rotating camera's views exactly, whatever the scene: so a flat picture sliding,
  zooming or turning, a planar wall and a camera turning in place all have ``depth_px`` ~ 0,
  while real depth structure (relief, objects in front of a background) does not. This is the
  3D evidence the reconstruction term pays for. It is computed from the geometry itself
  (poses, intrinsics, depth), so every backend is judged by the same measure.

The homography is fitted by least squares (DLT, Hartley-normalised) to the pixel
correspondences that the depth implies, then refitted on the half that fits it best (so one
dominant plane, e.g. the ground, is removed); ``depth_px`` is the mean residual over all
sampled pixels, so a scene that is mostly one plane with a few objects gets the share of
evidence its objects carry. Mean, not median: off-plane structure that covers a minority of the
frame is exactly the evidence we want to count.

Conventions: OpenCV axes, ``world_to_camera`` [4,4], intrinsics in pixels, z-depth.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from service.pipeline.transforms import invert_rigid, pixel_grid
from service.pipeline.types import Geometry

# Depth parallax (pixels no homography explains) that earns full 3D evidence, as a fraction of
# the longer image side: 2.2 px at 448 px. A flat scene's residual is ~0.01-0.05 px there
# (depth noise), real relief 1-10 px between neighbours (bench/RESULTS.md, "Evidence").
DEPTH_PARALLAX_FULL = 0.005
SAMPLES = 4096  # pixels of frame t (a regular grid) per measurement
PLANE_INLIER_SHARE = 0.5  # the refit keeps this share of best-fitting pixels: the dominant plane
# Depth noise of a real backend makes a flat scene's residual non-zero; trimming the worst
# pixels (flying depth at edges) keeps single outliers from paying evidence.
RESIDUAL_TRIM = 0.02
# Depth noise scales with the baseline (a flat picture's residual was 0.1-0.6 % of its baseline
# parallax on real footage, real relief ~20 %): residual below this share of the baseline
# parallax is not counted as evidence, whatever the baseline.
RELATIVE_FLOOR = 0.02


@dataclass(frozen=True)
class PairParallax:
    baseline_px: float  # displacement relative to infinity (translation), pixels of s
    depth_px: float  # displacement no homography explains (depth variation), pixels of s
    overlap: float  # share of frame t's sampled pixels that land inside frame s, in front

    @property
    def evidence_px(self) -> float:
        """Depth parallax above the noise floor (RELATIVE_FLOOR x baseline), pixels."""
        return max(0.0, self.depth_px - RELATIVE_FLOOR * self.baseline_px)


def _sample_points(geometry: Geometry, frame: int) -> tuple[Tensor, Tensor, Tensor]:
    """A grid of frame's pixels: uv [N,2] (pixels), world points at their depth [N,3] and
    world ray directions (the same rays at infinite depth) [N,3]. Pixels without depth take
    the frame's median depth (the clip's when the frame has none)."""
    depth = geometry.depth[frame].double()  # [H,W]
    height, width = depth.shape
    step = max(1, int(math.sqrt(height * width / SAMPLES)))
    grid = pixel_grid(height, width, dtype=torch.float64)[step // 2 :: step, step // 2 :: step]
    depth = depth[step // 2 :: step, step // 2 :: step]
    known = depth > 0
    if bool(known.any()):
        fill = float(depth[known].median())
    else:
        positive = geometry.depth[geometry.depth > 0]
        step_all = max(1, positive.numel() // 100_000)
        fill = float(positive[::step_all].double().median()) if positive.numel() else 1.0
    depth = torch.where(known, depth, torch.full_like(depth, fill)).reshape(-1)  # [N]
    uv = grid.reshape(-1, 2)
    k_inv = torch.linalg.inv(geometry.intrinsics[frame].double())
    rays = torch.cat([uv, torch.ones_like(uv[:, :1])], dim=1) @ k_inv.T  # [N,3], z = 1
    camera_to_world = invert_rigid(geometry.world_to_camera[frame].double())
    directions = rays @ camera_to_world[:3, :3].T
    points = directions * depth[:, None] + camera_to_world[:3, 3]
    return uv, points, directions


def pair_parallax(geometry: Geometry, frame: int, other: int) -> PairParallax:
    """Parallax of ``frame``'s pixels seen from ``other`` (see the module docstring)."""
    return frame_parallax(geometry, frame)(other)


def frame_parallax(geometry: Geometry, frame: int) -> Callable[[int], PairParallax]:
    """``other -> pair_parallax(geometry, frame, other)``, sampling frame's pixels once (partner
    search and the reconstruction term measure one frame against several others)."""
    uv, points, directions = _sample_points(geometry, frame)
    return lambda other: _pair_from_samples(geometry, uv, points, directions, other)


def _pair_from_samples(geometry: Geometry, uv: Tensor, points: Tensor, directions: Tensor,
                       other: int) -> PairParallax:  # fmt: skip
    rotation = geometry.world_to_camera[other, :3, :3].double()
    translation = geometry.world_to_camera[other, :3, 3].double()
    k = geometry.intrinsics[other].double()
    near = points @ rotation.T + translation  # [N,3] in the other camera
    far = directions @ rotation.T
    visible = (near[:, 2] > 1e-9) & (far[:, 2] > 1e-9)
    if int(visible.sum()) < 8:
        return PairParallax(0.0, 0.0, 0.0)
    near_px = near[visible] @ k.T
    near_px = near_px[:, :2] / near_px[:, 2:]
    far_px = far[visible] @ k.T
    far_px = far_px[:, :2] / far_px[:, 2:]
    baseline = float((near_px - far_px).norm(dim=1).median())
    height, width = geometry.depth.shape[1:]
    inside = ((near_px[:, 0] >= 0) & (near_px[:, 0] < width) & (near_px[:, 1] >= 0)
              & (near_px[:, 1] < height))  # fmt: skip
    overlap = float(inside.sum()) / uv.shape[0]
    depth_px = plane_residual_px(uv[visible], near_px)
    return PairParallax(baseline, depth_px, overlap)


def plane_residual_px(source_px: Tensor, target_px: Tensor) -> float:
    """Mean distance (target pixels) between ``target_px`` [N,2] and the best homography's image
    of ``source_px`` [N,2]: the part of the motion no plane (and no pure rotation) explains.
    Fitted on all points, then refitted on the PLANE_INLIER_SHARE that fit best; the worst
    RESIDUAL_TRIM of points is left out of the mean."""
    if source_px.shape[0] < 8:
        return 0.0
    homography = fit_homography(source_px, target_px)
    residual = _transfer_error(homography, source_px, target_px)
    keep = residual <= residual.quantile(PLANE_INLIER_SHARE)
    if int(keep.sum()) >= 8:
        homography = fit_homography(source_px[keep], target_px[keep])
        residual = _transfer_error(homography, source_px, target_px)
    kept = residual.sort().values[: max(1, int(round(residual.numel() * (1 - RESIDUAL_TRIM))))]
    return float(kept.mean())


def fit_homography(source_px: Tensor, target_px: Tensor) -> Tensor:
    """Least-squares homography [3,3] with target ~ H @ source (DLT on Hartley-normalised
    pixels [N,2], N >= 4). Deterministic: no sampling."""
    source_n, source_t = _normalise(source_px)
    target_n, target_t = _normalise(target_px)
    x, y = source_n[:, 0], source_n[:, 1]
    u, v = target_n[:, 0], target_n[:, 1]
    zeros, ones = torch.zeros_like(x), torch.ones_like(x)
    rows_u = torch.stack([-x, -y, -ones, zeros, zeros, zeros, u * x, u * y, u], dim=1)
    rows_v = torch.stack([zeros, zeros, zeros, -x, -y, -ones, v * x, v * y, v], dim=1)
    system = torch.cat([rows_u, rows_v])
    _, _, vh = torch.linalg.svd(system, full_matrices=False)
    normalised = vh[-1].reshape(3, 3)
    homography = torch.linalg.inv(target_t) @ normalised @ source_t
    return homography / homography[2, 2] if abs(float(homography[2, 2])) > 1e-12 else homography


def _normalise(points: Tensor) -> tuple[Tensor, Tensor]:
    centre = points.mean(0)
    spread = (points - centre).norm(dim=1).mean().clamp_min(1e-12)
    scale = math.sqrt(2.0) / float(spread)
    transform = torch.tensor([[scale, 0, -scale * float(centre[0])],
                              [0, scale, -scale * float(centre[1])],
                              [0, 0, 1.0]], dtype=points.dtype)  # fmt: skip
    return (points - centre) * scale, transform


def _transfer_error(homography: Tensor, source_px: Tensor, target_px: Tensor) -> Tensor:
    mapped = torch.cat([source_px, torch.ones_like(source_px[:, :1])], dim=1) @ homography.T
    w = mapped[:, 2:]
    w = torch.where(w.abs() < 1e-12, torch.full_like(w, 1e-12), w)
    return (mapped[:, :2] / w - target_px).norm(dim=1)


def clip_depth_evidence(geometry: Geometry, full_px: float, samples: int = 6) -> float:
    """Is depth observable in this clip at all? In [0,1]: over up to ``samples`` registered
    frames spread over the clip, min(1, evidence_px / full_px) of each seen from the registered
    frame farthest from it in time (the clip's widest baseline for it), then the median.

    A camera path is only checkable in 3D where depth is: a flat picture sliding yields a
    camera path (the plane's homographies decompose into one) that no 3D structure confirms.
    The trajectory term scales a requested translation's score by this."""
    registered = [int(t) for t in torch.nonzero(geometry.registered).flatten()]
    if len(registered) < 2 or full_px <= 0:
        return 0.0
    picks = sorted({registered[round(i * (len(registered) - 1) / max(1, samples - 1))]
                    for i in range(samples)})  # fmt: skip
    values = []
    for t in picks:
        other = max(registered, key=lambda s: (abs(s - t), -s))
        values.append(min(1.0, pair_parallax(geometry, t, other).evidence_px / full_px))
    return float(torch.tensor(values).median())

"""Step 4 (reconstruction part): render every frame from Gaussians that exclude its own pixels.

Frame t is rendered at its own estimated pose and intrinsics, at the working resolution (so the
input aspect ratio), from the Gaussians lifted from ``neighbours`` usable frames: the
temporally nearest ones *that see frame t with enough depth parallax* to test its depth
(evidence.py; full credit at DEPTH_PARALLAX_FULL of the longer image side). A fast camera
takes its adjacent frames; a slow one reaches further out in time, so a slow orbit is judged
on baselines that can show a wrong depth instead of on ones where any depth re-renders. When
no frame has that parallax (a flat scene, a camera turning in place) the nearest frames render
it and the reconstruction term pays no evidence. Using a few neighbours rather than all other
frames gives fewer floaters and exposure mismatches, and it is what makes a frame shuffle
visible: structure from motion recovers a shuffled static clip's poses perfectly, but its
neighbours in time no longer look alike.

Frames that are (near-)exact copies of frame t are never its neighbours: a frozen frame must
not be judged by its own pixels.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import Tensor

from service.pipeline.evidence import DEPTH_PARALLAX_FULL, PairParallax, frame_parallax
from service.pipeline.render import Renderer
from service.pipeline.types import Gaussians, Geometry, RenderOutput

# Mean absolute difference (in [0,1] units) under which two frames count as copies.
DUPLICATE_THRESHOLD = 0.5 / 255
# Temporal offsets tried, in order, when the nearest frames lack parallax (a slow camera).
_OFFSETS = [1, 2, 3, 4, 5, 6, 8, 10, 12, 16, 20, 24, 32, 40, 48, 64, 80, 96, 128]


@dataclass(frozen=True)
class HeldOutRenders:
    renders: RenderOutput  # [T,...]: frame t rendered without its own pixels
    neighbours: list[list[int]]  # the frames whose Gaussians rendered frame t ([] = not rendered)
    duplicate_of_previous: Tensor  # [T] bool: frame t is a copy of frame t-1 (a frozen frame)
    # Per frame t: the parallax of t seen from each frame the partner search measured
    # (evidence.PairParallax by frame), so the reconstruction term does not measure it again.
    parallax: list[dict[int, PairParallax]] = field(default_factory=list)


def find_duplicates(frames: Tensor) -> Tensor:  # frames [T,H,W,3] -> [T,T] bool
    """Which pairs of frames are copies of each other (mean absolute difference tiny)."""
    flat = frames.reshape(frames.shape[0], -1)
    # Compare on a subsample of pixels: exact copies differ nowhere, real frames almost everywhere.
    step = max(1, flat.shape[1] // 20_000)
    sample = flat[:, ::step]
    difference = torch.stack([(sample - row).abs().mean(-1) for row in sample])
    return difference < DUPLICATE_THRESHOLD


def choose_neighbours(
    frame: int, usable: Tensor, duplicates: Tensor, count: int, *, geometry: Geometry | None = None,
    parallax_from: Callable[[int], PairParallax] | None = None,
) -> list[int]:
    """Up to ``count`` usable frames (not copies of ``frame``) that render it.

    Without ``geometry``: the temporally nearest (ties towards the earlier frame). With it: the
    temporally nearest frames whose depth parallax on ``frame`` reaches the full-evidence level
    (evidence.frame_parallax ``evidence_px`` >= DEPTH_PARALLAX_FULL x longer side), searched outward
    over growing offsets; if fewer qualify, the rest are the candidates with the most parallax
    times overlap (nearest first on ties). Deterministic."""
    num = usable.shape[0]
    allowed = [other for other in range(num)
               if other != frame and bool(usable[other]) and not bool(duplicates[frame, other])]  # fmt: skip
    nearest = sorted(allowed, key=lambda other: (abs(other - frame), other))
    if geometry is None or len(nearest) <= count:
        return sorted(nearest[:count])
    full_px = DEPTH_PARALLAX_FULL * max(geometry.depth.shape[1:])
    offsets = [d for d in _OFFSETS if d < num] + ([num - 1] if num - 1 > _OFFSETS[-1] else [])
    candidates = [other for d in offsets for other in (frame - d, frame + d) if other in allowed]
    parallax_from = parallax_from or frame_parallax(geometry, frame)
    qualified, scored = [], []
    for other in candidates:
        pair = parallax_from(other)
        if pair.evidence_px >= full_px:
            qualified.append(other)
            if len(qualified) == count:
                break
        scored.append((-min(1.0, pair.evidence_px / full_px) * pair.overlap, abs(other - frame), other))
    chosen = qualified[:]
    for *_, other in sorted(scored):
        if len(chosen) == count:
            break
        if other not in chosen:
            chosen.append(other)
    return sorted(chosen)


def render_held_out(
    gaussians: Gaussians,
    geometry: Geometry,
    renderer: Renderer,
    *,
    frames: Tensor,  # [T,H,W,3]
    neighbours: int = 4,
) -> HeldOutRenders:
    num_frames, height, width, _ = frames.shape
    duplicates = find_duplicates(frames)
    duplicate_of_previous = torch.zeros(num_frames, dtype=torch.bool)
    duplicate_of_previous[1:] = duplicates[torch.arange(1, num_frames), torch.arange(num_frames - 1)]
    device = gaussians.means.device

    rgbs, depths, alphas, chosen, parallax = [], [], [], [], []
    for t in range(num_frames):
        measured = _Measured(geometry, t)
        picked = (
            choose_neighbours(t, geometry.registered, duplicates, neighbours, geometry=geometry,
                              parallax_from=measured)  # fmt: skip
            if bool(geometry.registered[t])
            else []
        )
        chosen.append(picked)
        parallax.append(measured.pairs)
        if not picked:
            rgbs.append(torch.zeros(height, width, 3, device=device))
            depths.append(torch.zeros(height, width, device=device))
            alphas.append(torch.zeros(height, width, device=device))
            continue
        out = renderer.render(
            _from_frames(gaussians, picked),
            world_to_camera=geometry.world_to_camera[t : t + 1].to(device),
            intrinsics=geometry.intrinsics[t : t + 1].to(device),
            width=width,
            height=height,
        )
        rgbs.append(out.rgb[0])
        depths.append(out.depth[0])
        alphas.append(out.alpha[0])
    renders = RenderOutput(
        rgb=torch.stack(rgbs).float().cpu(),
        depth=torch.stack(depths).float().cpu(),
        alpha=torch.stack(alphas).float().cpu(),
    )
    return HeldOutRenders(renders, chosen, duplicate_of_previous, parallax)


class _Measured:
    """``other -> PairParallax`` of one frame, remembering every pair it measured (and
    sampling the frame's pixels only if one is asked for)."""

    def __init__(self, geometry: Geometry, frame: int) -> None:
        self.geometry, self.frame = geometry, frame
        self.pairs: dict[int, PairParallax] = {}
        self._from: Callable[[int], PairParallax] | None = None

    def __call__(self, other: int) -> PairParallax:
        if other not in self.pairs:
            if self._from is None:
                self._from = frame_parallax(self.geometry, self.frame)
            self.pairs[other] = self._from(other)
        return self.pairs[other]


def _from_frames(gaussians: Gaussians, frames: list[int]) -> Gaussians:
    """The Gaussians lifted from ``frames``. lift_gaussians emits them grouped by frame in
    increasing order, so contiguous slices replace a full boolean mask over all N."""
    source = gaussians.source_frame
    if source.numel() > 1 and not bool((source[1:] >= source[:-1]).all()):
        return gaussians.select(torch.isin(source, torch.tensor(frames, device=source.device)))
    bounds = torch.searchsorted(source, torch.tensor(frames, device=source.device))
    ends = torch.searchsorted(source, torch.tensor(frames, device=source.device), right=True)
    index = torch.cat([torch.arange(int(a), int(b), device=source.device)
                       for a, b in zip(bounds, ends)])  # fmt: skip
    return Gaussians(*(getattr(gaussians, f)[index] for f in gaussians.__dataclass_fields__))

"""Step 4 (reconstruction part): render every frame from Gaussians that exclude its own pixels.

Frame t is rendered at its own estimated pose and intrinsics, at the working resolution (so the
input aspect ratio), from the Gaussians lifted from its ``neighbours`` temporally nearest
usable frames. Using neighbours rather than all other frames gives fewer floaters and exposure
mismatches, and it is what makes a frame shuffle visible: structure from motion recovers a
shuffled static clip's poses perfectly, but its neighbours no longer look alike.

Frames that are (near-)exact copies of frame t are never its neighbours: a frozen frame must
not be judged by its own pixels.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from service.pipeline.render import Renderer
from service.pipeline.types import Gaussians, Geometry, RenderOutput

# Mean absolute difference (in [0,1] units) under which two frames count as copies.
DUPLICATE_THRESHOLD = 0.5 / 255


@dataclass(frozen=True)
class HeldOutRenders:
    renders: RenderOutput  # [T,...]: frame t rendered without its own pixels
    neighbours: list[list[int]]  # the frames whose Gaussians rendered frame t ([] = not rendered)
    duplicate_of_previous: Tensor  # [T] bool: frame t is a copy of frame t-1 (a frozen frame)


def find_duplicates(frames: Tensor) -> Tensor:  # frames [T,H,W,3] -> [T,T] bool
    """Which pairs of frames are copies of each other (mean absolute difference tiny)."""
    flat = frames.reshape(frames.shape[0], -1)
    # Compare on a subsample of pixels: exact copies differ nowhere, real frames almost everywhere.
    step = max(1, flat.shape[1] // 20_000)
    sample = flat[:, ::step]
    difference = torch.stack([(sample - row).abs().mean(-1) for row in sample])
    return difference < DUPLICATE_THRESHOLD


def choose_neighbours(
    frame: int, usable: Tensor, duplicates: Tensor, count: int
) -> list[int]:
    """The ``count`` temporally nearest usable frames that are not copies of ``frame``
    (ties broken towards the earlier frame, so the choice is deterministic)."""
    candidates = [
        other
        for other in range(usable.shape[0])
        if other != frame and bool(usable[other]) and not bool(duplicates[frame, other])
    ]
    candidates.sort(key=lambda other: (abs(other - frame), other))
    return sorted(candidates[:count])


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

    rgbs, depths, alphas, chosen = [], [], [], []
    for t in range(num_frames):
        picked = (
            choose_neighbours(t, geometry.registered, duplicates, neighbours)
            if bool(geometry.registered[t])
            else []
        )
        chosen.append(picked)
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
    return HeldOutRenders(renders, chosen, duplicate_of_previous)


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

"""Held-out renders from oracle geometry: coverage and PSNR where a neighbour sees the pixel (issue 14).

    python bench/render_quality.py [--renderer torch_points] [--motions orbit,move_right,push_in]

A synthetic room clip (service/synthetic.py: exact poses, z-depth and intrinsics, colours
ray-cast independently of our renderers) is lifted to Gaussians with the oracle geometry and
every frame is rendered from its held-out neighbours exactly as the pipeline does
(render/held_out.py). A pixel of frame t counts as *seen* when its true 3D point projects
inside at least one neighbour and is not occluded there (the neighbour's true depth at the
nearest pixel agrees within 2 %). Printed per motion: coverage (alpha > 0.5) of the seen
pixels, PSNR over the seen and covered pixels, and the reconstruction term's score.
Goals (issue 14): coverage >= 97 %, PSNR >= 35 dB.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from service.pipeline.gaussians import lift_gaussians  # noqa: E402
from service.pipeline.render import get_renderer  # noqa: E402
from service.pipeline.render.held_out import render_held_out  # noqa: E402
from service.pipeline.terms.reconstruction import COVERED_ALPHA, reconstruction_term  # noqa: E402
from service.pipeline.types import Geometry  # noqa: E402
from service.synthetic import make_clip  # noqa: E402


def oracle_geometry(clip) -> Geometry:
    depth = torch.from_numpy(clip.depth)
    return Geometry(
        depth=depth, confidence=(depth > 0).float(),
        world_to_camera=torch.from_numpy(clip.world_to_camera),
        intrinsics=torch.from_numpy(clip.intrinsics),
        registered=torch.ones(depth.shape[0], dtype=torch.bool), backend="oracle",
    )  # fmt: skip


def seen_by(geometry: Geometry, frame: int, others: list[int], tolerance: float = 0.02) -> torch.Tensor:
    """[H,W] bool: pixels of ``frame`` whose true point lands unoccluded inside one of ``others``.

    Pixel centres at +0.5, OpenCV axes, world_to_camera [4,4], z-depth (docs/conventions.md)."""
    depth = geometry.depth[frame].double()
    height, width = depth.shape
    v, u = torch.meshgrid(torch.arange(height, dtype=torch.float64) + 0.5,
                          torch.arange(width, dtype=torch.float64) + 0.5, indexing="ij")  # fmt: skip
    k_inv = torch.linalg.inv(geometry.intrinsics[frame].double())
    rays = torch.stack([u, v, torch.ones_like(u)], -1) @ k_inv.T
    points_camera = rays * depth[..., None]
    camera_to_world = torch.linalg.inv(geometry.world_to_camera[frame].double())
    points_world = points_camera @ camera_to_world[:3, :3].T + camera_to_world[:3, 3]
    seen = torch.zeros(height, width, dtype=torch.bool)
    for other in others:
        w2c = geometry.world_to_camera[other].double()
        p = points_world @ w2c[:3, :3].T + w2c[:3, 3]
        z = p[..., 2]
        uv = (p @ geometry.intrinsics[other].double().T)[..., :2] / z.clamp_min(1e-9)[..., None]
        col, row = torch.floor(uv[..., 0]).long(), torch.floor(uv[..., 1]).long()
        inside = (z > 0.01) & (col >= 0) & (col < width) & (row >= 0) & (row < height)
        other_depth = geometry.depth[other].double()[row.clamp(0, height - 1), col.clamp(0, width - 1)]
        seen |= inside & ((other_depth - z).abs() <= tolerance * z) & (depth > 0)
    return seen


def measure(motion: str, renderer_name: str, frames_count: int, height: int, width: int,
            detail: float) -> dict:  # fmt: skip
    clip = make_clip(motion, num_frames=frames_count, height=height, width=width, detail=detail)
    frames = torch.from_numpy(clip.frames).float() / 255
    geometry = oracle_geometry(clip)
    gaussians = lift_gaussians(frames, geometry)
    renderer = get_renderer(renderer_name)
    start = time.perf_counter()
    held_out = render_held_out(gaussians, geometry, renderer, frames=frames)
    render_s = time.perf_counter() - start
    covered_seen, seen_total, squared, count = 0, 0, 0.0, 0
    per_frame_coverage = []
    for t in range(frames.shape[0]):
        seen = seen_by(geometry, t, held_out.neighbours[t])
        covered = held_out.renders.alpha[t] > COVERED_ALPHA
        both = seen & covered
        covered_seen += int(both.sum())
        seen_total += int(seen.sum())
        per_frame_coverage.append(float(both.sum()) / max(int(seen.sum()), 1))
        squared += float(((held_out.renders.rgb[t] - frames[t]) ** 2)[both].sum())
        count += int(both.sum()) * 3
    term = reconstruction_term(frames, geometry, held_out)
    mse = squared / max(count, 1)
    return {
        "coverage": covered_seen / max(seen_total, 1),
        "min_frame_coverage": min(per_frame_coverage),
        "psnr": 10 * math.log10(1 / max(mse, 1e-12)),
        "score": term.score,
        "render_s": render_s,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--renderer", default="torch_points")
    parser.add_argument("--motions", default="orbit,move_right,push_in")
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--size", default="252x448", help="HxW")
    parser.add_argument("--detail", type=float, default=0.5)
    args = parser.parse_args()
    torch.set_num_threads(1)
    height, width = (int(x) for x in args.size.split("x"))
    print(f"renderer {args.renderer}, {args.frames} frames at {height}x{width}, texture detail "
          f"{args.detail}, oracle geometry, 4 held-out neighbours")  # fmt: skip
    print(f"{'motion':>12} {'coverage':>9} {'min frame':>9} {'PSNR dB':>8} {'recon':>7} {'render s':>9}")
    for motion in args.motions.split(","):
        r = measure(motion, args.renderer, args.frames, height, width, args.detail)
        print(f"{motion:>12} {100 * r['coverage']:8.2f}% {100 * r['min_frame_coverage']:8.2f}% "
              f"{r['psnr']:8.2f} {r['score']:7.3f} {r['render_s']:9.2f}")  # fmt: skip


if __name__ == "__main__":
    main()

"""The whole corpus through every corruption and every hack, with one summary (issue 16).

    python bench/corpus.py                                  # the default corpus below
    python bench/corpus.py --clips great_wall,fox --out /tmp/corpus --quick

The default corpus is every clip of ``../shared/data`` that is footage of a scene (the
chessboard views and the two-image SOH pair are pose tests, not clips), great_wall again as
speed sweeps (16 consecutive frames at source strides 2, 4 and 8: the same orbit filmed
slower), and synthetic rooms with exact poses (``service/synthetic.py``: fields of view and
texture contrasts nobody tuned on). Each clip (16 frames, 448 px long side, classical geometry)
is scored clean, then under the 9 corruption families of ``service/validation/corruptions.py``
at 3 severities and the 14 variants of ``service/validation/hacks.py`` (fixed seeds), with the
clean clip's own path as the trajectory request (as ``bench/validate.py --target self``).

Clips whose camera does not translate (``expect: no_3d``: a still camera filming a moving
object, a camera turning in place) are negatives: they must be classified static or rotation
and total <= 0.1; their corruptions are not ranked. Clips the backend cannot reconstruct
(fewer than half the clean frames registered) are listed as abstentions, not ranked either: a
reward that says "I cannot tell" is not a ranking.

Checks per ranked clip: the clean total beats every corruption at every severity and every hack
but ping-pong (a cell won, with its margin); Spearman(total, severity) <= -0.8 per family; a
still frame slid, zoomed or rotated totals <= 0.1. Printed at the end: cells won / cells (the
summary number), the smallest margins, every failed check. Results are cached per clip in
``--out`` (rerun to resume; ``--fresh`` to recompute). Exit status 1 when a check fails.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from service.pipeline import RewardPipeline  # noqa: E402
from service.pipeline.decode import load_video  # noqa: E402
from service.schemas import TrajectoryTarget  # noqa: E402
from service.settings import Settings  # noqa: E402
from service.synthetic import make_clip  # noqa: E402
from service.validation.corruptions import FAMILIES, SEVERITIES, corrupt  # noqa: E402
from service.validation.hacks import HACKS, MAY_TIE, hack  # noqa: E402

sys.path.append(str(Path(__file__).resolve().parent))
from _shared import shared_data  # noqa: E402
from hacking import FLAT_HACKS, FLAT_MAX  # noqa: E402
from validate import SPEARMAN_MAX, score, spearman  # noqa: E402

FRAMES = 16
LONG_SIDE = 448


@dataclass(frozen=True)
class Clip:
    name: str
    source: str  # path under the shared data, or "synthetic:<fov>:<contrast>"
    stride: int = 0  # 0: FRAMES spread over the clip; s: consecutive frames at source stride s
    expect: str = "ranked"  # "ranked", or "no_3d": a still or turning camera (a negative)


CORPUS = [
    Clip("great_wall", "orbit_nc/great_wall.mp4"),
    Clip("fox", "fox_nc/images"),
    Clip("synthetic_fov40", "synthetic:40:1.0"),
    Clip("synthetic_fov70_weak", "synthetic:70:0.5"),
    Clip("great_wall@2", "orbit_nc/great_wall.mp4", stride=2),
    Clip("great_wall@4", "orbit_nc/great_wall.mp4", stride=4),
    Clip("great_wall@8", "orbit_nc/great_wall.mp4", stride=8),
    Clip("room", "orbit_nc/room.mp4"),
    Clip("cake", "cake_nc"),
    Clip("robot", "da3_examples/robot_unitree.mp4", expect="no_3d"),
    Clip("tree", "opencv_samples/tree.avi", expect="no_3d"),
]


def load_frames(clip: Clip, data: Path) -> np.ndarray:
    """[T,H,W,3] uint8 at LONG_SIDE."""
    if clip.source.startswith("synthetic:"):
        _, fov, contrast = clip.source.split(":")
        height = round(LONG_SIDE * 9 / 16 / 4) * 4
        return make_clip("orbit", num_frames=FRAMES, height=height, width=LONG_SIDE,
                         fov_deg=float(fov), contrast=float(contrast)).frames  # fmt: skip
    path = data / clip.source
    if clip.stride:
        video = load_video(path, max_frames=100_000, long_side=LONG_SIDE)  # every frame
        frames = video.frames[: FRAMES * clip.stride : clip.stride]
    else:
        frames = load_video(path, max_frames=FRAMES, long_side=LONG_SIDE).frames
    return (frames.numpy() * 255).round().astype(np.uint8)


def _row(r: dict) -> dict:
    return {k: v for k, v in r.items() if k not in ("world_to_camera", "registered_mask")}


def run_clip(clip: Clip, frames: np.ndarray, pipeline: RewardPipeline, quick: bool) -> dict:
    """Score the clean clip, then (for ranked, reconstructable clips) every variant."""
    clean = score(pipeline, frames, None, None, ["reconstruction"])
    registered = sum(clean["registered_mask"] or [])
    result = {"clip": clip.name, "expect": clip.expect, "frames": len(frames),
              "clean": _row(clean), "registered": int(registered), "variants": {}}  # fmt: skip
    if clip.expect == "no_3d":
        return result
    if registered < max(2, len(frames) / 2):
        result["abstained"] = f"only {registered}/{len(frames)} clean frames registered"
        return result
    target = TrajectoryTarget(world_to_camera=clean["world_to_camera"])
    terms = ["reconstruction", "trajectory"]
    clean = score(pipeline, frames, target, None, terms)
    result["clean"] = _row(clean)
    print(f"[{clip.name}] clean {clean['total']:.3f} ({clean['motion']}, {clean['registered']})",
          flush=True)  # fmt: skip
    severities = SEVERITIES[-1:] if quick else SEVERITIES
    variants = [(f"{f}/{s}", corrupt, (f, s)) for f in FAMILIES for s in severities]
    variants += [(f"hack/{h}", hack, (h,)) for h in HACKS]
    for label, make, args in variants:
        start = time.perf_counter()
        row = score(pipeline, make(frames, *args, seed=0), target, None, terms)
        result["variants"][label] = _row(row)
        print(f"[{clip.name}] {label:<22} total {row['total'] or 0:.3f} "
              f"(recon {row['reconstruction'] or 0:.3f}, traj {row['trajectory'] or 0:.3f}, "
              f"{row['motion']}) {time.perf_counter() - start:.0f} s", flush=True)
    return result


def check(result: dict) -> tuple[list[tuple[str, float]], list[str], dict]:
    """(cells as (label, margin), failed checks, Spearman per family) of one clip."""
    name, clean = result["clip"], result["clean"]["total"] or 0.0
    if result["expect"] == "no_3d":
        motion = result["clean"]["motion"]
        failed = [] if motion in ("static", "rotation") and clean <= FLAT_MAX else \
            [f"{name}: a camera that does not translate got {motion}, total {clean:.3f}"]  # fmt: skip
        return [], failed, {}
    if "abstained" in result:
        return [], [], {}
    cells, failed, rhos = [], [], {}
    for label, row in result["variants"].items():
        total = row["total"] or 0.0
        kind, variant = label.split("/")
        if kind == "hack" and variant in MAY_TIE:
            continue
        cells.append((f"{name}:{label}", clean - total))
        if clean - total <= 0:
            failed.append(f"{name}: {label} {total:.3f} >= clean {clean:.3f}")
        if kind == "hack" and variant in FLAT_HACKS and total > FLAT_MAX:
            failed.append(f"{name}: {label} {total:.3f} > {FLAT_MAX}")
    for family in FAMILIES:
        totals = [result["variants"].get(f"{family}/{s}", {}).get("total") for s in SEVERITIES]
        if any(t is None for t in totals):
            continue  # --quick: one severity, no rank correlation
        rho = spearman([0, *SEVERITIES], [clean, *totals])
        rhos[family] = rho
        if not rho <= SPEARMAN_MAX + 1e-9:  # nan (a constant curve) fails too
            failed.append(f"{name}: Spearman {family} {rho:.2f}")
    return cells, failed, rhos


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clips", default=",".join(c.name for c in CORPUS))
    parser.add_argument("--data", type=Path, default=shared_data())
    parser.add_argument("--out", type=Path, default=Path("bench/corpus"))
    parser.add_argument("--quick", action="store_true", help="severity 3 only (no Spearman)")
    parser.add_argument("--fresh", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(1)
    chosen = [c for c in CORPUS if c.name in args.clips.split(",")]
    unknown = set(args.clips.split(",")) - {c.name for c in CORPUS}
    if unknown:
        parser.error(f"unknown clips {sorted(unknown)}; known: {[c.name for c in CORPUS]}")
    args.out.mkdir(parents=True, exist_ok=True)
    pipeline = RewardPipeline(Settings(geometry_backend="classical"))
    results = []
    for clip in chosen:
        cache = args.out / f"{clip.name}{'-quick' if args.quick else ''}.json"
        if cache.is_file() and not args.fresh:
            results.append(json.loads(cache.read_text()))
            continue
        result = run_clip(clip, load_frames(clip, args.data), pipeline, args.quick)
        cache.write_text(json.dumps(result, indent=1))
        results.append(result)

    all_cells, all_failed = [], []
    print(f"\n{'clip':<22} {'expect':<7} {'motion':<12} {'reg':>6} {'clean':>6} {'won':>7} "
          f"{'min margin':>22}  Spearman min")
    for result in results:
        cells, failed, rhos = check(result)
        all_cells += cells
        all_failed += failed
        won = sum(m > 0 for _, m in cells)
        smallest = min(cells, key=lambda c: c[1]) if cells else None
        status = result.get("abstained", "")
        margin = f"{smallest[1]:+.3f} {smallest[0].split(':', 1)[1]}" if smallest else status
        print(f"{result['clip']:<22} {result['expect']:<7} {str(result['clean']['motion']):<12} "
              f"{result['registered']:>2}/{result['frames']:<3} {result['clean']['total'] or 0:6.3f} "
              f"{f'{won}/{len(cells)}' if cells else '-':>7} "
              f"{margin:>22}  "
              f"{min(rhos.values()) if rhos else float('nan'):.2f}")
    won = sum(m > 0 for _, m in all_cells)
    print(f"\nSUMMARY: clean won {won}/{len(all_cells)} cells "
          f"({100 * won / max(1, len(all_cells)):.1f} %) over {sum(bool(check(r)[0]) for r in results)} "
          f"ranked clips; smallest margins: "
          + ", ".join(f"{label} {m:+.3f}" for label, m in sorted(all_cells, key=lambda c: c[1])[:5]))
    abstained = [f"{r['clip']} ({r['abstained']})" for r in results if "abstained" in r]
    if abstained:
        print("abstained (not reconstructable, not ranked): " + "; ".join(abstained))
    print(f"{len(all_failed)} failed check(s)" + "".join(f"\n  FAIL {f}" for f in all_failed))
    return 1 if all_failed else 0


if __name__ == "__main__":
    raise SystemExit(main())

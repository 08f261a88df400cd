"""Would a policy maximise the reward with a degenerate video? (issue 16)

    python bench/hacking.py ../shared/data/orbit_nc/great_wall.mp4 [CLIP ...] --plot out.png

Each clip is decoded (``--max-frames`` frames over the whole clip, ``--long-side`` pixels) and
turned into every variant of ``service/validation/hacks.py`` (fixed seeds), then scored by the
full pipeline (classical geometry) on reconstruction and, where the clean clip registers, the
trajectory term with the clean clip's own path as the request (as bench/validate.py
``--target self``). Printed: total and terms per variant, its margin below the clean clip, and
pass/fail (the clean clip must win every variant but ``pingpong``; a still frame slid, zoomed or
rotated must score <= 0.1). Exit status 1 when a check fails.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from service.pipeline import RewardPipeline  # noqa: E402
from service.pipeline.decode import load_video  # noqa: E402
from service.schemas import ScoreOptions, TrajectoryTarget  # noqa: E402
from service.settings import Settings  # noqa: E402
from service.validation.hacks import HACKS, MAY_TIE, hack  # noqa: E402

FLAT_HACKS = ("slide", "zoom", "rotate")
FLAT_MAX = 0.1


def score(pipeline, frames, target, terms) -> dict:
    options = ScoreOptions(max_frames=len(frames), long_side=max(frames.shape[1:3]), terms=terms)
    result = pipeline(frames, trajectory=target, options=options)
    row = {"total": result.total}
    for name in terms:
        term = result.terms.get(name)
        row[name] = term.score if term else None
    recon = result.terms.get("reconstruction")
    row["evidence"] = recon.metrics.get("evidence") if recon else None
    row["motion"] = (result.geometry.diagnostics.get("camera_motion")
                     if result.geometry else None)  # fmt: skip
    row["world_to_camera"] = result.geometry.world_to_camera if result.geometry else None
    row["registered"] = result.geometry.registered if result.geometry else []
    return row


def _fmt(x) -> str:
    return "  -  " if x is None else f"{x:.3f}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("clips", nargs="+")
    parser.add_argument("--hacks", default=",".join(HACKS))
    parser.add_argument("--max-frames", type=int, default=16)
    parser.add_argument("--long-side", type=int, default=448)
    parser.add_argument("--frame-stride", type=int, default=0,
                        help="take consecutive frames at this source stride instead of spreading "
                             "--max-frames over the clip (speed sweeps)")  # fmt: skip
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--plot", type=Path, default=None)
    args = parser.parse_args()
    names = [h.strip() for h in args.hacks.split(",") if h.strip()]
    unknown = [h for h in names if h not in HACKS]
    if unknown:
        parser.error(f"unknown hacks {unknown}; known: {HACKS}")
    torch.set_num_threads(1)
    pipeline = RewardPipeline(Settings(geometry_backend="classical"))
    failures, won, cells, report = [], 0, 0, []
    for path in args.clips:
        if args.frame_stride:
            video = load_video(path, max_frames=100_000, long_side=args.long_side)
            frames = (video.frames.numpy() * 255).round().astype(np.uint8)
            frames = frames[: args.max_frames * args.frame_stride : args.frame_stride]
        else:
            video = load_video(path, max_frames=args.max_frames, long_side=args.long_side)
            frames = (video.frames.numpy() * 255).round().astype(np.uint8)
        label = Path(path).stem + (f"@stride{args.frame_stride}" if args.frame_stride else "")
        clean = score(pipeline, frames, None, ["reconstruction"])
        target, terms = None, ["reconstruction"]
        if int(torch.as_tensor(clean["registered"]).sum()) >= max(2, len(frames) / 2):
            target = TrajectoryTarget(world_to_camera=clean["world_to_camera"])
            terms = ["reconstruction", "trajectory"]
            clean = score(pipeline, frames, target, terms)
        print(f"[{label}] clean total {_fmt(clean['total'])} ({clean['motion']})", flush=True)
        rows = {"clean": clean}
        for name in names:
            row = score(pipeline, hack(frames, name, seed=args.seed), target, terms)
            rows[name] = row
            margin = (clean["total"] or 0.0) - (row["total"] or 0.0)
            ok = margin > 0 or name in MAY_TIE
            if name in FLAT_HACKS:
                ok = ok and (row["total"] or 0.0) <= FLAT_MAX
            if name not in MAY_TIE:
                cells += 1
                won += margin > 0
            if not ok:
                failures.append(f"{label}/{name}")
            print(f"[{label}] {name:<14} total {_fmt(row['total'])} recon {_fmt(row['reconstruction'])}"
                  f" traj {_fmt(row.get('trajectory'))} evidence {_fmt(row['evidence'])}"
                  f" motion {row['motion']} margin {margin:+.3f} {'pass' if ok else 'FAIL'}"
                  + (" (may tie)" if name in MAY_TIE else ""), flush=True)  # fmt: skip
        report.append({"clip": label, "rows": {k: {f: v for f, v in r.items()
                       if f not in ("world_to_camera", "registered")} for k, r in rows.items()}})  # fmt: skip
    print(f"\nclean won {won}/{cells} cells ({100 * won / max(1, cells):.0f} %); "
          f"failures: {', '.join(failures) or 'none'}")
    if args.json:
        args.json.write_text(json.dumps(report, indent=1))
    if args.plot:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(10, 4))
        for clip in report:
            totals = [clip["rows"][n]["total"] or 0.0 for n in ["clean", *names]]
            ax.plot(range(len(totals)), totals, marker="o", label=clip["clip"])
        ax.set_xticks(range(len(names) + 1), ["clean", *names], rotation=45, ha="right")
        ax.set_ylabel("total reward")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(args.plot, dpi=110)
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Where the classical geometry backend spends its time, per step.

    python bench/classical_geometry.py                        # great_wall + fox, 16 frames, 448 px
    python bench/classical_geometry.py CLIP... --frames 16 --long-side 448 --repeats 3

Each clip is decoded once, then the backend runs ``--repeats`` times after a warm-up (imports,
caches); the medians of its own step timings (``Geometry.diagnostics``) are printed in ms, with
the share of each step. Timings on a shared machine are noisy: the shares hold better.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.append(str(Path(__file__).resolve().parent))  # for _shared (bench/service.py shadows "service" if first)

import torch  # noqa: E402
from _shared import shared_data  # noqa: E402

from service.pipeline.decode import load_video  # noqa: E402
from service.pipeline.geometry.classical import ClassicalGeometry  # noqa: E402
from service.settings import Settings  # noqa: E402

STEPS = ("features_ms", "matching_ms", "poses_ms", "depth_ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("clips", nargs="*")
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--long-side", type=int, default=448)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    data = shared_data()
    clips = args.clips or [str(data / "orbit_nc" / "great_wall.mp4"), str(data / "fox_nc" / "images")]
    model = ClassicalGeometry(settings=Settings(num_threads=args.threads))
    print(f"classical geometry, {args.frames} frames, long side {args.long_side}, "
          f"{args.threads} thread(s), {args.repeats} repeats after a warm-up")
    print(f"{'clip':<16} {'H x W':>8} " + " ".join(f"{s[:-3]:>9}" for s in STEPS)
          + f" {'total':>8}  registered")
    for clip in clips:
        video = load_video(clip, max_frames=args.frames, long_side=args.long_side)
        model.predict(video)  # warm-up
        runs, walls = [], []
        for _ in range(args.repeats):
            start = time.perf_counter()
            geometry = model.predict(video)
            walls.append((time.perf_counter() - start) * 1000)
            runs.append(geometry.diagnostics)
        medians = {s: statistics.median(r[s] for r in runs) for s in STEPS}
        wall = statistics.median(walls)
        shares = " ".join(f"{100 * medians[s] / wall:8.0f}%" for s in STEPS)
        name = Path(clip).stem if Path(clip).is_file() else Path(clip).parent.name
        print(f"{name:<16} {video.height}x{video.width:<4} "
              + " ".join(f"{medians[s]:9.0f}" for s in STEPS)
              + f" {wall:8.0f}  {runs[-1]['registered_frames']}/{video.num_frames}")
        print(f"{'  (share)':<25} {shares}")
    print("(ms, medians; total = wall time of predict())")


if __name__ == "__main__":
    main()

"""Time per pipeline stage, and how it grows with frames and resolution.

    python bench/pipeline.py                      # synthetic clip, exact (oracle) geometry
    python bench/pipeline.py --geometry classical # the weights-free backend (real geometry work)
    python bench/pipeline.py --clip ../shared/data/orbit_nc/great_wall.mp4 --geometry classical

Each configuration is run ``--repeats`` times after one warm-up run; medians are printed in
milliseconds, plus the ratio of each configuration's total to the first one (measured side by
side in this run, so the ratios hold better than the absolute times on a shared machine).
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

import torch  # noqa: E402

from service.pipeline import RewardPipeline  # noqa: E402
from service.schemas import ScoreOptions  # noqa: E402
from service.settings import Settings  # noqa: E402
from service.synthetic import make_clip  # noqa: E402

STAGES = ("decode", "geometry", "gaussians", "render", "terms", "total")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--geometry", default="oracle", choices=["oracle", "classical", "da3"])
    parser.add_argument("--clip", help="a real video (then --geometry must not be oracle)")
    parser.add_argument("--configs", default="16x448,48x448,16x224,16x672",
                        help="comma-separated FRAMESxLONGSIDE")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.clip and args.geometry == "oracle":
        parser.error("a real clip has no oracle geometry: use --geometry classical or da3")

    configs = [tuple(int(x) for x in c.split("x")) for c in args.configs.split(",")]
    print(f"geometry={args.geometry} clip={args.clip or 'synthetic orbit'} threads={args.threads} "
          f"repeats={args.repeats} torch={torch.__version__}")
    header = f"{'frames x long side':>20} {'H x W':>9} " + " ".join(f"{s:>9}" for s in STAGES) + "  ratio"
    print(header)
    first_total = None
    for frames, long_side in configs:
        settings = Settings(geometry_backend=args.geometry, long_side=long_side, max_frames=frames)
        pipeline = RewardPipeline(settings)
        options = ScoreOptions(max_frames=frames, long_side=long_side)
        if args.clip:
            video, arrays = args.clip, None
        else:
            height = round(long_side * 9 / 16)
            clip = make_clip("orbit", frames, height, long_side, detail=0.5)
            video, arrays = clip.frames, clip.geometry_arrays()
        kwargs = dict(prompt="Camera orbit right.", options=options, geometry_arrays=arrays)
        output = pipeline.run(video, **kwargs)  # warm-up (imports, allocator, caches)
        runs = []
        for _ in range(args.repeats):
            runs.append(pipeline.run(video, **kwargs).result.timings_ms)
        medians = {s: statistics.median(r.get(s, 0.0) for r in runs) for s in STAGES}
        first_total = first_total or medians["total"]
        size = f"{output.video.height}x{output.video.width}"
        print(f"{f'{frames} x {long_side}':>20} {size:>9} "
              + " ".join(f"{medians[s]:9.0f}" for s in STAGES)
              + f"  {medians['total'] / first_total:5.2f}")
    print("(ms, medians; ratio = total / first row's total)")


if __name__ == "__main__":
    start = time.perf_counter()
    main()
    print(f"bench wall time {time.perf_counter() - start:.1f} s")

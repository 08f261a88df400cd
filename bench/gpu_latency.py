"""Per-video GPU latency of the production path: DA3 -> Gaussians -> render -> VLM judge.

    python bench/gpu_latency.py --da3-model depth-anything/DA3-GIANT \
        --vlm-model Qwen/Qwen3-VL-4B-Instruct [--frames 81 --height 480 --width 832] \
        [--repeats 5] [--compile auto] [--lpips-weights DIR]

A synthetic 81x480x832 clip (ray-cast room, service/synthetic.py) is scored ``--repeats``
times after one warm-up call. Printed: the median time of each pipeline stage (from the
result's own stopwatch; each stage ends in a CPU copy, which synchronises), the median end-to-end time, peak
GPU memory, and, side by side in the same process, the DA3 stage with the eager backbone vs.
the chosen acceleration path (their ratio). Where CUDA is not available it says so and exits 0
without measuring anything (CPU figures of these models belong to bench/pipeline.py).

Without a DA3 or VLM checkpoint (``--da3-model tiny`` / ``--vlm-model tiny``) it builds the
tiny random models the tests use: that measures the pipeline's overheads, not real latency.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--da3-model", default="depth-anything/DA3-GIANT")
    parser.add_argument("--vlm-model", default="Qwen/Qwen3-VL-4B-Instruct")
    parser.add_argument("--lpips-weights", default=None)
    parser.add_argument("--frames", type=int, default=81)
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--width", type=int, default=832)
    parser.add_argument("--process-res", type=int, default=504)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--compile", default="auto", choices=["auto", "tensorrt", "torch_compile", "eager"])
    parser.add_argument("--novel-views", type=int, default=4)
    args = parser.parse_args()

    import torch

    if not torch.cuda.is_available():
        print("CUDA is not available on this machine: bench/gpu_latency.py measures GPU latency "
              "and measured nothing. Run it on a CUDA machine (docs/models.md).")  # fmt: skip
        return 0

    import numpy as np

    from service.pipeline import RewardPipeline
    from service.schemas import ScoreOptions
    from service.settings import Settings
    from service.synthetic import make_clip

    scratch = Path(tempfile.mkdtemp(prefix="reward3d-bench-"))
    da3_model, vlm_model = args.da3_model, args.vlm_model
    if da3_model == "tiny" or vlm_model == "tiny":
        sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
        from tiny_models import save_da3_small, save_tiny_qwen3_vl

        if da3_model == "tiny":
            da3_model = str(save_da3_small(scratch / "da3"))
        if vlm_model == "tiny":
            vlm_model = str(save_tiny_qwen3_vl(scratch / "vlm"))

    print(f"device: {torch.cuda.get_device_name()} | torch {torch.__version__}")
    print(f"clip: {args.frames}x{args.height}x{args.width}, DA3 {da3_model} @ {args.process_res}, "
          f"VLM {vlm_model}, {args.novel_views} novel views")  # fmt: skip
    clip = make_clip("orbit", num_frames=args.frames, height=args.height, width=args.width)
    frames = np.asarray(clip.frames)
    options = ScoreOptions(terms=["reconstruction", "trajectory", "plausibility"],
                           max_frames=args.frames, long_side=max(args.height, args.width))  # fmt: skip
    prompt = "A room with two boxes. The camera orbits to the left."

    def measure(compile_mode: str) -> tuple[dict[str, float], str]:
        settings = Settings(
            device="cuda", geometry_backend="da3", da3_model=da3_model, da3_compile=compile_mode,
            da3_process_res=args.process_res, renderer="auto", vlm_model=vlm_model,
            novel_views=args.novel_views, max_frames=args.frames, da3_max_frames=args.frames,
            long_side=max(args.height, args.width), lpips_weights=args.lpips_weights,
        )  # fmt: skip
        start = time.perf_counter()
        pipeline = RewardPipeline(settings)
        pipeline.geometry_model()
        result = pipeline(frames, prompt=prompt, options=options)  # warm-up (loads the VLM)
        torch.cuda.synchronize()
        print(f"[{compile_mode}] set-up + warm-up {time.perf_counter() - start:.1f} s; "
              f"backbone path {result.versions.backends.get('da3_acceleration')}; "
              f"renderer {result.versions.backends.get('renderer')}")  # fmt: skip
        torch.cuda.reset_peak_memory_stats()
        runs: list[dict[str, float]] = []
        for _ in range(args.repeats):
            torch.cuda.synchronize()
            start = time.perf_counter()
            result = pipeline(frames, prompt=prompt, options=options)
            torch.cuda.synchronize()
            runs.append({**result.timings_ms, "wall": (time.perf_counter() - start) * 1000})
        medians = {key: statistics.median(run[key] for run in runs) for key in runs[0]}
        medians["peak_gib"] = torch.cuda.max_memory_allocated() / 2**30
        return medians, result.versions.backends.get("da3_acceleration", "?")

    eager, _ = measure("eager")
    accelerated, path = measure(args.compile) if args.compile != "eager" else (eager, "eager")
    stages = ["decode", "geometry", "gaussians", "render", "terms", "wall"]
    print(f"\nmedian of {args.repeats} runs, ms (stage ends sync through their CPU copies; wall is synced)")
    print("| backbone | " + " | ".join(stages) + " | peak GiB |")
    print("|---|" + "---|" * (len(stages) + 1))
    for name, row in (("eager", eager), (path, accelerated)):
        print(f"| {name} | " + " | ".join(f"{row.get(s, float('nan')):.0f}" for s in stages)
              + f" | {row['peak_gib']:.1f} |")  # fmt: skip
    print(f"\nDA3 stage eager / {path}: {eager['geometry'] / accelerated['geometry']:.2f}x; "
          f"end to end: {eager['wall'] / accelerated['wall']:.2f}x")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

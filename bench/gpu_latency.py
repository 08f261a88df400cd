"""GPU latency of the production path, in one prepared command (CUDA, checkpoints mounted):

    python bench/gpu_latency.py --da3-model /models/da3-base --vlm-model /models/qwen3-vl-4b-instruct \
        [--head-model /models/da3-giant] [--compile auto] [--budget-s 420]

Measures, on synthetic clips of 480x832 source frames (service/synthetic.py), each row the
median of ``--repeats`` calls after warm-up (warm-up compiles at the request's own shape):

1. per-stage and end-to-end latency at 81 and 16 frames, the DA3 backbone eager and
   accelerated (``--compile``), and their ratio; peak GPU memory of each configuration;
2. gsplat vs the torch renderers on the same Gaussians and view: image difference (mean
   absolute RGB difference, PSNR of one against the other) and render time;
3. DA3 alone: videos per second one video per call vs ``--batch`` videos per call
   (``DA3Geometry.predict_many``, which runs one by one where upstream's heads do not allow
   batching, and says so);
4. with ``--head-model`` (opt-in: Giant's Gaussian head, CC BY-NC 4.0 weights), the 16-frame
   pipeline once more with that checkpoint.

Sections run in that order while ``--budget-s`` lasts (default 420 s, so the whole command
ends within 8 minutes with model loading); a section that would not fit is skipped and named.
Paste the printed tables into bench/RESULTS.md with the GPU name and the exact command.

``--cpu-check`` runs every section on the CPU with the tests' tiny random models and tiny
clips (eager only, gsplat reported unavailable): it checks this script, not latency. Without
CUDA and without ``--cpu-check`` it says so and measures nothing.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

STAGES = ("decode", "geometry", "gaussians", "render", "terms", "total")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--da3-model", default="depth-anything/DA3-BASE",
                        help="the default, permissive checkpoint (Apache-2.0), our own Gaussians")  # fmt: skip
    parser.add_argument("--head-model", default=None,
                        help="optional Giant / nested checkpoint: section 4 uses its Gaussian head")  # fmt: skip
    parser.add_argument("--vlm-model", default="Qwen/Qwen3-VL-4B-Instruct", help="'none' to leave it out")
    parser.add_argument("--lpips-weights", default=None)
    parser.add_argument("--frames", type=int, nargs="+", default=[81, 16], help="clip lengths for section 1")
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--width", type=int, default=832)
    parser.add_argument("--process-res", type=int, default=504)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--compile", default="auto", choices=["auto", "tensorrt", "torch_compile", "eager"])
    parser.add_argument("--novel-views", type=int, default=4)
    parser.add_argument("--batch", type=int, default=4, help="videos per DA3 call in section 3")
    parser.add_argument("--budget-s", type=float, default=420.0)
    parser.add_argument("--cpu-check", action="store_true", help="tiny models on the CPU: checks the script")
    args = parser.parse_args(argv)
    if args.cpu_check:  # tiny everything: the point is to run each code path once
        args.frames, args.height, args.width, args.process_res = [4], 48, 80, 84
        args.repeats, args.batch, args.novel_views = 1, 2, 1
    return args


@dataclass
class Budget:
    seconds: float
    start: float = field(default_factory=time.perf_counter)
    skipped: list[str] = field(default_factory=list)

    def left(self) -> float:
        return self.seconds - (time.perf_counter() - self.start)

    def allows(self, section: str, estimate_s: float) -> bool:
        if self.left() >= estimate_s:
            return True
        self.skipped.append(f"{section} (needs ~{estimate_s:.0f} s, {max(self.left(), 0):.0f} s left)")
        print(f"\n[skipped] {self.skipped[-1]}")
        return False


class Clock:
    """Wall time of a block, synchronising CUDA at both ends (no-op on the CPU)."""

    def __init__(self, torch, device) -> None:
        self.torch, self.cuda = torch, device.type == "cuda"

    def __call__(self, fn, repeats: int = 1) -> tuple[float, object]:
        times, value = [], None
        for _ in range(repeats):
            if self.cuda:
                self.torch.cuda.synchronize()
            start = time.perf_counter()
            value = fn()
            if self.cuda:
                self.torch.cuda.synchronize()
            times.append(time.perf_counter() - start)
        return statistics.median(times), value


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import torch

    if not args.cpu_check and not torch.cuda.is_available():
        print("CUDA is not available on this machine: bench/gpu_latency.py measures GPU latency "
              "and measured nothing (--cpu-check runs it on the CPU with tiny models).")  # fmt: skip
        return 0
    torch.manual_seed(0)
    device = torch.device("cpu" if args.cpu_check else "cuda")
    budget = Budget(args.budget_s)
    models = prepare_models(args)
    print(f"device: {torch.cuda.get_device_name() if device.type == 'cuda' else 'cpu (--cpu-check)'} | "
          f"torch {torch.__version__} | DA3 {models['da3']} @ {args.process_res} | VLM {models['vlm']}")  # fmt: skip

    last_output = latency_section(args, models, device, budget)
    if last_output is not None and budget.allows("2. renderers", 30):
        renderer_section(last_output, device)
    if budget.allows("3. DA3 batching", 60):
        batching_section(args, models, device)
    if models["head"] and budget.allows("4. Gaussian head checkpoint", 120):
        head_section(args, models, device)
    print(f"\nbench/gpu_latency.py done in {time.perf_counter() - budget.start:.0f} s"
          + (f"; skipped: {'; '.join(budget.skipped)}" if budget.skipped else ""))  # fmt: skip
    return 0


def prepare_models(args) -> dict[str, str | None]:
    models = {"da3": args.da3_model, "vlm": None if args.vlm_model == "none" else args.vlm_model,
              "head": args.head_model}  # fmt: skip
    if args.cpu_check:
        sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
        from tests.tiny_models import save_da3_small, save_tiny_da3, save_tiny_qwen3_vl

        scratch = Path(tempfile.mkdtemp(prefix="reward3d-bench-"))
        models["da3"] = str(save_da3_small(scratch / "da3"))
        models["head"] = str(save_tiny_da3(scratch / "giant", "da3-giant"))
        if models["vlm"]:
            models["vlm"] = str(save_tiny_qwen3_vl(scratch / "vlm"))
    return models


def settings_for(args, models, device, *, frames: int, compile_mode: str, da3_model: str | None = None):
    from service.settings import Settings

    return Settings(
        device=device.type, geometry_backend="da3", da3_model=da3_model or models["da3"],
        da3_compile=compile_mode, da3_process_res=args.process_res, renderer="auto",
        vlm_model=models["vlm"], novel_views=args.novel_views, max_frames=frames,
        da3_max_frames=max(128, *args.frames),
        da3_warm_up_shapes=[f"{frames}x{args.height}x{args.width}"],
        lpips_weights=args.lpips_weights,
        long_side=min(448, max(args.height, args.width)),  # the service's working resolution
    )  # fmt: skip


def clip_frames(args, frames: int, offset: int = 0):
    """uint8 [T,H,W,3] (what a trainer sends); ``offset`` starts later on the same orbit, so
    batched videos differ."""
    import numpy as np

    from service.synthetic import make_clip

    clip = make_clip("orbit", num_frames=frames + offset, height=args.height, width=args.width)
    return (np.asarray(clip.frames[offset:]) * 255).round().astype(np.uint8)


def terms_for(models) -> list[str]:
    return ["reconstruction", "trajectory"] + (["plausibility"] if models["vlm"] else [])


# -- 1. latency ---------------------------------------------------------------------------------
def latency_section(args, models, device, budget: Budget):
    import torch

    from service.pipeline import RewardPipeline
    from service.pipeline.geometry import da3_checkpoint
    from service.schemas import ScoreOptions

    print("\n## 1. Per-stage latency (median ms), peak GPU memory")
    modes = ["eager"] if args.cpu_check or args.compile == "eager" else ["eager", args.compile]
    rows, last_output = [], None
    prompt = "A room with two boxes. The camera orbits to the left."
    for frames in args.frames:
        # Compiling (a TensorRT engine build especially) costs minutes: estimate generously.
        for mode in modes:
            if not budget.allows(f"1. {frames} frames, {mode}", 45 if mode == "eager" else 150):
                continue
            da3_checkpoint._LOADED.clear()  # each mode starts from a freshly loaded network
            if device.type == "cuda":
                torch.cuda.empty_cache()
                torch.cuda.reset_peak_memory_stats()
            start = time.perf_counter()
            pipeline = RewardPipeline(settings_for(args, models, device, frames=frames, compile_mode=mode))
            backend = pipeline.geometry_model()  # loads and warms up at this clip's shape
            video = clip_frames(args, frames)
            options = ScoreOptions(terms=terms_for(models), max_frames=frames)
            pipeline(video, prompt=prompt, options=options)  # the VLM loads on first use
            setup_s = time.perf_counter() - start
            timings = []
            for _ in range(args.repeats):
                wall, output = Clock(torch, device)(lambda: pipeline.run(video, prompt=prompt, options=options))
                timings.append({**output.result.timings_ms, "wall": wall * 1000})
            row = {key: statistics.median(t[key] for t in timings) for key in timings[0]}
            row.update(frames=frames, mode=backend.acceleration.path, asked=mode, setup_s=setup_s,
                       peak_gib=torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else float("nan"),
                       renderer=output.result.versions.backends.get("renderer", "?"))  # fmt: skip
            rows.append(row)
            last_output = output
    print("| frames | backbone (asked) | " + " | ".join(STAGES) + " | wall | peak GiB | set-up s |")
    print("|---|---|" + "---|" * (len(STAGES) + 3))
    for row in rows:
        cells = " | ".join(f"{row.get(stage, float('nan')):.0f}" for stage in STAGES)
        print(f"| {row['frames']} | {row['mode']} ({row['asked']}) | {cells} | {row['wall']:.0f} | "
              f"{row['peak_gib']:.1f} | {row['setup_s']:.0f} |")  # fmt: skip
    for frames in args.frames:
        pair = [r for r in rows if r["frames"] == frames]
        if len(pair) == 2:
            eager, fast = pair
            print(f"{frames} frames: DA3 stage eager / {fast['mode']} = {eager['geometry'] / fast['geometry']:.2f}x; "
                  f"end to end {eager['wall'] / fast['wall']:.2f}x")  # fmt: skip
    return last_output


# -- 2. renderers -------------------------------------------------------------------------------
def renderer_section(output, device) -> None:
    import torch

    from service.pipeline.gaussians import lift_gaussians
    from service.pipeline.render import get_renderer, renderer_availability
    from service.settings import Settings

    print("\n## 2. Renderers on the same Gaussians (middle frame from its 4 nearest frames)")
    settings = Settings()
    geometry, video = output.geometry, output.video
    gaussians = lift_gaussians(video.frames, geometry, max_gaussians=settings.max_gaussians,
                               footprint_scale=settings.footprint_scale)  # fmt: skip
    target = video.num_frames // 2
    order = sorted(range(video.num_frames), key=lambda f: abs(f - target))
    neighbours = torch.tensor([f for f in order if f != target][:4])
    gaussians = gaussians.select(torch.isin(gaussians.source_frame, neighbours)).to(device)
    view = dict(world_to_camera=geometry.world_to_camera[target : target + 1].float().to(device),
                intrinsics=geometry.intrinsics[target : target + 1].float().to(device),
                width=video.width, height=video.height)  # fmt: skip
    available = renderer_availability()
    images, clock = {}, Clock(torch, device)
    print(f"{gaussians.num_gaussians} Gaussians, {video.width}x{video.height}")
    # The reference is gsplat (the production CUDA renderer); without it, torch_ewa.
    print("| renderer | ms (median of 5) | mean abs RGB diff vs reference | PSNR vs reference (dB) |")
    print("|---|---|---|---|")
    for name in ("gsplat", "torch_ewa", "torch_points"):
        if not available[name][0]:
            print(f"| {name} | unavailable: {available[name][1]} | | |")
            continue
        renderer = get_renderer(name, device_type=device.type)
        try:
            seconds, rendered = clock(lambda: renderer.render(gaussians, **view), repeats=5)
        except torch.OutOfMemoryError:
            print(f"| {name} | out of GPU memory at this size | | |")
            torch.cuda.empty_cache()
            continue
        images[name] = rendered.rgb[0].float()
        if len(images) == 1:
            print(f"| {name} (reference) | {seconds * 1000:.1f} | | |")
            continue
        reference = next(iter(images.values()))
        error = (images[name] - reference).abs()
        mse = float(((images[name] - reference) ** 2).mean())
        psnr = 10 * torch.log10(torch.tensor(1.0 / max(mse, 1e-12))).item()
        print(f"| {name} | {seconds * 1000:.1f} | {float(error.mean()):.4f} | {psnr:.1f} |")


# -- 3. DA3 batching ----------------------------------------------------------------------------
def batching_section(args, models, device) -> None:
    import torch

    from service.pipeline.decode import load_video
    from service.pipeline.geometry.da3 import DA3Geometry, why_videos_cannot_share_a_call

    frames = min(args.frames)
    print(f"\n## 3. DA3 alone, {frames} frames of {args.height}x{args.width}: one video per call vs {args.batch}")
    backend = DA3Geometry(settings=settings_for(args, models, device, frames=frames, compile_mode="eager"))
    videos = [load_video(clip_frames(args, frames, offset=b), max_frames=frames, long_side=448,
                         geometry_size=backend.input_size) for b in range(args.batch)]  # fmt: skip
    backend.predict_many(videos)  # warm the batched shape too
    clock = Clock(torch, device)
    single, _ = clock(lambda: [backend.predict(v) for v in videos], repeats=args.repeats)
    batched, _ = clock(lambda: backend.predict_many(videos), repeats=args.repeats)
    why = why_videos_cannot_share_a_call(backend.loaded.network, frames)
    print("| DA3 calls | videos/s |\n|---|---|")
    print(f"| 1 video per call | {args.batch / single:.2f} |")
    note = f" (ran one by one: {why})" if why else ""
    print(f"| {args.batch} videos per call{note} | {args.batch / batched:.2f} |")


# -- 4. the Gaussian head (opt-in checkpoint) ---------------------------------------------------
def head_section(args, models, device) -> None:
    import torch

    from service.pipeline import RewardPipeline
    from service.schemas import ScoreOptions

    frames = min(args.frames)
    print(f"\n## 4. {models['head']} (its Gaussian head), {frames} frames, eager")
    pipeline = RewardPipeline(settings_for(args, models, device, frames=frames, compile_mode="eager",
                                           da3_model=models["head"]))  # fmt: skip
    video = clip_frames(args, frames)
    options = ScoreOptions(terms=["reconstruction", "trajectory"], max_frames=frames)
    pipeline(video, options=options)
    wall, output = Clock(torch, device)(lambda: pipeline.run(video, options=options), repeats=args.repeats)
    timings = output.result.timings_ms
    head = output.result.geometry.diagnostics.get("gaussians_from_head")
    print(" | ".join(f"{stage} {timings.get(stage, float('nan')):.0f} ms" for stage in STAGES)
          + f" | wall {wall * 1000:.0f} ms | Gaussians from the head: {head}")  # fmt: skip


if __name__ == "__main__":
    raise SystemExit(main())

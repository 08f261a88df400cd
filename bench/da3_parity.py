"""Parity figures: our DA3 backend vs upstream ``DepthAnything3.inference`` on the same random
networks (CPU, no weights needed), for bench/RESULTS.md.

    python bench/da3_parity.py [--frames 4] [--height 56] [--width 84] [--process-res 84]

Networks (tests/tiny_models.py, from the package's shipped configs): DA3-small as shipped, a
tiny Giant with its Gaussian head, a tiny nested Giant-Large. For each: max abs / max relative
difference of depth, confidence (mapped to [0,1)), world-to-camera and intrinsics, against
upstream in fp32 (its autocast off) and as shipped (its CPU autocast: fp16); the head's
Gaussians field by field against upstream's own PLY export (nested: times its metric scale,
which upstream does not apply to them). Last, how far our single resize of a larger source
frame is from upstream's two-step resize (network input, ImageNet-normalised units, on a
rendered room frame). The same
comparisons, with tolerances, are tests/test_da3_upstream.py.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, default=4)
    parser.add_argument("--height", type=int, default=56, help="source = processing size (no resize)")
    parser.add_argument("--width", type=int, default=84)
    parser.add_argument("--process-res", type=int, default=84)
    args = parser.parse_args()

    import numpy as np
    import torch

    torch.set_num_threads(1)
    from tests import da3_parity
    from tests.tiny_models import save_da3_small, save_tiny_da3

    scratch = Path(tempfile.mkdtemp(prefix="reward3d-parity-"))
    checkpoints = {
        "da3-small": save_da3_small(scratch / "small", seed=0),
        "da3-giant (tiny)": save_tiny_da3(scratch / "giant", "da3-giant", seed=1),
        "da3nested-giant-large (tiny)": save_tiny_da3(scratch / "nested", "da3nested-giant-large", seed=2),
    }
    frames = np.random.default_rng(0).integers(0, 256, (args.frames, args.height, args.width, 3), dtype=np.uint8)
    print(f"torch {torch.__version__}, CPU, {args.frames} frames {args.height}x{args.width}, "
          f"process_res {args.process_res}")  # fmt: skip
    print("\n| network | upstream | field | max abs | max rel |")
    print("|---|---|---|---|---|")
    for label, directory in checkpoints.items():
        model_name = label.split(" ")[0]
        ours, backend = da3_parity.run_ours(directory, frames, args.process_res)
        for fp32 in (True, False):
            theirs, prediction = da3_parity.run_upstream(
                backend.loaded.network, model_name, frames, args.process_res, fp32=fp32,
                infer_gs=backend.loaded.has_gaussian_head,
            )  # fmt: skip
            mode = "fp32" if fp32 else "as shipped (CPU fp16 autocast)"
            rows = da3_parity.compare(ours, theirs)
            if ours.gaussians is not None:
                exported = da3_parity.exported_gaussians(prediction, theirs.depth)
                scale = theirs.scale_factor or 1.0
                exported["means"], exported["scales"] = exported["means"] * scale, exported["scales"] * scale
                gaussians = da3_parity.compare_gaussians(ours.gaussians, exported)
                rows.update({f"gaussians.{name}": figures for name, figures in gaussians.items()})
            for field, figures in rows.items():
                print(f"| {label} | {mode} | {field} | {figures['max_abs']:.3g} | {figures['max_rel']:.3g} |")

    # One resize from the source (ours) vs upstream's two (long side, then multiples of 14).
    da3_parity.upstream_api()  # binds the torchvision stand-in where torchvision is missing
    from depth_anything_3.utils.io.input_processor import InputProcessor

    from service.pipeline.decode import resize_source_frame
    from service.pipeline.geometry.da3 import normalise_uint8_frames, processing_size
    from service.synthetic import make_clip

    print("\n| source (a rendered room frame) | processing size | max abs input difference (normalised) | mean abs |")
    print("|---|---|---|---|")
    for source_hw in ((480, 832), (720, 1280)):
        frame = make_clip("orbit", num_frames=1, height=source_hw[0], width=source_hw[1]).frames[0]
        image = (np.asarray(frame) * 255).round().astype(np.uint8)
        theirs, _, _ = InputProcessor()([image], process_res=504, num_workers=1)
        size = processing_size(*source_hw, 504)
        ours = normalise_uint8_frames(torch.from_numpy(resize_source_frame(image, size))[None])
        gap = (ours - theirs[None]).abs()
        print(f"| {source_hw[0]}x{source_hw[1]} | {size[0]}x{size[1]} | {float(gap.max()):.3f} | "
              f"{float(gap.mean()):.4f} |")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

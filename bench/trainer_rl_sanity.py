#!/usr/bin/env python
"""RL sanity: does Flow-GRPO raise a simple reward on the tiny model? 3 seeds x 30 steps.

    python bench/trainer_rl_sanity.py [--steps 30] [--seeds 0 1 2]

Trains configs/tiny_cpu.yaml (tiny random Wan 2.1, linear latent->RGB decoder, 16 videos per
step) against the TEST-ONLY brightness reward (mean pixel value in [0,1]). Per seed (the seed
sets the model weights, the prompts and all sampling noise) it prints the mean reward over the
first 3 and the last 3 steps, their difference, and that difference in units of the per-video
reward standard deviation at step 0 (an effect size); then the mean and standard deviation of
both over the seeds.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from trainer_client.trainer.config import load_config  # noqa: E402
from trainer_client.trainer.loop import Trainer  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    args = parser.parse_args()
    torch.set_num_threads(1)

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for seed in args.seeds:
            overrides = [
                f"run.seed={seed}", f"model.tiny.seed={seed}", f"run.output_dir={tmp}/seed{seed}",
                "logging.progress=false", "logging.tensorboard=false", "dynamic.enabled=false",
            ]  # fmt: skip
            started = time.perf_counter()
            with Trainer(load_config(REPO / "configs" / "tiny_cpu.yaml", overrides)) as trainer:
                reports = trainer.train(max_steps=args.steps)
            curve = [r.metrics["reward/mean"] for r in reports]
            first, last = float(np.mean(curve[:3])), float(np.mean(curve[-3:]))
            spread = float(np.std(reports[0].rewards[reports[0].ok]))
            rows.append((seed, first, last, last - first, (last - first) / spread, time.perf_counter() - started))
            print(f"seed {seed}: " + " ".join(f"{r:.3f}" for r in curve), flush=True)

    print(f"\nbrightness (mean pixel, TEST-ONLY reward), {args.steps} steps, 16 videos per step")
    print(f"{'seed':>4} {'steps 0-2':>9} {'last 3':>7} {'gain':>7} {'gain/sd0':>8} {'time s':>7}")
    for seed, first, last, gain, effect, seconds in rows:
        print(f"{seed:>4} {first:>9.4f} {last:>7.4f} {gain:>+7.4f} {effect:>8.2f} {seconds:>7.1f}")
    gains = [r[3] for r in rows]
    effects = [r[4] for r in rows]
    sd = (lambda v: statistics.stdev(v) if len(v) > 1 else 0.0)
    print(f"mean gain {statistics.mean(gains):+.4f} (sd {sd(gains):.4f} over {len(rows)} seeds); "
          f"effect size {statistics.mean(effects):.2f} (sd {sd(effects):.2f}) per-video sd at step 0")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

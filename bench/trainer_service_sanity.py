#!/usr/bin/env python
"""RL sanity against the real service: does Flow-GRPO raise the service's reward? 3 seeds x 30 steps.

    python bench/trainer_service_sanity.py [--steps 30] [--seeds 0 1 2] [--workers 1]

Starts ``reward3d serve`` (private Redis, ``--workers`` worker processes) with the TEST-ONLY
``brightness`` quality backend (REWARD3D_QUALITY_BACKEND=brightness: the mean brightness of 3
frames sampled over the clip, in [0,1]; it says nothing about quality) and trains
configs/tiny_cpu.yaml with ``reward.source: http``, ``reward.terms: [quality]``: every reward
goes through the SDK, the HTTP API, the Redis queue and a worker's RewardPipeline.

Per seed (the seed sets the model weights, the prompts and all sampling noise): mean reward of
the first 3 and the last 3 steps, the gain, and the gain in units of the per-video reward
standard deviation at step 0 (an effect size); then mean and standard deviation over seeds.
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

from bench.local_service import LocalService  # noqa: E402
from trainer_client.trainer.config import load_config  # noqa: E402
from trainer_client.trainer.loop import Trainer  # noqa: E402

SERVICE = {  # what the worker scores with
    "REWARD3D_QUALITY_BACKEND": "brightness",  # TEST ONLY
    "REWARD3D_GEOMETRY_BACKEND": "classical",  # unused: quality-only requests skip geometry
    "REWARD3D_LONG_SIDE": "64",
    "REWARD3D_MAX_FRAMES": "9",
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--workers", type=int, default=1, help="service worker processes")
    args = parser.parse_args()
    torch.set_num_threads(1)

    rows = []
    with tempfile.TemporaryDirectory() as tmp, LocalService(Path(tmp), workers=args.workers, **SERVICE) as service:
        for seed in args.seeds:
            overrides = [
                f"run.seed={seed}", f"model.tiny.seed={seed}", f"run.output_dir={tmp}/seed{seed}",
                "logging.progress=false", "logging.tensorboard=false", "dynamic.enabled=false",
                "reward.source=http", f"reward.url={service.url}", f"reward.api_key={service.key}",
                "reward.terms=[quality]", "reward.weights={quality: 1.0}", "reward.timeout_s=300",
            ]  # fmt: skip
            started = time.perf_counter()
            with Trainer(load_config(REPO / "configs" / "tiny_cpu.yaml", overrides)) as trainer:
                reports = trainer.train(max_steps=args.steps)
            curve = [r.metrics["reward/mean"] for r in reports]
            ok = min(r.metrics["reward/ok_fraction"] for r in reports)
            first, last = float(np.mean(curve[:3])), float(np.mean(curve[-3:]))
            spread = float(np.std(reports[0].rewards[reports[0].ok]))
            rows.append((seed, first, last, last - first, (last - first) / spread, ok, time.perf_counter() - started))
            print(f"seed {seed}: " + " ".join(f"{r:.3f}" for r in curve), flush=True)

    print(f"\nquality = brightness (TEST-ONLY backend) through reward3d serve ({args.workers} worker), "
          f"{args.steps} steps, 16 videos per step")  # fmt: skip
    print(f"{'seed':>4} {'steps 0-2':>9} {'last 3':>7} {'gain':>7} {'gain/sd0':>8} {'min ok':>6} {'time s':>7}")
    for seed, first, last, gain, effect, ok, seconds in rows:
        print(f"{seed:>4} {first:>9.4f} {last:>7.4f} {gain:>+7.4f} {effect:>8.2f} {ok:>6.0%} {seconds:>7.1f}")
    gains = [r[3] for r in rows]
    effects = [r[4] for r in rows]
    sd = (lambda v: statistics.stdev(v) if len(v) > 1 else 0.0)
    print(f"mean gain {statistics.mean(gains):+.4f} (sd {sd(gains):.4f} over {len(rows)} seeds); "
          f"effect size {statistics.mean(effects):.2f} (sd {sd(effects):.2f}) per-video sd at step 0")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

#!/usr/bin/env python
"""Time per Flow-GRPO step, split into rollout / reward wait / update, and how much of the
reward time is hidden behind generation.

    python bench/trainer_step.py [--steps 6] [--reward-latency 0.3] [--reward-workers 4]
                                 [--rollout-batch 4] [--decoder vae]
    python bench/trainer_step.py --service [--service-workers 1] [--pin] [--steps 6] [--rollout-batch 4]

Runs the tiny CPU config (configs/tiny_cpu.yaml) twice in one process, side by side, with
the same seeds and a reward source that sleeps ``--reward-latency`` seconds per batch (a
stand-in for the service's compute; the brightness score itself is instant):

- overlapped: the trainer as shipped (each batch's rewards requested right after its rollout);
- blocking: the same reward source made synchronous (``submit`` waits for the result), i.e. a
  trainer that scores each batch before generating the next.

With ``--service`` the rewards come from the real service instead: ``reward3d serve`` (private
Redis, ``--service-workers`` workers, classical geometry, reconstruction + trajectory +
quality with the TEST-ONLY brightness quality backend, frames scored at long side 64) through
the SDK (``reward.source: http``); "blocking" then waits for each batch's HTTP result before
generating the next. The service's workers share the machine's CPU cores with the trainer,
unless ``--pin`` puts the service on the last core and the trainer on the others (standing in
for a reward service on its own hardware).

Prints the median over steps (the first step is a warm-up and is dropped) of each phase, the
hidden share (1 - reward time after the last rollout / total reward time) and the speed-up.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import copy
import os
import statistics
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import torch  # noqa: E402

from trainer_client.rewards import InProcessRewardSource, brightness_reward  # noqa: E402
from trainer_client.trainer.config import load_config  # noqa: E402
from trainer_client.trainer.loop import Trainer, build_reward_source  # noqa: E402
from trainer_client.trainer.prompts import load_prompt_set  # noqa: E402
from trainer_client.trainer.wan import build_tiny_wan  # noqa: E402


class Blocking:
    """Wraps a RewardSource so that submit() returns only once the result is there."""

    def __init__(self, inner):
        self.inner = inner

    def submit(self, videos, prompts, *, terms=None, weights=None):
        result = self.inner.submit(videos, prompts, terms=terms, weights=weights).result()
        done: concurrent.futures.Future = concurrent.futures.Future()
        done.set_result(result)
        return done

    def close(self):
        self.inner.close()


SERVICE = {  # what the service's workers score with in --service mode
    "REWARD3D_GEOMETRY_BACKEND": "classical",
    "REWARD3D_QUALITY_BACKEND": "brightness",  # TEST ONLY
    "REWARD3D_LONG_SIDE": "64",
    "REWARD3D_MAX_FRAMES": "9",
    "REWARD3D_CACHE_TTL_S": "0",  # every request computed (both modes generate the same videos)
}


def run(mode: str, args, components, out: Path, service=None) -> list[dict]:
    overrides = [
        f"run.output_dir={out / mode}", "logging.progress=false", "logging.tensorboard=false",
        f"grpo.rollout_batch_size={args.rollout_batch}", f"model.tiny.pixel_decoder={args.decoder}",
        "dynamic.enabled=false",
    ]  # fmt: skip
    if service is not None:
        overrides += [
            f"reward.url={service.url}", f"reward.api_key={service.key}", "reward.timeout_s=300",
            "reward.weights={reconstruction: 1.0, trajectory: 1.0, quality: 1.0}",
        ]  # fmt: skip
        source = build_reward_source(load_config(REPO / "configs" / "tiny_cpu.yaml", [*overrides, "reward.source=http"]).reward)
    else:
        source = InProcessRewardSource(brightness_reward, max_workers=args.reward_workers, latency_s=args.reward_latency)
    if mode == "blocking":
        source = Blocking(source)
    with Trainer(load_config(REPO / "configs" / "tiny_cpu.yaml", overrides), components=copy.deepcopy(components), reward_source=source) as trainer:
        return [trainer.step().metrics for _ in range(args.steps)]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=6, help="steps per mode (the first is dropped)")
    parser.add_argument("--reward-latency", type=float, default=0.3, help="seconds of reward compute per batch")
    parser.add_argument("--reward-workers", type=int, default=4, help="batches scored at once")
    parser.add_argument("--rollout-batch", type=int, default=4, help="videos per rollout batch (16 per step)")
    parser.add_argument("--decoder", choices=["vae", "linear"], default="vae", help="tiny model's pixel decoder")
    parser.add_argument("--service", action="store_true", help="rewards from reward3d serve through the SDK")
    parser.add_argument("--service-workers", type=int, default=1, help="worker processes of the service")
    parser.add_argument("--pin", action="store_true", help="service on the last CPU core, trainer on the others")
    args = parser.parse_args()
    torch.set_num_threads(1)

    config = load_config(REPO / "configs" / "tiny_cpu.yaml")
    components = build_tiny_wan(config.model.tiny, corpus=load_prompt_set("camera_train") + load_prompt_set("dynamic"))
    keys = ["time/rollout_s", "time/reward_wait_s", "time/update_s", "time/step_s", "time/reward_busy_s", "time/reward_hidden_share"]
    results = {}
    with tempfile.TemporaryDirectory() as tmp, contextlib.ExitStack() as stack:
        service = None
        if args.service:
            from bench.local_service import LocalService

            cores = sorted(os.sched_getaffinity(0))
            service_cpus = {cores[-1]} if args.pin and len(cores) > 1 else None
            service = stack.enter_context(LocalService(Path(tmp), workers=args.service_workers, cpus=service_cpus, **SERVICE))
            if service_cpus:
                os.sched_setaffinity(0, set(cores[:-1]))
        for mode in ("overlapped", "blocking"):
            metrics = run(mode, args, components, Path(tmp), service)[1:]
            results[mode] = {k: statistics.median(m[k] for m in metrics) for k in keys}

    samples = config.samples_per_step
    batches = -(-samples // args.rollout_batch)
    if args.service:
        where = (f"rewards from reward3d serve ({args.service_workers} worker, classical geometry + brightness "
                 f"quality, all terms) through the SDK{', service pinned to its own core' if args.pin else ''}")  # fmt: skip
    else:
        where = f"reward latency {args.reward_latency:g} s per batch, {args.reward_workers} reward workers"
    print(f"tiny Wan 2.1 ({args.decoder} decoder), {samples} videos per step in {batches} batches, {where}, "
          f"median of {args.steps - 1} steps (1 thread)")  # fmt: skip
    print(f"{'mode':<11} {'rollout s':>9} {'reward wait s':>13} {'update s':>8} {'step s':>7} {'reward busy s':>13} {'hidden':>7}")
    for mode, r in results.items():
        print(
            f"{mode:<11} {r['time/rollout_s']:>9.3f} {r['time/reward_wait_s']:>13.3f} {r['time/update_s']:>8.3f} "
            f"{r['time/step_s']:>7.3f} {r['time/reward_busy_s']:>13.3f} {r['time/reward_hidden_share']:>7.0%}"
        )
    print("note: in blocking mode each batch is scored before the next is generated (submit waits): that time is in step s only")
    speedup = results["blocking"]["time/step_s"] / results["overlapped"]["time/step_s"]
    print(f"step time blocking / overlapped: {speedup:.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

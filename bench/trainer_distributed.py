#!/usr/bin/env python
"""Throughput of the data-parallel trainer per step: rollout, reward wait, sync wait, update and
all-reduce per rank, for 1 process vs 2 ranks (DDP, FSDP) with the same global batch.

    python bench/trainer_distributed.py [--steps 6] [--prompts 4] [--reward-latency 0.5]
                                        [--plot bench/trainer_distributed.png]

Each configuration is a real ``torchrun --nproc_per_node N`` run of ``reward3d train`` on the
tiny CPU config (gloo), global batch ``--prompts`` x 8 videos per step (each rank gets
``prompts / N`` whole groups), rollout batches of 4 videos, and the in-process brightness
reward that sleeps ``--reward-latency`` seconds per batch (a stand-in for the service, which
scales separately). Every run writes throughput.csv / .md / .png (rank 0); this script prints
the medians over steps (the first step, a warm-up, is dropped) of each column per rank, the
global videos per second, and copies the plot of the 2-rank DDP run to ``--plot``.

CPU caveat: on a machine with fewer cores than ranks x threads the ranks share cores, so the
speed-up measures overlap of reward waits and contention, not GPU scaling.
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from trainer_client.trainer.throughput import read_csv  # noqa: E402


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def run(out: Path, ranks: int, strategy: str, args) -> float:
    overrides = [
        "logging.progress=false", "logging.tensorboard=false", "dynamic.enabled=false", "run.save_every=1000",
        f"grpo.prompts_per_step={args.prompts // ranks}", "grpo.rollout_batch_size=4", "grpo.train_micro_batch_size=8",
        f"reward.latency_s={args.reward_latency}", f"distributed.strategy={strategy}", f"run.max_steps={args.steps}",
    ]  # fmt: skip
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(ranks), "--master-port",
               str(free_port()), "--module", "trainer_client.cli", str(REPO / "configs" / "tiny_cpu.yaml"),
               "--output-dir", str(out), "--no-export", *(a for o in overrides for a in ("--set", o))]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    started = time.perf_counter()
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True)
    if done.returncode:
        sys.exit(f"{' '.join(command)} failed:\n{done.stderr[-3000:]}")
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--prompts", type=int, default=4, help="prompt groups per step, all ranks together")
    parser.add_argument("--reward-latency", type=float, default=0.5)
    parser.add_argument("--plot", type=Path, default=REPO / "bench" / "trainer_distributed.png")
    args = parser.parse_args()
    columns = ["rollout_s", "reward_wait_s", "sync_wait_s", "update_s", "allreduce_s", "step_s"]
    print(f"global batch {args.prompts} x 8 videos, rollout batches of 4, reward {args.reward_latency} s per batch, "
          f"{args.steps} steps (first dropped), medians\n")  # fmt: skip
    print("| run | rank | " + " | ".join(c.removesuffix("_s").replace("_", " ") + " s" for c in columns) + " | videos/s (all ranks) |")
    print("|---" * (len(columns) + 3) + "|")
    with tempfile.TemporaryDirectory() as scratch:
        for ranks, strategy in ((1, "ddp"), (2, "ddp"), (2, "fsdp")):
            out = Path(scratch) / f"{ranks}-{strategy}"
            run(out, ranks, strategy, args)
            rows = [r for r in read_csv(out / "throughput.csv") if r.step > 0]
            steps = sorted({r.step for r in rows})
            wall = [max(r.step_s for r in rows if r.step == s) for s in steps]
            rate = args.prompts * 8 / statistics.median(wall)
            name = "1 process" if ranks == 1 else f"2 ranks {strategy.upper()}"
            for rank in range(ranks):
                mine = [r for r in rows if r.rank == rank]
                cells = " | ".join(f"{statistics.median(getattr(r, c) for r in mine):.3f}" for c in columns)
                print(f"| {name} | {rank} | {cells} | {rate:.1f} |")
            if ranks == 2 and strategy == "ddp":
                shutil.copy(out / "throughput.png", args.plot)
    print(f"\nplot of the 2-rank DDP run: {args.plot.relative_to(REPO) if args.plot.is_relative_to(REPO) else args.plot}")


if __name__ == "__main__":
    main()

"""Where a step's time goes, per rank: a CSV row per (step, rank), a markdown table of the
means and a PNG plot (written by rank 0).

Columns (seconds on each rank's own clock):

- ``rollout_s``: generating and decoding this rank's videos (sum over its rollout batches);
- ``reward_wait_s``: after the last rollout, waiting for this rank's rewards (not hidden
  behind generation);
- ``sync_wait_s``: in the all-reduce of the ok counts, i.e. waiting for the slowest rank to
  have its rewards (0 in a single process);
- ``update_s``: the PPO/KL update (forwards, backwards, gradient reduction, optimizer, EMA);
- ``allreduce_s``: DDP only, the part of ``update_s`` during which gradient all-reduces were
  in flight (union of bucket intervals; with FSDP the reduce-scatter is not separated);
- ``step_s``: the whole step on this rank; ``reward_hidden_share``: share of this rank's reward
  time that overlapped its own rollouts.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path

__all__ = ["ThroughputRow", "append_csv", "summary_table", "write_summary", "PHASES"]

PHASES = ("rollout_s", "reward_wait_s", "sync_wait_s", "update_s")  # they add up to ~step_s


@dataclass(frozen=True)
class ThroughputRow:
    step: int
    rank: int
    samples: int  # videos this rank generated in the step
    rollout_s: float
    reward_wait_s: float
    sync_wait_s: float
    update_s: float
    allreduce_s: float
    step_s: float
    reward_hidden_share: float


COLUMNS = [f.name for f in fields(ThroughputRow)]


def append_csv(path: Path, rows: Sequence[ThroughputRow]) -> None:
    new = not path.exists()
    with open(path, "a", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=COLUMNS)
        if new:
            writer.writeheader()
        for row in rows:
            writer.writerow({k: (round(v, 6) if isinstance(v, float) else v) for k, v in asdict(row).items()})


def read_csv(path: Path) -> list[ThroughputRow]:
    with open(path, newline="", encoding="utf-8") as handle:
        return [
            ThroughputRow(**{k: (int(v) if k in ("step", "rank", "samples") else float(v)) for k, v in record.items()})
            for record in csv.DictReader(handle)
        ]


def summary_table(rows: Sequence[ThroughputRow]) -> str:
    """Markdown: per rank, the mean of each column over steps, and videos per second."""
    header = "| rank | steps | rollout s | reward wait s | sync wait s | update s | all-reduce s | step s | videos/s | reward hidden |"
    lines = [header, "|---" * (header.count("|") - 1) + "|"]
    for rank in sorted({r.rank for r in rows}):
        mine = [r for r in rows if r.rank == rank]
        mean = {name: sum(getattr(r, name) for r in mine) / len(mine) for name in COLUMNS[3:]}
        rate = sum(r.samples for r in mine) / max(1e-9, sum(r.step_s for r in mine))
        lines.append(
            f"| {rank} | {len(mine)} | {mean['rollout_s']:.3f} | {mean['reward_wait_s']:.3f} | {mean['sync_wait_s']:.3f} | "
            f"{mean['update_s']:.3f} | {mean['allreduce_s']:.4f} | {mean['step_s']:.3f} | {rate:.2f} | "
            f"{mean['reward_hidden_share']:.0%} |"
        )
    steps = sorted({r.step for r in rows})
    if steps:
        total = sum(r.samples for r in rows)
        wall = sum(max(r.step_s for r in rows if r.step == s) for s in steps)  # a step lasts as long as its slowest rank
        lines.append(f"\nAll ranks: {total} videos in {wall:.2f} s of steps = {total / max(wall, 1e-9):.2f} videos/s.")
    return "\n".join(lines) + "\n"


def plot(rows: Sequence[ThroughputRow], path: Path) -> None:
    """Stacked bars per step and rank: rollout, reward wait, sync wait, update (all-reduce hatched)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ranks = sorted({r.rank for r in rows})
    steps = sorted({r.step for r in rows})
    width = 0.8 / max(1, len(ranks))
    colors = {"rollout_s": "#4c72b0", "reward_wait_s": "#dd8452", "sync_wait_s": "#c44e52", "update_s": "#55a868"}
    figure, axis = plt.subplots(figsize=(max(6, 0.5 * len(steps) * len(ranks) + 2), 4))
    for j, rank in enumerate(ranks):
        mine = {r.step: r for r in rows if r.rank == rank}
        xs = [i + (j - (len(ranks) - 1) / 2) * width for i, s in enumerate(steps) if s in mine]
        bottom = [0.0] * len(xs)
        present = [mine[s] for s in steps if s in mine]
        for name in PHASES:
            heights = [getattr(r, name) for r in present]
            axis.bar(xs, heights, width, bottom=bottom, color=colors[name], edgecolor="white",
                     label=name.removesuffix("_s").replace("_", " ") if j == 0 else None)  # fmt: skip
            if name == "update_s":
                axis.bar(xs, [r.allreduce_s for r in present], width, bottom=bottom, fill=False, hatch="//",
                         edgecolor="black", linewidth=0, label="all-reduce (in update)" if j == 0 else None)  # fmt: skip
            bottom = [b + h for b, h in zip(bottom, heights)]
    axis.set_xticks(range(len(steps)), [str(s) for s in steps])
    axis.set_xlabel(f"step (bars: ranks {', '.join(map(str, ranks))} left to right)")
    axis.set_ylabel("seconds")
    axis.set_title("Time per step and rank")
    axis.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.0, 1.0))
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def write_summary(rows: Sequence[ThroughputRow], directory: Path) -> None:
    (directory / "throughput.md").write_text("# Throughput per rank (means over steps)\n\n" + summary_table(rows))
    plot(rows, directory / "throughput.png")

"""How much reward time was hidden behind generation: pure functions on timestamps.

All times are seconds on one monotonic clock (``time.perf_counter()`` in the trainer
process). A reward interval runs from a batch's submission to the moment its future
completed, as seen by the trainer (queueing and transfer included). A rollout interval is the
generation of one batch. Reward time is *hidden* while some rollout is running: those seconds
cost the trainer nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["merge_intervals", "union_length", "intersection_length", "OverlapSummary", "summarise_overlap"]

Interval = tuple[float, float]


def merge_intervals(intervals: Sequence[Interval]) -> list[Interval]:
    """Disjoint, sorted intervals covering the same time (empty ones dropped)."""
    merged: list[list[float]] = []
    for start, end in sorted((a, b) for a, b in intervals if b > a):
        if merged and start <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], end)
        else:
            merged.append([start, end])
    return [(a, b) for a, b in merged]


def union_length(intervals: Sequence[Interval]) -> float:
    return sum(b - a for a, b in merge_intervals(intervals))


def intersection_length(first: Sequence[Interval], second: Sequence[Interval]) -> float:
    """Time covered by both sets of intervals."""
    a, b = merge_intervals(first), merge_intervals(second)
    total, i, j = 0.0, 0, 0
    while i < len(a) and j < len(b):
        total += max(0.0, min(a[i][1], b[j][1]) - max(a[i][0], b[j][0]))
        if a[i][1] < b[j][1]:
            i += 1
        else:
            j += 1
    return total


@dataclass(frozen=True)
class OverlapSummary:
    reward_busy_s: float  # union of reward intervals
    reward_hidden_s: float  # the part of it during which a rollout was running
    hidden_share: float  # hidden / busy (0 when there was no reward time)

    def as_metrics(self, prefix: str = "time/") -> dict[str, float]:
        return {
            f"{prefix}reward_busy_s": self.reward_busy_s,
            f"{prefix}reward_hidden_s": self.reward_hidden_s,
            f"{prefix}reward_hidden_share": self.hidden_share,
        }


def summarise_overlap(reward_intervals: Sequence[Interval], rollout_intervals: Sequence[Interval]) -> OverlapSummary:
    busy = union_length(reward_intervals)
    hidden = intersection_length(reward_intervals, rollout_intervals)
    return OverlapSummary(reward_busy_s=busy, reward_hidden_s=hidden, hidden_share=hidden / busy if busy > 0 else 0.0)

"""Run a job's items in batches; on out-of-memory, split the batch and try again.

Pure control flow (no torch, no Redis), so it is tested with fake scorers. ``score_batch``
yields ``(index, outcome)`` as each item completes, so work done before an OOM is kept; the
rest of the batch is split in halves, down to single items; a single item that still runs
out of memory after memory is freed gets the ``out_of_memory`` outcome, and the others go on.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

ScoreBatch = Callable[[Sequence[int]], Iterable[tuple[int, Any]]]


def is_out_of_memory(exc: BaseException) -> bool:
    """CUDA or host allocator out of memory (torch raises RuntimeError subclasses)."""
    if isinstance(exc, MemoryError) or type(exc).__name__ == "OutOfMemoryError":
        return True
    message = str(exc).lower()
    return isinstance(exc, RuntimeError) and (
        "out of memory" in message or "can't allocate memory" in message
    )


def run_in_batches(
    indices: Sequence[int],
    *,
    batch_size: int,
    score_batch: ScoreBatch,
    on_outcome: Callable[[int, Any], None],
    out_of_memory_outcome: Callable[[int, BaseException], Any],
    free_memory: Callable[[], None] = lambda: None,
) -> Iterator[tuple[str, list[int]]]:
    """Score every index once. Yields ``("split", batch)`` / ``("retry", [index])`` events
    (for logs and tests); raises whatever is not an out-of-memory error."""
    pending = deque(list(indices[i : i + batch_size]) for i in range(0, len(indices), batch_size))
    retried: set[int] = set()
    while pending:
        batch = pending.popleft()
        done: set[int] = set()
        try:
            for index, outcome in score_batch(batch):
                on_outcome(index, outcome)
                done.add(index)
        except Exception as exc:
            if not is_out_of_memory(exc):
                raise
            free_memory()
            rest = [i for i in batch if i not in done]
            if len(rest) > 1:
                half = len(rest) // 2
                pending.extendleft([rest[half:], rest[:half]])  # first half runs first
                yield "split", rest
            elif rest and rest[0] not in retried:
                retried.add(rest[0])
                pending.appendleft(rest)
                yield "retry", rest
            elif rest:
                on_outcome(rest[0], out_of_memory_outcome(rest[0], exc))

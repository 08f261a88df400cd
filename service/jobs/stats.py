"""Fleet-wide counters and histograms in Redis: workers write, the API's /metrics reads.

Workers are separate processes (often on other machines), so their measurements (queue wait,
time per stage, failures by reason, cache hits) are accumulated in Redis hashes and exposed
by every API replica's ``/metrics`` as ordinary Prometheus counters and histograms.

    reward3d:stats:<kind>|<name>|<labels json>   hash: value | count, sum, le=<bound>...
    reward3d:stats:index                         set of the above suffixes
"""

from __future__ import annotations

import json
from collections.abc import Iterator

from service.jobs import keys

# Seconds: from a cache hit (ms) to a long item on CPU (minutes).
BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
             120.0, 300.0, 600.0)  # fmt: skip


def _suffix(kind: str, name: str, labels: dict[str, str] | None) -> str:
    return f"{kind}|{name}|{json.dumps(labels or {}, sort_keys=True)}"


class StatsWriter:
    def __init__(self, connection) -> None:
        self.connection = connection

    def increment(self, name: str, labels: dict[str, str] | None = None, amount: float = 1,
                  pipe=None) -> None:  # fmt: skip
        suffix = _suffix("counter", name, labels)
        target = pipe if pipe is not None else self.connection.pipeline(transaction=False)
        target.sadd(keys.stats_index(), suffix)
        target.hincrbyfloat(keys.stats(suffix), "value", amount)
        if pipe is None:
            target.execute()

    def observe(self, name: str, seconds: float, labels: dict[str, str] | None = None,
                pipe=None) -> None:  # fmt: skip
        suffix = _suffix("histogram", name, labels)
        key = keys.stats(suffix)
        target = pipe if pipe is not None else self.connection.pipeline(transaction=False)
        target.sadd(keys.stats_index(), suffix)
        target.hincrby(key, "count", 1)
        target.hincrbyfloat(key, "sum", float(seconds))
        for bound in BUCKETS_S:
            if seconds <= bound:
                target.hincrby(key, f"le={bound}", 1)  # cumulative counts are summed on read
                break
        if pipe is None:
            target.execute()


def read_stats(connection) -> Iterator[tuple[str, str, dict[str, str], dict[str, float]]]:
    """(kind, name, labels, fields) for every stats hash."""
    suffixes = sorted(s.decode() if isinstance(s, bytes) else s
                      for s in connection.smembers(keys.stats_index()))  # fmt: skip
    if not suffixes:
        return
    with connection.pipeline(transaction=False) as pipe:
        for suffix in suffixes:
            pipe.hgetall(keys.stats(suffix))
        hashes = pipe.execute()
    for suffix, raw in zip(suffixes, hashes):
        kind, name, labels = suffix.split("|", 2)
        fields = {(k.decode() if isinstance(k, bytes) else k): float(v) for k, v in raw.items()}
        yield kind, name, json.loads(labels), fields


def histogram_buckets(fields: dict[str, float]) -> list[tuple[str, float]]:
    """Cumulative (upper bound, count) pairs in Prometheus order, ending with +Inf."""
    running, buckets = 0.0, []
    for bound in BUCKETS_S:
        running += fields.get(f"le={bound}", 0.0)
        buckets.append((repr(bound), running))
    buckets.append(("+Inf", fields.get("count", 0.0)))
    return buckets


def mean_item_seconds(connection) -> float | None:
    raw = connection.hmget(keys.stats(_suffix("histogram", "item_seconds", None)), "count", "sum")
    count, total = (float(v) if v is not None else 0.0 for v in raw)
    return total / count if count else None

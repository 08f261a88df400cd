"""Every Redis key the service writes, in one place (rq keeps its own under ``rq:``).

Keep Redis private: whoever can write to it can enqueue work (the job functions are
allow-listed and the serializer is JSON, so it is not code execution, but it is still work).
"""

from __future__ import annotations

PREFIX = "reward3d"


def job(job_id: str) -> str:
    """Hash: the job record (spec, status, timestamps, error)."""
    return f"{PREFIX}:job:{job_id}"


def job_items(job_id: str) -> str:
    """Hash: item index -> item outcome JSON (written once per item)."""
    return f"{PREFIX}:job:{job_id}:items"


def active() -> str:
    """Sorted set: unfinished job ids scored by creation time (queue bound, oldest age)."""
    return f"{PREFIX}:active"


def inflight(key_id: str) -> str:
    """Set: unfinished job ids of one API key (per-key limit)."""
    return f"{PREFIX}:inflight:{key_id}"


def idempotency(key_id: str, idempotency_key: str) -> str:
    """String: JSON {job_id, fingerprint} for an Idempotency-Key of one API key."""
    return f"{PREFIX}:idem:{key_id}:{idempotency_key}"


def content(key_id: str, fingerprint: str) -> str:
    """String: job id of the last job with this exact content (dedup without a key)."""
    return f"{PREFIX}:content:{key_id}:{fingerprint}"


def result_cache(cache_key: str) -> str:
    """String: a RewardResult JSON for one (video, options, versions) combination."""
    return f"{PREFIX}:cache:{cache_key}"


def worker(name: str) -> str:
    """Hash with a short TTL: a live worker (warm flag, versions, settings it scores with)."""
    return f"{PREFIX}:worker:{name}"


def worker_pattern() -> str:
    return f"{PREFIX}:worker:*"


def events() -> str:
    """Pub/sub channel: a message per terminal transition (the job id and its status)."""
    return f"{PREFIX}:events"


def sweep_lock() -> str:
    return f"{PREFIX}:lock:sweep"


def janitor_stamp() -> str:
    return f"{PREFIX}:janitor:last"


def intermediate_seen(job_id: str) -> str:
    return f"{PREFIX}:intermediate-seen:{job_id}"


def stats(name: str) -> str:
    """Hash: a fleet-wide counter or histogram written by workers, read by /metrics."""
    return f"{PREFIX}:stats:{name}"


def stats_index() -> str:
    """Set: names of every stats hash (so /metrics never scans the keyspace)."""
    return f"{PREFIX}:stats:index"

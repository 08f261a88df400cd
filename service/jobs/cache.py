"""Result cache keys: same video + same request + same scorer = the same RewardResult.

The scorer is summarised by a *fingerprint*: the reward spec version, the package version,
the backend versions the pipeline reports, the device type, and every setting that can
change a score (all settings except the service's own plumbing, listed below). Bumping any
of these changes every key, so a stale result is never served.
"""

from __future__ import annotations

import hashlib
import json

# Settings that cannot change a score (where things live, limits, timeouts, the queue).
SERVICE_FIELDS = frozenset({
    "worker_ready_file",
    "redis_url", "api_keys", "api_keys_file", "insecure_no_auth", "metrics_public", "data_dir",
    "blob_dir", "queue_name", "host", "port", "embedded_workers", "max_body_mb", "max_json_mb",
    "max_items_per_request", "max_input_frames", "max_input_side", "max_queued_jobs",
    "max_inflight_per_key", "max_wait_s", "job_retries", "retry_backoff_s", "item_time_limit_s",
    "heartbeat_interval_s", "heartbeat_ttl_s", "watchdog_interval_s", "result_ttl_s",
    "cache_ttl_s", "blob_ttl_s", "idempotency_ttl_s",
    "blob_store", "s3_bucket", "s3_prefix", "s3_endpoint_url", "s3_region",
})  # fmt: skip


def _digest(payload) -> str:
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def scorer_fingerprint(settings, *, versions: dict, device_type: str) -> str:
    """Everything about this worker that can change a score, hashed."""
    scoring = settings.model_dump(mode="json", exclude=set(SERVICE_FIELDS))
    return _digest({"settings": scoring, "versions": versions, "device": device_type})


def item_cache_key(fingerprint: str, item) -> str:
    """Key of one item's result: its inputs' digests, prompt, trajectory and options."""
    return _digest({
        "scorer": fingerprint,
        # Named by the digest's algorithm: keys of the sha256 store never equal these.
        "video_blake3": item.video.blake3,
        "geometry_blake3": {name: ref.blake3 for name, ref in (item.geometry or {}).items()},
        "prompt": item.prompt,
        "trajectory": item.trajectory.model_dump(mode="json") if item.trajectory else None,
        "options": item.options.model_dump(mode="json", exclude_none=True),
    })  # fmt: skip


def request_fingerprint(spec) -> str:
    """Digest of a whole request (dedup of identical submissions)."""
    return _digest(spec.model_dump(mode="json", exclude_none=True))

"""Job records in Redis: the service's own source of truth for a scoring job.

rq moves work around (queue, retries, which worker holds what); the record says what the job
*is* and what came of it:

    reward3d:job:<id>        hash   spec (items with blob references), status, times, error
    reward3d:job:<id>:items  hash   item index -> outcome JSON, written once per item

Status: ``queued -> running -> finished | failed | cancelled``, and ``running -> queued``
again when an attempt is lost (its worker died) or failed and rq will retry it. The step to a terminal status
is a compare-and-set (Lua), so it happens exactly once whatever crashes and re-runs occur; a
message on ``reward3d:events`` announces it (long-polls wait on it).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from service.jobs import keys
from service.jobs.blobs import BlobRef
from service.schemas import ScoreOptions, TrajectoryTarget

TERMINAL = ("finished", "failed", "cancelled")
JobStatus = Literal["queued", "running", "finished", "failed", "cancelled"]


class ItemSpec(BaseModel):
    """One video to score, as a worker needs it."""

    model_config = ConfigDict(extra="forbid")

    id: str | None = Field(None, description="The client's tag, echoed back.")
    video: BlobRef
    geometry: dict[str, BlobRef] | None = Field(
        None, description="Known geometry (oracle arrays): depth, world_to_camera, intrinsics..."
    )
    prompt: str | None = None
    trajectory: TrajectoryTarget | None = None
    options: ScoreOptions = Field(default_factory=ScoreOptions)
    report: bool = Field(False, description="Keep an HTML report page (service/jobs/reports.py).")


class JobSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    items: list[ItemSpec]

    def blob_digests(self) -> set[str]:
        digests = set()
        for item in self.items:
            digests.add(item.video.blake3)
            digests.update(ref.blake3 for ref in (item.geometry or {}).values())
        return digests


class JobError(BaseModel):
    code: str
    detail: str


@dataclass
class JobRecord:
    id: str
    status: str
    key_id: str
    created_at: float
    num_items: int
    item_ids: list[str | None]
    spec_json: str
    started_at: float | None = None
    finished_at: float | None = None
    attempts: int = 0
    worker: str | None = None
    error: JobError | None = None
    fingerprint: str = ""

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL

    def spec(self) -> JobSpec:
        return JobSpec.model_validate_json(self.spec_json)


# Compare-and-set to a terminal status; also drops the job from the unfinished sets, gives
# the record its lifetime and announces the transition. Returns 'ok', or the status it had.
_FINISH = """
local status = redis.call('HGET', KEYS[1], 'status')
if not status then return false end
if status == 'finished' or status == 'failed' or status == 'cancelled' then return status end
redis.call('HSET', KEYS[1], 'status', ARGV[1], 'finished_at', ARGV[2], 'error', ARGV[3])
redis.call('ZREM', KEYS[3], ARGV[4])
redis.call('SREM', KEYS[4], ARGV[4])
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[5]))
redis.call('EXPIRE', KEYS[2], tonumber(ARGV[5]))
redis.call('PUBLISH', ARGV[6], ARGV[4] .. ' ' .. ARGV[1])
return 'ok'
"""

# queued/running -> running (counting attempts); returns the status before (or the terminal one).
_START = """
local status = redis.call('HGET', KEYS[1], 'status')
if not status then return false end
if status == 'finished' or status == 'failed' or status == 'cancelled' then return status end
redis.call('HSET', KEYS[1], 'status', 'running', 'worker', ARGV[1])
redis.call('HSETNX', KEYS[1], 'started_at', ARGV[2])
redis.call('HINCRBY', KEYS[1], 'attempts', 1)
return status
"""

# running -> queued when an attempt ended without an outcome and rq will retry it: the record
# says what is true (nobody runs it now), keeps the attempt count, and remembers why.
_REQUEUE = """
local status = redis.call('HGET', KEYS[1], 'status')
if status ~= 'running' then return status end
redis.call('HSET', KEYS[1], 'status', 'queued', 'last_error', ARGV[1])
redis.call('HDEL', KEYS[1], 'worker')
return 'ok'
"""

# An item outcome is written once, and only while the job is unfinished.
_STORE_ITEM = """
local status = redis.call('HGET', KEYS[1], 'status')
if not status or status == 'finished' or status == 'failed' or status == 'cancelled' then
  return -1
end
return redis.call('HSETNX', KEYS[2], ARGV[1], ARGV[2])
"""


def _text(value) -> str | None:
    if value is None:
        return None
    return value.decode() if isinstance(value, bytes) else str(value)


class JobRecords:
    """Reads and writes job records (sync redis-py; the API calls it from a thread pool)."""

    def __init__(self, connection, *, result_ttl_s: int) -> None:
        self.connection = connection
        self.result_ttl_s = result_ttl_s
        self._finish = connection.register_script(_FINISH)
        self._start = connection.register_script(_START)
        self._requeue = connection.register_script(_REQUEUE)
        self._store_item = connection.register_script(_STORE_ITEM)

    # -- creating (inside the submit transaction, see queue.submit_job) ----------------------
    @staticmethod
    def create_fields(job_id: str, spec: JobSpec, *, key_id: str, fingerprint: str,
                      now: float) -> dict[str, str]:  # fmt: skip
        return {
            "id": job_id,
            "status": "queued",
            "key_id": key_id,
            "created_at": repr(now),
            "num_items": str(len(spec.items)),
            "item_ids": json.dumps([item.id for item in spec.items]),
            "spec": spec.model_dump_json(exclude_none=True),
            "fingerprint": fingerprint,
            "attempts": "0",
        }

    # -- reading ----------------------------------------------------------------------------
    def load(self, job_id: str) -> JobRecord | None:
        raw = self.connection.hgetall(keys.job(job_id))
        if not raw:
            return None
        fields = {_text(k): _text(v) for k, v in raw.items()}
        if "status" not in fields or "spec" not in fields:
            return None  # a stray partial hash (never created by us): treat as absent
        error = fields.get("error")
        return JobRecord(
            id=job_id,
            status=fields["status"],
            key_id=fields.get("key_id", ""),
            created_at=float(fields.get("created_at", 0.0)),
            num_items=int(fields.get("num_items", 0)),
            item_ids=json.loads(fields.get("item_ids", "[]")),
            spec_json=fields["spec"],
            started_at=float(fields["started_at"]) if fields.get("started_at") else None,
            finished_at=float(fields["finished_at"]) if fields.get("finished_at") else None,
            attempts=int(fields.get("attempts", 0)),
            worker=fields.get("worker"),
            error=JobError.model_validate_json(error) if error else None,
            fingerprint=fields.get("fingerprint", ""),
        )

    def status(self, job_id: str) -> str | None:
        return _text(self.connection.hget(keys.job(job_id), "status"))

    def item_outcomes(self, job_id: str) -> dict[int, str]:
        """Item index -> the stored outcome JSON (public item view, see tasks.item_outcome)."""
        raw = self.connection.hgetall(keys.job_items(job_id))
        return {int(_text(k)): _text(v) for k, v in raw.items()}

    def done_indices(self, job_id: str) -> set[int]:
        return {int(_text(k)) for k in self.connection.hkeys(keys.job_items(job_id))}

    def unfinished_ids(self) -> list[tuple[str, float]]:
        """(job id, created_at) of every unfinished job, oldest first."""
        return [(_text(m), s) for m, s in self.connection.zrange(keys.active(), 0, -1, withscores=True)]

    # -- state changes ----------------------------------------------------------------------
    def start(self, job_id: str, worker: str) -> str | None:
        """Mark running; returns the status before ('queued' on the first start)."""
        return _text(self._start(keys=[keys.job(job_id)], args=[worker, repr(time.time())]))

    def store_item(self, job_id: str, index: int, outcome_json: str) -> bool:
        """Write one item's outcome, once; False if already written or the job has ended."""
        written = self._store_item(keys=[keys.job(job_id), keys.job_items(job_id)],
                                   args=[str(index), outcome_json])  # fmt: skip
        return written == 1

    def finish(self, job_id: str, status: str, error: JobError | None = None) -> bool:
        """The one transition to a terminal status. False if the job had already ended."""
        if status not in TERMINAL:
            raise ValueError(f"not a terminal status: {status}")
        key_id = _text(self.connection.hget(keys.job(job_id), "key_id")) or ""
        outcome = self._finish(
            keys=[keys.job(job_id), keys.job_items(job_id), keys.active(), keys.inflight(key_id)],
            args=[status, repr(time.time()), error.model_dump_json() if error else "", job_id,
                  str(self.result_ttl_s), keys.events()],
        )  # fmt: skip
        return _text(outcome) == "ok"

    def requeue(self, job_id: str, error: JobError) -> bool:
        """Back to ``queued`` after a lost or failed attempt that will be retried (only from
        ``running``: a terminal job stays ended). False if the status was not ``running``."""
        return _text(self._requeue(keys=[keys.job(job_id)], args=[error.model_dump_json()])) == "ok"

    def note_error(self, job_id: str, error: JobError) -> None:
        """Remember why the last attempt failed (shown while the job is retried)."""
        self.connection.hset(keys.job(job_id), "last_error", error.model_dump_json())

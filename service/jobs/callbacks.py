"""What happens to a job record when rq gives up on an attempt (allow-listed callback).

rq calls this for every failed attempt: an exception escaping ``score_job`` (Redis went away
mid-job...) or an abandoned job (its worker stopped heartbeating: killed, OOM-killed, machine
lost). If rq will retry, the record goes back to ``queued`` (nobody runs it now) and notes
why; if not, the job fails, once.
Runs in a worker or in the watchdog of any process, so it must stay free of torch.
"""

from __future__ import annotations

import logging

from service.jobs.records import JobError, JobRecords
from service.jobs.stats import StatsWriter

log = logging.getLogger("reward3d.jobs")


def on_job_failure(job, connection, exc_type=None, exc_value=None, traceback=None) -> None:
    abandoned = exc_type is not None and exc_type.__name__ == "AbandonedJobError"
    if abandoned:
        error = JobError(code="worker_lost",
                         detail="the worker running this job stopped responding (killed or crashed)")  # fmt: skip
    else:
        name = exc_type.__name__ if exc_type is not None else "error"
        error = JobError(code="internal_error", detail=f"the job failed with {name} (see worker logs)")
    records = JobRecords(connection, result_ttl_s=int(job.meta.get("result_ttl_s", 86_400)))
    stats = StatsWriter(connection)
    if job.should_retry:
        log.warning("job %s: attempt failed (%s), will retry", job.id, error.code)
        if not records.requeue(job.id, error):
            records.note_error(job.id, error)
        stats.increment("jobs_requeued_total", {"reason": error.code})
        return
    log.error("job %s: failed for good (%s)", job.id, error.code)
    if records.finish(job.id, "failed", error):
        stats.increment("job_failures_total", {"reason": error.code})

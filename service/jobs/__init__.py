"""The job queue: how a scoring request becomes results, reliably (no torch at import).

    API  --(blobs: tensors on disk, keyed by BLAKE3)-->  blobs.py
    API  --(job record: items with blob references)-->   records.py  (Redis hash, our source of truth)
    API  --(rq job: only the job id, JSON, allow-listed function)-->  queue.py
    worker.py (rq SimpleWorker, one warm RewardPipeline) --> tasks.score_job(job_id)
    watchdog.py: re-queues jobs of silent workers, runs retries that are due, fails what cannot run.

Every accepted job reaches exactly one terminal state (finished, failed or cancelled): the
transition is a compare-and-set in Redis (records.py), so a re-run can never overwrite it.
"""

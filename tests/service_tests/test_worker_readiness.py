"""The worker's readiness file (REWARD3D_WORKER_READY_FILE): absent while models load, present
once the worker is warm, gone when it stops or fails; a stale one is never taken for ready."""

from __future__ import annotations

import json
import time

import pytest

from service.jobs import keys
from service.jobs.readiness import clear_ready, mark_ready

from .conftest import WorkerProcess, make_settings


def test_mark_and_clear(tmp_path):
    path = tmp_path / "run" / "ready"  # the parent is created
    mark_ready(path, {"name": "w1", "warm": True})
    assert json.loads(path.read_text()) == {"name": "w1", "warm": True}
    assert [p.name for p in path.parent.iterdir()] == ["ready"]  # no temp file left behind
    mark_ready(path, {"name": "w2"})  # replaced whole
    assert json.loads(path.read_text()) == {"name": "w2"}
    clear_ready(path)
    assert not path.exists()
    clear_ready(path)  # already gone: fine
    mark_ready(None, {})  # not configured: nothing to do
    clear_ready(None)


def _wait_for(predicate, timeout: float, process: WorkerProcess) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if process.process.poll() is not None:
            raise AssertionError(f"worker exited with {process.process.returncode}: "
                                 + process.log_path.read_text()[-3000:])  # fmt: skip
        assert time.monotonic() < deadline, process.log_path.read_text()[-3000:]
        time.sleep(0.05)


@pytest.mark.redis
def test_a_worker_is_ready_only_while_warm(redis_url, fresh_redis, tmp_path):
    ready = tmp_path / "ready"
    ready.write_text("left by a killed worker\n")  # stale: must not count as ready
    settings = make_settings(redis_url, tmp_path, worker_ready_file=ready)
    worker = WorkerProcess(settings, tmp_path / "worker.log").start()
    try:
        # The stale file goes before the models load; the fresh one comes once they are warm.
        _wait_for(lambda: not ready.exists() or ready.read_text().startswith("{"), 60, worker)
        _wait_for(ready.exists, 60, worker)
        info = json.loads(ready.read_text())
        assert info["warm"] is True and str(worker.pid) in info["name"].split("-")
        _wait_for(lambda: fresh_redis.exists(keys.worker(info["name"])), 10, worker)  # heartbeat
        assert worker.stop() == 0
        assert not ready.exists()
    finally:
        worker.stop()


@pytest.mark.redis
def test_a_worker_that_cannot_start_is_not_ready(redis_url, tmp_path):
    ready = tmp_path / "ready"
    ready.write_text("stale\n")
    # DA3 geometry on a machine without its checkpoint/CUDA: the worker exits at warm-up.
    settings = make_settings(redis_url, tmp_path, worker_ready_file=ready, geometry_backend="da3",
                             device="cuda", da3_model=str(tmp_path / "no-such-checkpoint"))  # fmt: skip
    worker = WorkerProcess(settings, tmp_path / "worker.log").start()
    code = worker.process.wait(120)
    assert code != 0, worker.log_path.read_text()
    assert not ready.exists()




def test_the_ready_file_does_not_change_the_scorer_fingerprint(tmp_path):
    """Where the file lives is plumbing: workers with and without one share the result cache."""
    from service.jobs.cache import scorer_fingerprint
    from service.settings import Settings

    plain = Settings(_env_file=None)
    with_file = Settings(_env_file=None, worker_ready_file=tmp_path / "ready")
    versions = {"reward3d": "x"}
    assert scorer_fingerprint(plain, versions=versions, device_type="cpu") == \
        scorer_fingerprint(with_file, versions=versions, device_type="cpu")  # fmt: skip
    scoring_change = Settings(_env_file=None, long_side=256)
    assert scorer_fingerprint(scoring_change, versions=versions, device_type="cpu") != \
        scorer_fingerprint(plain, versions=versions, device_type="cpu")  # fmt: skip

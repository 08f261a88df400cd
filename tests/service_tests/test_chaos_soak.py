"""The chaos soak (bench/chaos.py), short: ~1 minute of `reward3d serve` with 2 supervised
workers and 3 trainer clients, while 3 workers are kill -9'd at random moments and the soak's
own Redis is down for 10 s. Every accepted job completes, none twice, none lost, and no
client call fails; nobody restarts anything by hand. (The 10-minute version and its figures:
bench/RESULTS.md.)"""

from __future__ import annotations

import importlib.util
import shutil
import sys

import pytest

from .conftest import REPO

pytestmark = pytest.mark.slow


def load_chaos():
    spec = importlib.util.spec_from_file_location("bench_chaos", REPO / "bench" / "chaos.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # (its dataclasses look their module up there)
    spec.loader.exec_module(module)
    return module


def test_short_chaos_soak_loses_nothing(tmp_path):
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not on PATH")
    chaos = load_chaos()
    config = chaos.SoakConfig(minutes=1.0, clients=3, workers=2, worker_kills=3, api_kills=0,
                              outages_s=[10.0], seed=1, drain_timeout_s=180)  # fmt: skip
    report, calls = chaos.run_soak(config, tmp_path)
    summary = {k: v for k, v in vars(report).items() if k != "config"}
    assert report.worker_kills == 3 and len(report.outages) == 1, summary
    assert report.accepted > 0 and report.client_errors == 0, summary
    assert report.completed == report.accepted and report.lost == 0 and report.duplicated == 0, summary
    # Work went on after the outage: some calls began after Redis was back, and succeeded.
    outage_end = report.outages[0][1]
    assert any(c.started > outage_end and c.outcome == "ok" for c in calls), summary
    assert report.scored_after_redis_returned_s[0] is not None, summary  # a fresh job, right after

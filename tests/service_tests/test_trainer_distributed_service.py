"""Two trainer ranks (``torchrun --nproc_per_node 2``, gloo) against one real service: the API on
a free port, a worker process with the real pipeline (classical geometry, the TEST-ONLY
brightness quality backend) and Redis. Every reward arrives, each belongs to the rank's own
video (its quality score is that video's frame brightness), and each rank's first batch is
scored while its second is generated. About 40 s."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import pytest

from .conftest import API_KEY, ApiServer, WorkerProcess, make_settings

REPO = Path(__file__).resolve().parents[2]
TINY = REPO / "configs" / "tiny_cpu.yaml"


@pytest.fixture(scope="module")
def service(redis_url, fresh_redis, tmp_path_factory):
    root = tmp_path_factory.mktemp("dist-service")
    settings = make_settings(redis_url, root, geometry_backend="classical", quality_backend="brightness",
                             long_side=64, max_frames=9)  # fmt: skip
    server = ApiServer(settings).start()
    worker = WorkerProcess(settings, root / "worker.log").start().wait_warm(fresh_redis)
    yield server
    worker.stop()
    server.stop()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_two_ranks_share_one_service_without_crossing_rewards(service, tmp_path):
    out = tmp_path / "run"
    overrides = [
        "logging.progress=false", "logging.tensorboard=false", "logging.sample_log=true", "dynamic.enabled=false",
        "grpo.prompts_per_step=1", "grpo.rollout_batch_size=4", "run.max_steps=2", "run.save_every=2",
        "reward.source=http", f"reward.url={service.url}", f"reward.api_key={API_KEY}", "reward.timeout_s=120",
        "reward.max_workers=2", "reward.weights={reconstruction: 1.0, trajectory: 1.0, quality: 1.0}",
    ]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    env.update(OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master-port", str(free_port()),
               "--module", "trainer_client.cli", str(TINY), "--output-dir", str(out),
               *(a for o in overrides for a in ("--set", o))]  # fmt: skip
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]

    # all rewards arrived: 2 steps x 2 ranks x 8 videos, each scored
    samples = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    assert len(samples) == 32 and len({s["id"] for s in samples}) == 32
    assert all(s["ok"] and s["error"] is None for s in samples), [s["error"] for s in samples if not s["ok"]][:3]
    for s in samples:  # whole groups per rank: rank 0 has global samples 0-7, rank 1 8-15
        assert s["id"] == f"r{s['rank']}-s{s['step']}-i{s['sample_id']}" and s["sample_id"] // 8 == s["rank"]

    # none crossed: each quality score is the brightness of the frames the service samples from
    # that sample's own video (recorded by its rank before upload), and no other video's
    from service.pipeline.terms.quality import sample_frame_indices

    def own_brightness(sample):
        frames = sample_frame_indices(len(sample["frame_means"]))
        return sum(sample["frame_means"][i] for i in frames) / len(frames)

    expected = {s["id"]: own_brightness(s) for s in samples}
    for s in samples:
        error = abs(s["terms"]["quality"] - expected[s["id"]])
        others = [abs(s["terms"]["quality"] - v) for k, v in expected.items() if k != s["id"]]
        assert error < 1e-4 < min(others), (s["id"], error, min(others))

    # the reward wait overlapped rollouts on each rank: batch 1 was sent before batch 2 started
    # and was still being scored while batch 2 was generated
    timeline = defaultdict(list)
    for line in (out / "timeline.jsonl").read_text().splitlines():
        record = json.loads(line)
        timeline[record["rank"]].append(record)
    assert sorted(timeline) == [0, 1]
    for rank, steps in timeline.items():
        for record in steps:
            first, second = record["batches"]
            assert first["rollout_end"] <= first["submitted"] <= second["rollout_start"]
            assert first["completed"] > second["rollout_start"], (rank, record)
    rows = (out / "throughput.csv").read_text().splitlines()[1:]
    assert len(rows) == 4  # a timing row per step and rank

"""bench/gpu_latency.py without a GPU: its arguments, and that it measures nothing (and says
so) where CUDA is missing. ``--cpu-check`` runs every section with tiny models (not here: it
takes ~25 s; bench/RESULTS.md says when it was last run)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).resolve().parents[1] / "bench" / "gpu_latency.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("gpu_latency", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    yield module
    sys.modules.pop(spec.name, None)


def test_defaults_measure_the_permissive_checkpoint_at_81_and_16_frames(bench):
    args = bench.parse_args([])
    assert args.da3_model == "depth-anything/DA3-BASE" and args.head_model is None
    assert args.frames == [81, 16] and (args.height, args.width) == (480, 832)
    assert args.budget_s <= 480  # the whole command within 8 minutes
    check = bench.parse_args(["--cpu-check"])
    assert check.frames == [4] and check.repeats == 1


def test_budget_skips_and_names_what_does_not_fit(bench):
    budget = bench.Budget(seconds=10.0)
    assert budget.allows("small", 1.0)
    assert not budget.allows("big section", 60.0)
    assert budget.skipped and budget.skipped[0].startswith("big section")


@pytest.mark.skipif(torch.cuda.is_available(), reason="on a CUDA machine the script measures for real")
def test_without_cuda_it_measures_nothing_and_says_so(bench, capsys):
    assert bench.main([]) == 0
    assert "measured nothing" in capsys.readouterr().out

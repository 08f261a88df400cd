"""Choosing the DA3 backbone's execution path, with fallback (no GPU needed: the compilers
and the forward pass are stand-ins that succeed or fail on demand)."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch
from torch import nn

from service.pipeline.geometry import acceleration
from service.pipeline.geometry.acceleration import (
    accelerate_backbone,
    candidate_paths,
    plan_acceleration,
)


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.backbone = nn.Linear(2, 2)


@dataclass
class Loaded:
    network: nn.Module
    device: torch.device


class Compiled(nn.Module):
    def __init__(self, inner: nn.Module, path: str) -> None:
        super().__init__()
        self.inner, self.path = inner, path


def test_candidate_paths():
    assert candidate_paths("auto", "cpu") == ["eager"]
    assert candidate_paths("tensorrt", "cuda") == ["tensorrt", "torch_compile", "eager"]
    assert candidate_paths("torch_compile", "cuda") == ["torch_compile", "eager"]
    assert candidate_paths("eager", "cuda") == ["eager"]
    with pytest.raises(ValueError):
        candidate_paths("fast", "cuda")


def test_plan_on_cpu_is_eager_and_says_why():
    plan = plan_acceleration("auto", "cpu")
    assert plan.path == "eager" and "CPU" in plan.reason


def test_falls_back_and_restores_the_eager_backbone(monkeypatch, tmp_path):
    monkeypatch.setattr(acceleration, "path_prerequisites", lambda path: (True, "stand-in"))
    network = Net()
    original = network.backbone
    seen = []

    def run(images, path):
        seen.append((path, type(network.backbone).__name__))
        if path == "tensorrt":
            raise RuntimeError("engine build failed: unsupported op")

    result = accelerate_backbone(
        Loaded(network, torch.device("cuda")), mode="auto", example=torch.zeros(1, 2, 3, 14, 14),
        run=run, engine_cache=tmp_path, max_frames=16,
        compile_fn=lambda module, path, engine_cache: Compiled(module, path),
    )  # fmt: skip
    assert result.path == "torch_compile"
    assert "tensorrt: RuntimeError: engine build failed" in result.reason
    assert seen == [("tensorrt", "Compiled"), ("torch_compile", "Compiled")]
    assert isinstance(network.backbone, Compiled) and network.backbone.inner is original


def test_everything_failing_ends_in_eager_or_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.setattr(acceleration, "path_prerequisites", lambda path: (path == "eager", "n/a"))
    network = Net()
    result = accelerate_backbone(Loaded(network, torch.device("cuda")), mode="auto",
                                 example=torch.zeros(1, 2, 3, 14, 14), run=lambda i, p: None,
                                 engine_cache=tmp_path, max_frames=16)  # fmt: skip
    assert result.path == "eager" and "tensorrt: n/a" in result.reason
    assert isinstance(network.backbone, nn.Linear)

    def broken(images, path):
        raise ValueError("bad weights")

    with pytest.raises(RuntimeError, match="failed on every path"):
        accelerate_backbone(Loaded(network, torch.device("cpu")), mode="auto",
                            example=torch.zeros(1, 2, 3, 14, 14), run=broken,
                            engine_cache=tmp_path, max_frames=16)  # fmt: skip


def test_a_second_backend_starts_from_the_eager_backbone(monkeypatch, tmp_path):
    monkeypatch.setattr(acceleration, "path_prerequisites", lambda path: (True, "stand-in"))
    loaded = Loaded(Net(), torch.device("cuda"))
    original = loaded.network.backbone
    compile_fn = lambda module, path, engine_cache: Compiled(module, path)  # noqa: E731
    common = dict(example=torch.zeros(1, 2, 3, 14, 14), run=lambda i, p: None,
                  engine_cache=tmp_path, max_frames=16, compile_fn=compile_fn)  # fmt: skip
    assert accelerate_backbone(loaded, mode="tensorrt", **common).path == "tensorrt"
    assert accelerate_backbone(loaded, mode="torch_compile", **common).path == "torch_compile"
    assert loaded.network.backbone.inner is original  # not a compiled module wrapped again
    assert accelerate_backbone(loaded, mode="eager", **common).path == "eager"
    assert loaded.network.backbone is original

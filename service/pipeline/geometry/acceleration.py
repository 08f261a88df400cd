"""How the DA3 backbone runs on CUDA: TensorRT (fp16 engines, dynamic frame count, cached on
disk), ``torch.compile``, or eager; chosen at warm-up with automatic fallback.

``da3_compile`` (settings) names the first path to try:

    auto / tensorrt -> tensorrt, then torch_compile, then eager
    torch_compile   -> torch_compile, then eager
    eager           -> eager

A path counts as working only when warm-up forward passes through the whole network succeed
with it, at every configured request shape (``da3_warm_up_shapes``: frames and source size,
at least 3 frames so DA3's reference-view branch is the one compiled), twice each on a
compiled path, so a request of those shapes never compiles. Any failure (package missing,
unsupported op, engine build error) restores the eager backbone and tries the next one. The CPU always runs eager fp32. The chosen path and the
reasons for skipping the others are reported in the result's versions and by ``reward3d info``
(which only *plans*: it never compiles).

TensorRT goes through torch.compile's ``tensorrt`` backend: only the backbone (the DINOv2
trunk, ~90 % of the FLOPs) is compiled; the heads stay in fp32 PyTorch. The frame axis of the
input is marked dynamic (2..``da3_max_frames``); engines are stored under ``da3_engine_cache``
and reused by the next process (keyed by graph, input ranges and settings).
"""

from __future__ import annotations

import dataclasses
import importlib.util
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

PATHS = ("tensorrt", "torch_compile", "eager")
ENGINE_CACHE_BYTES = 20 * 1024**3


@dataclass(frozen=True)
class AccelerationResult:
    path: str  # "tensorrt", "torch_compile" or "eager"
    reason: str  # why this path (and why the ones before it were skipped)


def candidate_paths(mode: str, device_type: str) -> list[str]:
    """Paths to try, in order, for a ``da3_compile`` mode on a device type."""
    if device_type != "cuda" or mode == "eager":
        return ["eager"]
    if mode == "torch_compile":
        return ["torch_compile", "eager"]
    if mode in ("auto", "tensorrt"):
        return ["tensorrt", "torch_compile", "eager"]
    raise ValueError(f"unknown da3_compile mode {mode!r}; use one of auto, {', '.join(PATHS)}")


def path_prerequisites(path: str) -> tuple[bool, str]:
    """Can ``path`` be attempted here (packages importable)? Cheap: imports nothing heavy."""
    if path == "tensorrt":
        if importlib.util.find_spec("torch_tensorrt") is None:
            return False, "torch-tensorrt is not installed"
        return True, "torch-tensorrt importable"
    if path == "torch_compile":
        if importlib.util.find_spec("triton") is None:
            return False, "triton (torch.compile's CUDA code generator) is not installed"
        return True, "triton importable"
    return True, "always available"


def plan_acceleration(mode: str, device_type: str) -> AccelerationResult:
    """The path warm-up will try first that can be attempted here (for ``reward3d info``)."""
    if device_type != "cuda":
        return AccelerationResult("eager", "CPU: plain fp32 call (compilation is for CUDA)")
    skipped = []
    for path in candidate_paths(mode, device_type):
        ok, why = path_prerequisites(path)
        if ok:
            note = f" (skipped: {'; '.join(skipped)})" if skipped else ""
            return AccelerationResult(path, f"{why}; confirmed at warm-up{note}")
        skipped.append(f"{path}: {why}")
    return AccelerationResult("eager", "; ".join(skipped))


def backbone_slots(network: nn.Module) -> list[nn.Module]:
    """Modules holding a ``backbone`` attribute (one, or two for the nested variant)."""
    return [m for m in network.modules() if isinstance(getattr(m, "backbone", None), nn.Module)]


def tensorrt_options(engine_cache: Path) -> dict[str, Any]:
    """Options for torch.compile(backend="tensorrt"), limited to those this torch-tensorrt knows."""
    import torch_tensorrt

    wanted = {
        "enabled_precisions": {torch.float16, torch.float32},
        "min_block_size": 5,
        "cache_built_engines": True,
        "reuse_cached_engines": True,
        "engine_cache_dir": str(engine_cache),
        "engine_cache_size": ENGINE_CACHE_BYTES,
        # Cached engines are stored weight-stripped and refitted, so they must be refittable
        # (the option's name changed between releases).
        "make_refittable": True,
        "immutable_weights": False,
    }
    known = {field.name for field in dataclasses.fields(torch_tensorrt.dynamo.CompilationSettings)}
    return {key: value for key, value in wanted.items() if key in known}


def compile_backbone(backbone: nn.Module, path: str, *, engine_cache: Path) -> nn.Module:
    if path == "tensorrt":
        import torch_tensorrt  # noqa: F401  (registers the "tensorrt" backend)

        engine_cache.mkdir(parents=True, exist_ok=True)
        return torch.compile(backbone, backend="tensorrt", dynamic=False,
                             options=tensorrt_options(engine_cache))  # fmt: skip
    if path == "torch_compile":
        return torch.compile(backbone, dynamic=None)
    raise ValueError(f"nothing to compile for path {path!r}")


def mark_frames_dynamic(images: Tensor, max_frames: int) -> None:
    """Tell dynamo the frame axis of ``images`` [1,T,3,h,w] varies (one engine for 2..max)."""
    if images.shape[1] >= 2:
        torch._dynamo.mark_dynamic(images, 1, min=2, max=max(max_frames, images.shape[1]))


def accelerate_backbone(
    loaded,  # da3_checkpoint.LoadedDA3
    *,
    mode: str,
    example: Tensor | list[Tensor],  # [1,T,3,h,w] clip(s) at the request shapes, on the device
    run: Callable[[Tensor, str], Any],  # run(images, path): one forward pass of the network
    engine_cache: Path,
    max_frames: int,
    passes: int = 1,  # forward passes per example (2: the second must reuse what compiled)
    compile_fn: Callable[..., nn.Module] | None = None,  # default: compile_backbone
) -> AccelerationResult:
    """Install the first path that survives the warm-up passes over every example; restore
    eager on any failure."""
    examples = example if isinstance(example, list) else [example]
    compile_fn = compile_fn or compile_backbone  # looked up now, so tests can replace it
    slots = backbone_slots(loaded.network)
    if getattr(loaded, "eager_backbones", None) is None:
        loaded.eager_backbones = [slot.backbone for slot in slots]
    originals = loaded.eager_backbones
    for slot, original in zip(slots, originals):  # start from eager, whatever ran before
        slot.backbone = original
    skipped: list[str] = []
    for path in candidate_paths(mode, loaded.device.type):
        ok, why = path_prerequisites(path)
        if not ok:
            skipped.append(f"{path}: {why}")
            continue
        try:
            if path != "eager":
                for slot, original in zip(slots, originals):
                    slot.backbone = compile_fn(original, path, engine_cache=engine_cache)
            for images in examples:
                if path != "eager":
                    mark_frames_dynamic(images, max_frames)
                for _ in range(passes):
                    run(images, path)
        except Exception as exc:  # any failure: fall back, and say why
            for slot, original in zip(slots, originals):
                slot.backbone = original
            first_line = str(exc).splitlines()[0][:200] if str(exc) else ""
            skipped.append(f"{path}: {type(exc).__name__}: {first_line}")
            continue
        note = f" (skipped: {'; '.join(skipped)})" if skipped else ""
        reason = "CPU: plain fp32 call" if loaded.device.type != "cuda" else f"warm-up passed{note}"
        return AccelerationResult(path, reason)
    raise RuntimeError(f"DA3 warm-up failed on every path: {'; '.join(skipped)}")

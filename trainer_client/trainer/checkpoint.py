"""Checkpoints: everything needed to continue a run exactly where it stopped.

A checkpoint is a folder ``<output_dir>/checkpoints/step_0000060/`` (60 = steps completed):

- ``lora.safetensors``      the trained LoRA weights (fp32, parameter names as in the model)
- ``lora_ema.safetensors``  their moving average (when EMA is on)
- ``optimizer.pt``          AdamW state (tensors and numbers only: loads with weights_only)
- ``rng.pt``                torch CPU/CUDA generator states
- ``trainer_state.json``    step, update counters, Python/numpy RNG states, the config

It is written to ``step_N.tmp`` and renamed, so a crash never leaves a half checkpoint that
``resume: latest`` would pick up.
"""

from __future__ import annotations

import json
import random
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

__all__ = ["CheckpointData", "save_checkpoint", "load_checkpoint", "find_latest", "prune_checkpoints", "capture_rng", "restore_rng"]

PREFIX = "step_"


@dataclass
class CheckpointData:
    step: int  # steps completed
    optimizer_updates: int
    ema_updates: int
    lora: dict[str, Tensor]
    lora_ema: dict[str, Tensor] | None
    optimizer: dict[str, Any]
    rng: dict[str, Any]
    config: dict[str, Any]


def capture_rng() -> dict[str, Any]:
    state = np.random.get_state(legacy=False)
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "python": _jsonable(random.getstate()),
        "numpy": {**state, "state": {k: _jsonable(v) for k, v in state["state"].items()}},
    }


def restore_rng(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if state.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    numpy_state = dict(state["numpy"])
    numpy_state["state"] = {k: (np.array(v, dtype=np.uint64) if isinstance(v, list) else v) for k, v in numpy_state["state"].items()}
    np.random.set_state(numpy_state)


def _jsonable(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return [int(v) for v in value.tolist()]
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.integer):
        return int(value)
    return value


def save_checkpoint(root: Path, data: CheckpointData) -> Path:
    from safetensors.torch import save_file

    final = root / f"{PREFIX}{data.step:07d}"
    partial = root / f"{PREFIX}{data.step:07d}.tmp"
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    save_file({k: v.detach().cpu().contiguous() for k, v in data.lora.items()}, str(partial / "lora.safetensors"))
    if data.lora_ema is not None:
        save_file({k: v.detach().cpu().contiguous() for k, v in data.lora_ema.items()}, str(partial / "lora_ema.safetensors"))
    torch.save(data.optimizer, partial / "optimizer.pt")
    torch.save({"torch": data.rng["torch"], "cuda": data.rng["cuda"]}, partial / "rng.pt")
    state = {
        "step": data.step,
        "optimizer_updates": data.optimizer_updates,
        "ema_updates": data.ema_updates,
        "rng": {"python": data.rng["python"], "numpy": data.rng["numpy"]},
        "config": data.config,
    }
    (partial / "trainer_state.json").write_text(json.dumps(state, indent=1, default=str))
    shutil.rmtree(final, ignore_errors=True)
    partial.rename(final)
    return final


def load_checkpoint(directory: Path, *, map_location: str | torch.device = "cpu") -> CheckpointData:
    from safetensors.torch import load_file

    directory = Path(directory)
    required = ["lora.safetensors", "optimizer.pt", "rng.pt", "trainer_state.json"]
    missing = [name for name in required if not (directory / name).is_file()]
    if missing:
        raise FileNotFoundError(f"{directory} is not a complete checkpoint (missing {', '.join(missing)})")
    state = json.loads((directory / "trainer_state.json").read_text())
    ema_path = directory / "lora_ema.safetensors"
    rng = torch.load(directory / "rng.pt", map_location="cpu", weights_only=True)
    return CheckpointData(
        step=int(state["step"]),
        optimizer_updates=int(state["optimizer_updates"]),
        ema_updates=int(state["ema_updates"]),
        lora=load_file(str(directory / "lora.safetensors")),
        lora_ema=load_file(str(ema_path)) if ema_path.is_file() else None,
        optimizer=torch.load(directory / "optimizer.pt", map_location=map_location, weights_only=True),
        rng={**rng, **state["rng"]},
        config=state["config"],
    )


def list_checkpoints(root: Path) -> list[Path]:
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if p.is_dir() and p.name.startswith(PREFIX) and p.name[len(PREFIX):].isdigit()]
    return sorted(found, key=lambda p: int(p.name[len(PREFIX):]))


def find_latest(root: Path) -> Path | None:
    found = list_checkpoints(root)
    return found[-1] if found else None


def prune_checkpoints(root: Path, keep: int) -> None:
    for old in list_checkpoints(root)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)

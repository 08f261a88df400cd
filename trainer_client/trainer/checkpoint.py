"""Checkpoints: everything needed to continue a run exactly where it stopped.

A checkpoint is a folder ``<output_dir>/checkpoints/step_0000060/`` (60 = steps completed):

- ``lora.safetensors``      the trained LoRA weights (fp32, parameter names as in the model)
- ``lora_ema.safetensors``  their moving average (when EMA is on)
- ``optimizer.pt``          AdamW state (tensors and numbers only: loads with weights_only); keyed
                            by parameter index (single process) or by LoRA parameter name
                            (distributed runs); either loads into either kind of run
- ``rng.pt``                torch CPU/CUDA generator states (distributed: also every rank's
                            states, ``per_rank``, restored on the same rank)
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

__all__ = [
    "CheckpointData",
    "save_checkpoint",
    "load_checkpoint",
    "find_latest",
    "prune_checkpoints",
    "capture_rng",
    "restore_rng",
    "optimizer_state_to_names",
    "optimizer_state_to_ids",
    "save_lora_file",
]

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
    torch.save({"torch": data.rng["torch"], "cuda": data.rng["cuda"], "per_rank": data.rng.get("per_rank")}, partial / "rng.pt")
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


# --- optimizer state: by parameter index <-> by parameter name ----------------------------------


def optimizer_state_to_names(state: dict[str, Any], names: list[str]) -> dict[str, Any]:
    """``torch.optim`` state (keys = parameter indices in ``names`` order) keyed by name
    instead; a state already keyed by name is returned as it is."""
    groups = state["param_groups"]
    if all(isinstance(p, str) for g in groups for p in g["params"]):
        return state
    return {
        "state": {names[int(i)]: value for i, value in state["state"].items()},
        "param_groups": [{**g, "params": [names[int(i)] for i in g["params"]]} for g in groups],
    }


def optimizer_state_to_ids(state: dict[str, Any], names: list[str]) -> dict[str, Any]:
    """The inverse: keys by name -> indices in ``names`` order (what ``load_state_dict`` takes)."""
    groups = state["param_groups"]
    if all(isinstance(p, int) for g in groups for p in g["params"]):
        return state
    index = {name: i for i, name in enumerate(names)}
    unknown = sorted({p for g in groups for p in g["params"]} - set(index))
    if unknown:
        raise ValueError(f"optimizer state names parameters the model does not have: {unknown[:3]}")
    return {
        "state": {index[name]: value for name, value in state["state"].items()},
        "param_groups": [{**g, "params": [index[p] for p in g["params"]]} for g in groups],
    }


def save_lora_file(transformer: Any, lora: dict[str, Tensor], directory: Path, adapter_name: str = "default") -> Path:
    """Whole LoRA tensors (names as in the model) written as ``save_lora_adapter`` writes them:
    peft's key names without the adapter, the adapter config as metadata. For sharded models,
    whose parameters cannot be saved in place."""
    import json as json_module

    from diffusers.loaders.lora_base import LORA_ADAPTER_METADATA_KEY, LORA_WEIGHT_NAME_SAFE
    from peft.utils import get_peft_model_state_dict
    from safetensors.torch import save_file

    layers = get_peft_model_state_dict(transformer, state_dict=lora, adapter_name=adapter_name)
    config = transformer.peft_config[adapter_name].to_dict()
    config = {k: (sorted(v) if isinstance(v, set) else v) for k, v in config.items()}
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / LORA_WEIGHT_NAME_SAFE
    metadata = {"format": "pt", LORA_ADAPTER_METADATA_KEY: json_module.dumps(config, indent=2, sort_keys=True)}
    save_file({k: v.detach().cpu().contiguous() for k, v in layers.items()}, str(path), metadata=metadata)
    return path

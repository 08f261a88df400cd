"""Depth Anything 3 checkpoints: where they live, how they are built and loaded (once per process).

A DA3 checkpoint (hub id such as ``depth-anything/DA3-BASE``, or a local directory with the
same files) holds:

- ``config.json``: ``{"model_name": "da3-base", "config": {...}}``; ``config`` is the network
  description (the package's YAML preset, resolved). When it is missing, the preset shipped
  with the ``depth_anything_3`` package under ``model_name`` is used.
- ``model.safetensors``: the network's weights, keys prefixed ``model.``.

:class:`DA3Checkpoint` reproduces exactly that layout with huggingface_hub's mixin, so
``save_pretrained`` / ``from_pretrained`` read and write real hub checkpoints (and the tiny
random ones our tests build). We never import ``depth_anything_3.api``: it pulls export code
(moviepy, open3d, trimesh...) that inference does not need, and its ``inference()`` picks fp16
autocast on CPU, 2-3x slower than a plain fp32 call.

The network description names the Python classes to build (``__object__.path``): we only
accept paths inside the ``depth_anything_3`` package, so a checkpoint's config cannot make us
import arbitrary code.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

# DA3's logger prints INFO lines on stdout at every call, which would corrupt `--json` output.
os.environ.setdefault("DA3_LOG_LEVEL", "WARN")

PACKAGE = "depth_anything_3"
CHECKPOINT_FILES = ("config.json", "model.safetensors")



@dataclass(frozen=True)
class PublishedCheckpoint:
    hub_id: str
    licence: str  # of the weights (the code package is Apache-2.0)
    gaussian_head: bool  # carries DA3's Gaussian head (else we lift pixel-aligned Gaussians)


# The published checkpoints (docs/models.md). Small/Base are Apache-2.0: the default GPU
# profile uses Base with our own pixel-aligned Gaussians, usable commercially. Large, Giant
# and the nested Giant-Large are CC BY-NC 4.0 (non-commercial); only Giant and nested carry
# the Gaussian head, so the head is an opt-in that comes with that licence.
PUBLISHED = {
    "da3-small": PublishedCheckpoint("depth-anything/DA3-SMALL", "Apache-2.0", False),
    "da3-base": PublishedCheckpoint("depth-anything/DA3-BASE", "Apache-2.0", False),
    "da3-large": PublishedCheckpoint("depth-anything/DA3-LARGE", "CC-BY-NC-4.0", False),
    "da3-giant": PublishedCheckpoint("depth-anything/DA3-GIANT", "CC-BY-NC-4.0", True),
    "da3nested-giant-large": PublishedCheckpoint("depth-anything/DA3NESTED-GIANT-LARGE", "CC-BY-NC-4.0", True),
    "da3metric-large": PublishedCheckpoint("depth-anything/DA3METRIC-LARGE", "see the model card", False),
    "da3mono-large": PublishedCheckpoint("depth-anything/DA3MONO-LARGE", "see the model card", False),
}
LICENCES = {name: entry.licence for name, entry in PUBLISHED.items()}
DEFAULT_PRESET = "da3-base"  # what Settings.da3_model names by default


class CheckpointError(RuntimeError):
    """A DA3 checkpoint is missing, unreadable, or does not match its network."""


def package_available() -> tuple[bool, str]:
    """Is the ``depth_anything_3`` package (and what its network needs) importable?"""
    import importlib.util

    missing = [
        name
        for name in (PACKAGE, "addict", "einops", "omegaconf", "safetensors", "huggingface_hub")
        if importlib.util.find_spec(name) is None
    ]
    if missing:
        return False, (
            f"missing {', '.join(missing)}: `pip install --no-deps depth-anything-3` and the "
            "`models` extra (scripts/install.sh does both)"
        )
    return True, "depth_anything_3 importable"


def shipped_config(model_name: str) -> dict[str, Any]:
    """The network description the package ships for a preset (e.g. ``da3-small``)."""
    from omegaconf import OmegaConf

    from depth_anything_3.cfg import load_config
    from depth_anything_3.registry import MODEL_REGISTRY

    if model_name not in MODEL_REGISTRY:
        raise CheckpointError(
            f"unknown DA3 preset {model_name!r}; known: {', '.join(sorted(MODEL_REGISTRY))}"
        )
    return OmegaConf.to_container(load_config(MODEL_REGISTRY[model_name]), resolve=True)


def check_config_is_safe(config: Any, where: str = "config") -> None:
    """Every ``__object__.path`` must name a module inside the depth_anything_3 package."""
    if isinstance(config, dict):
        target = config.get("__object__")
        if target is not None:
            path = str(target.get("path", "")) if isinstance(target, dict) else ""
            if not (path == PACKAGE or path.startswith(PACKAGE + ".")):
                raise CheckpointError(
                    f"DA3 {where}.__object__.path {path!r} is outside the {PACKAGE} package"
                )
        for key, value in config.items():
            check_config_is_safe(value, f"{where}.{key}")
    elif isinstance(config, list):
        for index, value in enumerate(config):
            check_config_is_safe(value, f"{where}[{index}]")


def provide_pose_alignment_placeholder() -> bool:
    """Make ``evo.core.trajectory`` importable when evo is not installed; True if we did.

    Upstream's Gaussian adapter (Giant and nested checkpoints) imports
    ``depth_anything_3.utils.pose_align``, which imports evo at module level. evo is used
    only to align predicted poses to *given* cameras (``gt_extrinsics``); we never pass
    cameras, so that code never runs. evo itself pulls pandas, seaborn and rosbags, so
    instead of installing it we register a stand-in whose only class refuses to be used.
    """
    import importlib.util
    import types

    if "evo" in sys.modules or importlib.util.find_spec("evo") is not None:
        return False

    class PosePath3D:  # the one name pose_align imports
        def __init__(self, *args, **kwargs) -> None:
            raise RuntimeError(
                "evo is not installed: DA3's alignment to given cameras needs it "
                "(reward3d never passes cameras; `pip install evo` to use it anyway)"
            )

    modules = {name: types.ModuleType(name) for name in ("evo", "evo.core", "evo.core.trajectory")}
    modules["evo.core.trajectory"].PosePath3D = PosePath3D
    modules["evo"].core = modules["evo.core"]
    modules["evo.core"].trajectory = modules["evo.core.trajectory"]
    for name, module in modules.items():
        module.__reward3d_placeholder__ = True
        sys.modules[name] = module
    return True


def build_network(config: dict[str, Any]) -> nn.Module:
    """The DA3 network (DepthAnything3Net or its nested variant) from a description."""
    from omegaconf import OmegaConf

    check_config_is_safe(config)
    provide_pose_alignment_placeholder()
    from depth_anything_3.cfg import create_object

    return create_object(OmegaConf.create(config))


def is_network_description(config: Any) -> bool:
    """A network description names its class at the top (``__object__``)."""
    return isinstance(config, dict) and "__object__" in config


def _hub_mixin():
    from huggingface_hub import PyTorchModelHubMixin

    return PyTorchModelHubMixin


class DA3Checkpoint(nn.Module, _hub_mixin()):
    """The hub layout of a DA3 checkpoint: ``self.model`` is the network."""

    def __init__(self, model_name: str = "da3-large", config: dict[str, Any] | None = None):
        super().__init__()
        if config is not None and not is_network_description(config):
            # A config.json without a "config" key: huggingface_hub's mixin then passes the
            # whole file as `config`. That is the documented preset fallback.
            model_name = str(config.get("model_name", model_name))
            config = None
        self.model_name = model_name
        self.model = build_network(config if config is not None else shipped_config(model_name))
        self.model.eval()
        # The mixin would flatten a `config` dict into config.json's top level; published
        # checkpoints nest it under "config", so write exactly that.
        self._hub_mixin_config = {"model_name": model_name, "config": config}

    @classmethod
    def from_preset(cls, model_name: str) -> "DA3Checkpoint":
        """A randomly initialised checkpoint whose config.json embeds the shipped preset."""
        return cls(model_name=model_name, config=shipped_config(model_name))


def resolve_checkpoint(source: str) -> tuple[Path | None, str]:
    """Where a checkpoint is on this machine, without downloading: (directory or None, how).

    ``source`` is a local directory or a hub id; a hub id is found in the Hugging Face cache
    (``HF_HOME``) when it was downloaded before.
    """
    path = Path(source).expanduser()
    if path.is_dir():
        missing = [name for name in CHECKPOINT_FILES if not (path / name).is_file()]
        if missing:
            return None, f"local directory {path} lacks {', '.join(missing)}"
        return path, f"local directory {path}"
    if path.exists():
        return None, f"{path} is a file; a DA3 checkpoint is a directory (config.json, model.safetensors)"
    if looks_like_a_path(source):
        return None, f"local directory {path} does not exist"
    from huggingface_hub import try_to_load_from_cache

    try:
        cached = [try_to_load_from_cache(source, name) for name in CHECKPOINT_FILES]
    except Exception as exc:  # not a valid repo id, unreadable cache...
        return None, f"{source!r} is neither a local directory nor a hub id ({exc})"
    if all(isinstance(item, str) for item in cached):
        return Path(cached[0]).parent, f"hub id {source} (in the Hugging Face cache)"
    return None, f"hub id {source} is not in the Hugging Face cache (download it: docs/models.md)"


def looks_like_a_path(source: str) -> bool:
    """Hub ids are "owner/name"; anything absolute, relative-dotted or deeper is a path."""
    return source.startswith(("/", ".", "~")) or source.count("/") > 1


def checkpoint_model_name(directory: Path) -> str:
    """The preset name recorded in a checkpoint's config.json (for licences and versions)."""
    try:
        return str(json.loads((directory / "config.json").read_text()).get("model_name", "?"))
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"cannot read {directory / 'config.json'}: {exc}") from None


@dataclass
class LoadedDA3:
    """A DA3 network in eval mode on its device, and what it came from."""

    network: nn.Module
    source: str
    model_name: str
    device: torch.device
    has_gaussian_head: bool
    # The uncompiled backbone(s), kept so that a later backend can re-choose its execution
    # path from eager rather than wrap an already compiled module (acceleration.py).
    eager_backbones: list[nn.Module] | None = None


_LOADED: dict[tuple[str, str], LoadedDA3] = {}
_LOCK = threading.Lock()


def load_da3(source: str, *, device: torch.device) -> LoadedDA3:
    """Load (once per process and device) the checkpoint at ``source``: a local directory, or
    a hub id (downloaded unless HF_HUB_OFFLINE=1, then only the local cache is used)."""
    key = (str(source), str(device))
    with _LOCK:
        if key not in _LOADED:
            _LOADED[key] = _load(source, device)
        return _LOADED[key]


def _load(source: str, device: torch.device) -> LoadedDA3:
    ok, why = package_available()
    if not ok:
        raise CheckpointError(why)
    try:
        # huggingface_hub prints a progress line on stdout: keep stdout clean for --json.
        with contextlib.redirect_stdout(sys.stderr):
            checkpoint = DA3Checkpoint.from_pretrained(source, strict=True, map_location="cpu")
    except CheckpointError:
        raise
    except Exception as exc:  # offline cache miss, missing file, key mismatch...
        raise CheckpointError(f"cannot load DA3 checkpoint {source!r}: {exc}") from None
    network = checkpoint.model.to(device).eval()
    network.requires_grad_(False)
    return LoadedDA3(
        network=network,
        source=str(source),
        model_name=checkpoint.model_name,
        device=device,
        has_gaussian_head=gaussian_head(network) is not None,
    )


def gaussian_head(network: nn.Module) -> nn.Module | None:
    """The network's Gaussian head (Giant checkpoints), or None. Nested models keep theirs
    in the any-view branch."""
    branch = getattr(network, "da3", network)
    if getattr(branch, "gs_head", None) is not None and getattr(branch, "gs_adapter", None) is not None:
        return branch.gs_head
    return None

"""Our DA3 backend beside upstream's own ``DepthAnything3.inference`` on the same weights (CPU).

Used by tests/test_da3_upstream.py (which asserts tolerances) and bench/da3_parity.py (which
prints the figures for bench/RESULTS.md). Both sides get the same uint8 source frames; the
frames are already at the processing size, so neither side resizes and any difference comes
from the network call and the conversions. Upstream runs either as shipped (its CPU autocast:
fp16) or with autocast off (fp32, like our CPU path).

Differences are reported as ``max_abs`` and ``max_rel`` (max |ours - upstream| / max |upstream|).
"""

from __future__ import annotations

import contextlib
import tempfile
from dataclasses import dataclass
from pathlib import Path
from unittest import mock

import numpy as np
import torch

from service.pipeline.geometry.da3 import SH_C0, DA3Geometry, confidence_to_unit
from service.pipeline.geometry.da3_checkpoint import load_da3, provide_pose_alignment_placeholder
from service.pipeline.decode import load_video
from service.settings import Settings
from tests.upstream_stubs import torchvision_transforms_stand_in


def upstream_api():
    """``depth_anything_3.api`` (imports evo and torchvision at module level: our placeholder
    and the tests' stand-in serve when those are not installed)."""
    provide_pose_alignment_placeholder()
    with torchvision_transforms_stand_in():
        import depth_anything_3.api as api
        import depth_anything_3.utils.io.input_processor  # noqa: F401  (binds the stand-in)
    return api


def upstream_model(network: torch.nn.Module, model_name: str):
    """Upstream's ``DepthAnything3`` wrapping ``network`` (the very module our loader built, so
    the weights are the same objects). Its ``__init__`` runs as written; only the preset it
    would build (full size) is replaced by our network."""
    api = upstream_api()
    with mock.patch.object(api, "load_config", lambda path: None), \
            mock.patch.object(api, "create_object", lambda config: network):  # fmt: skip
        return api.DepthAnything3(model_name=model_name)


@contextlib.contextmanager
def autocast_disabled():
    """Upstream's forward always enters ``torch.autocast`` (fp16 on a CPU): here, disabled."""
    real = torch.autocast

    def disabled(*args, **kwargs):
        return real(*args, **{**kwargs, "enabled": False})

    with mock.patch.object(torch, "autocast", disabled):
        yield


@dataclass
class Side:
    depth: np.ndarray  # [T,h,w]
    confidence: np.ndarray  # [T,h,w] DA3's (1, inf)
    world_to_camera: np.ndarray  # [T,3,4]
    intrinsics: np.ndarray  # [T,3,3] pixels at h x w
    gaussians: dict[str, np.ndarray] | None  # ours: means, scales, quats, colors, opacities
    scale_factor: float | None = None


def run_ours(checkpoint: Path, frames: np.ndarray, process_res: int) -> tuple[Side, DA3Geometry]:
    """frames [T,h,w,3] uint8 at the processing size through our backend (production loader,
    decode with geometry frames, forward, conversion)."""
    t, h, w, _ = frames.shape
    settings = Settings(geometry_backend="da3", da3_model=str(checkpoint), device="cpu",
                        da3_process_res=process_res, max_frames=t, long_side=max(h, w),
                        max_gaussians=max(1000, t * h * w), da3_warm_up_shapes=[f"{t}x{h}x{w}"])  # fmt: skip
    backend = DA3Geometry(settings=settings)
    video = load_video(frames, max_frames=t, long_side=max(h, w), geometry_size=backend.input_size)
    raw = backend._forward(backend.network_input(video))[0]
    geometry = backend.predict(video)
    gaussians = None
    if raw.gaussians is not None:
        gaussians = {name: getattr(raw.gaussians, name).numpy()
                     for name in ("means", "scales", "quats", "colors", "opacities")}  # fmt: skip
    side = Side(
        depth=geometry.depth.numpy(),
        confidence=raw.confidence.numpy(),
        world_to_camera=geometry.world_to_camera[:, :3, :4].numpy(),
        intrinsics=raw.intrinsics.numpy(),  # before our field-of-view clamp
        gaussians=gaussians,
    )
    return side, backend


def run_upstream(network, model_name: str, frames: np.ndarray, process_res: int, *, fp32: bool,
                 infer_gs: bool) -> tuple[Side, object]:  # fmt: skip
    """The same frames through ``DepthAnything3.inference`` (its input processor, forward,
    output processor). Returns our view of it and upstream's Prediction."""
    model = upstream_model(network, model_name)
    context = autocast_disabled() if fp32 else contextlib.nullcontext()
    with context, torch.random.fork_rng():
        torch.manual_seed(0)  # the same seed our forward uses (sky-depth quantile samples)
        prediction = model.inference(list(frames), process_res=process_res, infer_gs=infer_gs)
    side = Side(
        depth=prediction.depth,
        confidence=prediction.conf,
        world_to_camera=prediction.extrinsics[:, :3, :4],
        intrinsics=prediction.intrinsics,
        gaussians=None,
        scale_factor=prediction.scale_factor,
    )
    return side, prediction


def exported_gaussians(prediction, depth: np.ndarray) -> dict[str, np.ndarray]:
    """Upstream's own PLY export of its Gaussians (no pruning, DC only), read back and mapped
    to our fields the way 3DGS viewers read that file: colour = 0.5 + C0 * f_dc, opacity =
    sigmoid(stored logit), scale = exp(stored log-scale), rotation = rot_0..3 (wxyz)."""
    from plyfile import PlyData

    from depth_anything_3.utils.gsply_helpers import save_gaussian_ply

    with tempfile.TemporaryDirectory() as scratch:
        path = Path(scratch) / "gaussians.ply"
        save_gaussian_ply(prediction.gaussians, str(path), torch.from_numpy(depth)[..., None],
                          shift_and_scale=False, save_sh_dc_only=True, gs_views_interval=1,
                          inv_opacity=True, prune_by_depth_percent=1.0, prune_border_gs=False)  # fmt: skip
        vertex = PlyData.read(str(path))["vertex"]

    def stack(*names: str) -> np.ndarray:
        return np.stack([np.asarray(vertex[name], dtype=np.float64) for name in names], axis=-1)

    return {
        "means": stack("x", "y", "z"),
        "scales": np.exp(stack("scale_0", "scale_1", "scale_2")),
        "quats": stack("rot_0", "rot_1", "rot_2", "rot_3"),
        "colors": np.clip(0.5 + SH_C0 * stack("f_dc_0", "f_dc_1", "f_dc_2"), 0, 1),
        "opacities": 1 / (1 + np.exp(-stack("opacity")[:, 0])),
    }


def difference(ours: np.ndarray, theirs: np.ndarray) -> dict[str, float]:
    ours, theirs = np.asarray(ours, np.float64), np.asarray(theirs, np.float64)
    assert ours.shape == theirs.shape, (ours.shape, theirs.shape)
    gap = float(np.abs(ours - theirs).max())
    return {"max_abs": gap, "max_rel": gap / max(float(np.abs(theirs).max()), 1e-12)}


def compare(ours: Side, theirs: Side) -> dict[str, dict[str, float]]:
    """Depth, confidence (ours in [0,1) from DA3's), world-to-camera, intrinsics."""
    return {
        "depth": difference(ours.depth, theirs.depth),
        "confidence": difference(confidence_to_unit(torch.from_numpy(ours.confidence)).numpy(),
                                 confidence_to_unit(torch.from_numpy(theirs.confidence)).numpy()),  # fmt: skip
        "world_to_camera": difference(ours.world_to_camera, theirs.world_to_camera),
        "intrinsics": difference(ours.intrinsics, theirs.intrinsics),
    }


def compare_gaussians(ours: dict[str, np.ndarray], theirs: dict[str, np.ndarray]) -> dict[str, dict[str, float]]:
    """Field by field; quaternions up to sign (q and -q are the same rotation)."""
    report = {}
    for name in ("means", "scales", "colors", "opacities"):
        report[name] = difference(ours[name], theirs[name])
    quats_theirs = theirs["quats"] / np.linalg.norm(theirs["quats"], axis=-1, keepdims=True)
    sign = np.sign((ours["quats"] * quats_theirs).sum(-1, keepdims=True))
    report["quats"] = difference(ours["quats"] * sign, quats_theirs)
    return report


def loaded_network(checkpoint: Path):
    return load_da3(str(checkpoint), device=torch.device("cpu"))

"""Geometry supplied by the caller (tests, datasets with known cameras).

File format (.npz), all in OpenCV conventions (docs/conventions.md):
- ``depth``           [T,H,W] z-depth, any units
- ``world_to_camera`` [T,4,4]  (or ``camera_to_world`` [T,4,4])
- ``intrinsics``      [T,3,3] pixels at depth's H x W (or [3,3], shared)
- ``confidence``      [T,H,W] in [0,1] (optional, default 1 where depth > 0)

T is either the number of frames in the input video (then the sampled frames are picked) or
the number of frames after sampling. Depth at another resolution is resized (nearest) and the
intrinsics scaled to the working resolution.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from service.pipeline.transforms import invert_rigid
from service.pipeline.types import Geometry, PipelineInputError, Video


def is_available(settings=None) -> tuple[bool, str]:  # settings: the interface's, unused here
    return True, "needs geometry from the caller (--geometry-file)"


def load_geometry_file(path: str | Path) -> dict[str, np.ndarray]:
    """Read an oracle .npz into plain arrays, with clear errors for anything else."""
    path = Path(path)
    if not path.is_file():
        raise PipelineInputError(f"geometry file not found: {path}")
    try:
        with np.load(path, allow_pickle=False) as data:
            return {key: np.asarray(data[key]) for key in data.files}
    except Exception as exc:  # zip errors, pickled objects, truncated files...
        raise PipelineInputError(f"cannot read geometry file {path}: {exc}") from None


class OracleGeometry:
    name = "oracle"

    def __init__(self, arrays: dict[str, np.ndarray]) -> None:
        missing = [k for k in ("depth", "intrinsics") if k not in arrays]
        if "world_to_camera" not in arrays and "camera_to_world" not in arrays:
            missing.append("world_to_camera (or camera_to_world)")
        if missing:
            raise PipelineInputError(f"geometry file lacks: {', '.join(missing)}")
        self.arrays = arrays

    def versions(self) -> dict[str, str]:
        return {"geometry": "oracle"}

    def predict(self, video: Video) -> Geometry:
        a = self.arrays
        depth = _float_array(a["depth"], "depth", ndim=3).to(torch.float32)
        num = depth.shape[0]
        if "world_to_camera" in a:
            world_to_camera = _float_array(a["world_to_camera"], "world_to_camera", ndim=3)
        else:
            world_to_camera = invert_rigid(
                _float_array(a["camera_to_world"], "camera_to_world", ndim=3)
            )
        intrinsics = _float_array(a["intrinsics"], "intrinsics", ndim=None)
        if intrinsics.shape == (3, 3):
            intrinsics = intrinsics.expand(num, 3, 3).clone()
        confidence = (
            _float_array(a["confidence"], "confidence", ndim=3).to(torch.float32)
            if "confidence" in a
            else (depth > 0).to(torch.float32)
        )
        for name, tensor, tail in (
            ("world_to_camera", world_to_camera, (4, 4)),
            ("intrinsics", intrinsics, (3, 3)),
            ("confidence", confidence, tuple(depth.shape[1:])),
        ):
            if tuple(tensor.shape) != (num, *tail):
                raise PipelineInputError(
                    f"geometry {name} has shape {tuple(tensor.shape)}, expected {(num, *tail)}"
                )

        # Pick the sampled frames when the file covers the whole input video.
        if num == video.source_num_frames and num != video.num_frames:
            index = torch.tensor(video.source_indices)
            depth, confidence = depth[index], confidence[index]
            world_to_camera, intrinsics = world_to_camera[index], intrinsics[index]
        elif num != video.num_frames:
            raise PipelineInputError(
                f"geometry has {num} frames; the video has {video.source_num_frames} "
                f"({video.num_frames} after sampling)"
            )

        # Bring depth to the working resolution and scale the intrinsics to match.
        height, width = video.height, video.width
        if tuple(depth.shape[1:]) != (height, width):
            sy, sx = height / depth.shape[1], width / depth.shape[2]
            depth = F.interpolate(depth[:, None], size=(height, width), mode="nearest")[:, 0]
            confidence = F.interpolate(confidence[:, None], size=(height, width), mode="nearest")
            confidence = confidence[:, 0]
            intrinsics = intrinsics.clone()
            intrinsics[:, 0] *= sx
            intrinsics[:, 1] *= sy
        if (depth < 0).any():
            raise PipelineInputError("geometry depth must be >= 0 (0 = unknown)")
        return Geometry(
            depth=depth.contiguous(),
            confidence=confidence.clamp(0, 1).contiguous(),
            world_to_camera=world_to_camera.to(torch.float64),
            intrinsics=intrinsics.to(torch.float64),
            registered=torch.ones(depth.shape[0], dtype=torch.bool),
            backend=self.name,
        )


def _float_array(array: np.ndarray, name: str, ndim: int | None) -> torch.Tensor:
    if array.dtype.kind not in "fiu":
        raise PipelineInputError(f"geometry {name} must be numeric, got dtype {array.dtype}")
    if ndim is not None and array.ndim != ndim:
        raise PipelineInputError(f"geometry {name} must have {ndim} dimensions, got {array.shape}")
    tensor = torch.from_numpy(np.ascontiguousarray(array, dtype=np.float64))
    if not torch.isfinite(tensor).all():
        raise PipelineInputError(f"geometry {name} contains NaN or inf")
    return tensor

"""What the SDK puts on the wire: videos as uint8 arrays, optional client-side sampling and
resizing, and the binary (KServe v2) body of ``POST /v1/score``. numpy only.

The service's reference encoder is ``service/api/encode.py``; the SDK must not import
``service``, so this module holds its own copy of the binary encoder, and
``tests/test_sdk_wire.py`` checks that both produce byte-identical bodies.

Videos come in as (docs/sdk.md):

- uint8 ``[B,T,H,W,C]`` or float ``[B,T,C,H,W]`` in [0,1] (numpy or torch, any device), or
- one video ``[T,H,W,C]`` / ``[T,C,H,W]``, or a list of single videos (sizes may differ).

and leave as a list of C-contiguous uint8 ``[T,H,W,3]`` arrays. torch is never imported here:
a tensor is recognised by its methods and converted with them (on its own device, after
frame sampling, so only the frames that are sent cross to the CPU).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = [
    "CHUNK_BYTES",
    "GEOMETRY_NAMES",
    "EncodedBody",
    "area_resize",
    "body_chunks",
    "encode_binary",
    "sample_indices",
    "to_uint8_videos",
    "working_size",
]

KSERVE_NAMES = {"|u1": "UINT8", "<f2": "FP16", "<f4": "FP32", "<f8": "FP64"}
GEOMETRY_NAMES = ("depth", "world_to_camera", "intrinsics", "confidence")
CHUNK_BYTES = 256 * 1024


# --- videos in -------------------------------------------------------------------------------


def _is_torch(value: Any) -> bool:
    return type(value).__module__.startswith("torch") and hasattr(value, "detach")


def _split_videos(videos: Any) -> list[Any]:
    """One entry per video (each 4-D), without copying."""
    if isinstance(videos, (list, tuple)):
        return list(videos)
    ndim = videos.ndim if hasattr(videos, "ndim") else np.asarray(videos).ndim
    if ndim == 5:
        return [videos[i] for i in range(videos.shape[0])]
    if ndim == 4:
        return [videos]
    raise ValueError(
        f"videos must be [B,T,H,W,C] uint8 or [B,T,C,H,W] float (or one 4-D video, or a list of "
        f"them); got {ndim} dimensions"
    )


def _channel_axis(shape: tuple[int, ...], floating: bool) -> int:
    """-1 (``[T,H,W,C]``) or 1 (``[T,C,H,W]``) for a 4-D video. Floats are channel-first by
    convention (diffusers' ``output_type='pt'``), uint8 channel-last (decoded frames); the
    other layout is accepted when the conventional axis cannot be a channel axis."""
    preferred, other = (1, -1) if floating else (-1, 1)
    if shape[preferred] in (1, 3, 4):
        return preferred
    if shape[other] in (1, 3, 4):
        return other
    expected = "[T,C,H,W]" if floating else "[T,H,W,C]"
    raise ValueError(f"cannot find the channel axis (1, 3 or 4 channels) of a video of shape {shape}; expected {expected}")


def _to_rgb_uint8(video: Any, index: int, frames: Sequence[int] | None) -> np.ndarray:
    """One 4-D video -> C-contiguous uint8 ``[T',H,W,3]`` (only the ``frames`` kept)."""
    if _is_torch(video):
        import torch  # only reached when the caller passed tensors

        tensor = video.detach()
        if tensor.ndim != 4:
            raise ValueError(f"video {index}: expected 4 dimensions, got shape {tuple(tensor.shape)}")
        floating = tensor.dtype.is_floating_point
        axis = _channel_axis(tuple(tensor.shape), floating)
        if frames is not None:
            tensor = tensor[list(frames)]
        if floating:
            if not bool(torch.isfinite(tensor).all()):
                raise ValueError(f"video {index} contains NaN or inf")
            tensor = tensor.float().clamp(0.0, 1.0).mul(255.0).round().to(torch.uint8)
        elif tensor.dtype != torch.uint8:
            raise ValueError(f"video {index}: dtype must be uint8 or floating point, got {tensor.dtype}")
        if axis == 1:
            tensor = tensor.permute(0, 2, 3, 1)
        fresh = frames is not None or floating or axis == 1 or tensor.device.type != "cpu"
        array = tensor.contiguous().cpu().numpy()
    else:
        array = np.asarray(video)
        if array.ndim != 4:
            raise ValueError(f"video {index}: expected 4 dimensions, got shape {array.shape}")
        floating = np.issubdtype(array.dtype, np.floating)
        axis = _channel_axis(array.shape, floating)
        if frames is not None:
            array = array[list(frames)]
        if floating:
            if not np.isfinite(array).all():
                raise ValueError(f"video {index} contains NaN or inf")
            array = np.rint(np.clip(array.astype(np.float32), 0.0, 1.0) * 255.0).astype(np.uint8)
        elif array.dtype != np.uint8:
            raise ValueError(f"video {index}: dtype must be uint8 or floating point, got {array.dtype}")
        fresh = frames is not None or floating
        if axis == 1:
            array = array.transpose(0, 2, 3, 1)
    channels = array.shape[-1]
    if channels == 1:
        array, fresh = np.repeat(array, 3, axis=-1), True
    elif channels == 4:
        array = array[..., :3]  # alpha dropped, as the service does
    contiguous = np.ascontiguousarray(array)
    if not fresh and contiguous is array:
        contiguous = array.copy()  # never send the caller's own buffer: they may reuse it
    return contiguous


def to_uint8_videos(
    videos: Any,
    *,
    max_frames: int | None = None,
    frame_stride: int = 1,
) -> tuple[list[np.ndarray], list[list[int] | None]]:
    """Videos -> (uint8 ``[T,H,W,3]`` copies, the source frame indices kept per video).

    Floats are clipped to [0,1] and rounded to uint8 (what a decoded video file holds; at
    most 0.5/255 from the float value). With ``max_frames`` only the frames the service
    would sample are kept (``sample_indices``), selected before anything is converted or
    copied. Indices are None where no frame was dropped. The arrays never share memory with
    the input, so the caller may reuse its buffers at once.
    """
    arrays, kept = [], []
    for index, video in enumerate(_split_videos(videos)):
        frames = None
        if max_frames is not None:
            count = int(video.shape[0])
            picked = sample_indices(count, max_frames=max_frames, frame_stride=frame_stride)
            frames = picked if picked != list(range(count)) else None
        arrays.append(_to_rgb_uint8(video, index, frames))
        kept.append(frames)
    return arrays, kept


# --- client-side sampling and resizing (the service's decode step, reproduced) -----------------


def sample_indices(num_frames: int, *, max_frames: int, frame_stride: int = 1) -> list[int]:
    """Every ``frame_stride``-th frame, then at most ``max_frames`` spread evenly (ends kept).
    The same rule as the service's decode step (service/pipeline/decode.py)."""
    candidates = np.arange(0, num_frames, frame_stride)
    if len(candidates) > max_frames:
        picks = np.linspace(0, len(candidates) - 1, max_frames).round().astype(int)
        candidates = candidates[np.unique(picks)]
    return [int(i) for i in candidates]


def working_size(height: int, width: int, long_side: int) -> tuple[int, int]:
    """(H, W) with the longer side equal to ``long_side`` and the aspect ratio kept."""
    scale = long_side / max(height, width)
    return max(1, round(height * scale)), max(1, round(width * scale))


def _area_taps(size_in: int, size_out: int) -> tuple[np.ndarray, np.ndarray]:
    """Box-filter weights for shrinking ``size_in`` -> ``size_out`` samples: output pixel i
    averages input pixels over [i s, (i+1) s), s = size_in / size_out, each weighted by its
    overlap (what OpenCV's INTER_AREA computes). Returns (indices, weights), both
    ``[size_out, taps]``; padded taps have weight 0."""
    scale = size_in / size_out
    starts = np.arange(size_out) * scale
    first = np.floor(starts).astype(np.int64)
    taps = int(math.ceil(scale)) + 1
    indices = np.minimum(first[:, None] + np.arange(taps)[None, :], size_in - 1)  # [out, taps]
    left = np.maximum(starts[:, None], first[:, None] + np.arange(taps)[None, :])
    right = np.minimum(starts[:, None] + scale, first[:, None] + np.arange(taps)[None, :] + 1)
    weights = np.clip(right - left, 0.0, None) / scale
    return indices, weights.astype(np.float32)


def area_resize(video: np.ndarray, long_side: int) -> np.ndarray:
    """Shrink uint8 ``[T,H,W,3]`` frames so the longer side is ``long_side`` (area averaging,
    rounded back to uint8). Frames already that small are returned unchanged: the service
    enlarges small frames itself, and sending them enlarged would only cost bandwidth."""
    height, width = video.shape[1:3]
    new_h, new_w = working_size(height, width, long_side)
    if new_h * new_w >= height * width:
        return video
    rows, row_weights = _area_taps(height, new_h)  # [new_h, taps]
    cols, col_weights = _area_taps(width, new_w)  # [new_w, taps]
    out = np.empty((video.shape[0], new_h, new_w, video.shape[3]), dtype=np.uint8)
    # frame by frame: the temporaries stay in cache (2-3x faster than whole-clip passes)
    for index, frame in enumerate(video):
        shrunk = frame[rows[:, 0]] * row_weights[:, 0, None, None]  # [new_h, W, C] float32
        for tap in range(1, rows.shape[1]):
            shrunk += frame[rows[:, tap]] * row_weights[:, tap, None, None]
        resized = shrunk[:, cols[:, 0]] * col_weights[None, :, 0, None]  # [new_h, new_w, C]
        for tap in range(1, cols.shape[1]):
            resized += shrunk[:, cols[:, tap]] * col_weights[None, :, tap, None]
        out[index] = np.clip(np.rint(resized), 0, 255)
    return out


# --- the binary body -------------------------------------------------------------------------


@dataclass
class EncodedBody:
    """Headers and body parts of one binary request; ``parts`` are views, never joined."""

    headers: dict[str, str]
    parts: list[Any]  # the JSON header (bytes), then one memoryview per tensor
    num_videos: int

    @property
    def size(self) -> int:
        return sum(len(part) for part in self.parts)

    def chunks(self, size: int = CHUNK_BYTES) -> Iterator[memoryview]:
        return body_chunks(self.parts, size)


def body_chunks(parts: Sequence[Any], size: int = CHUNK_BYTES) -> Iterator[memoryview]:
    """The body as memoryview slices of at most ``size`` bytes (no copies). httpx/httpcore copy
    the *rest* of a buffer after every socket send, which is quadratic on a large tensor."""
    for part in parts:
        view = part if isinstance(part, memoryview) else memoryview(part)
        view = view.cast("B") if view.format != "B" or view.ndim != 1 else view
        for start in range(0, len(view), size):
            yield view[start : start + size]


def _little_endian(array: np.ndarray) -> np.ndarray:
    array = np.ascontiguousarray(array)
    if array.dtype.byteorder == ">":
        array = array.astype(array.dtype.newbyteorder("<"))
    return array


def _named_tensors(videos: np.ndarray | Sequence[np.ndarray],
                   geometry: Sequence[Mapping[str, Any] | None] | None) -> list[tuple[str, np.ndarray]]:  # fmt: skip
    """(name, array) in body order: ``video`` for one [B,T,H,W,C] array, else ``video.<i>``."""
    tensors: list[tuple[str, np.ndarray]] = []
    if isinstance(videos, np.ndarray) and videos.ndim == 5:
        tensors.append(("video", _little_endian(videos)))
        count = videos.shape[0]
    else:
        videos = [videos] if isinstance(videos, np.ndarray) else list(videos)
        tensors += [(f"video.{i}", _little_endian(v)) for i, v in enumerate(videos)]
        count = len(videos)
    for index, arrays in enumerate(geometry or [None] * count):
        for name in GEOMETRY_NAMES:
            if arrays is not None and arrays.get(name) is not None:
                tensors.append((f"{name}.{index}", _little_endian(np.asarray(arrays[name]))))
    return tensors


def encode_binary(
    videos: np.ndarray | Sequence[np.ndarray],
    *,
    geometry: Sequence[Mapping[str, Any] | None] | None = None,
    items: list[dict] | None = None,
    options: dict | None = None,
) -> EncodedBody:
    """The binary format (docs/service.md, "Binary"): a JSON header naming every tensor, then
    the tensors' raw little-endian bytes in that order. ``videos``: one uint8/float
    ``[B,T,H,W,C]`` array (sent batched) or a list of ``[T,H,W,C]`` arrays (sent per item)."""
    tensors = _named_tensors(videos, geometry)
    header: dict[str, Any] = {
        "inputs": [
            {"name": name, "datatype": KSERVE_NAMES[array.dtype.str], "shape": list(array.shape),
             "parameters": {"binary_data_size": array.nbytes}}
            for name, array in tensors
        ],
    }  # fmt: skip
    if items is not None:
        header["items"] = items
    if options is not None:
        header["options"] = options
    header_bytes = json.dumps(header, separators=(",", ":")).encode()
    parts: list[Any] = [header_bytes, *(memoryview(array.reshape(-1)).cast("B") for _, array in tensors)]
    headers = {
        "Content-Type": "application/octet-stream",
        "Inference-Header-Content-Length": str(len(header_bytes)),
        "Content-Length": str(sum(len(p) for p in parts)),
    }
    count = sum(1 for name, _ in tensors if name == "video" or name.startswith("video."))
    if isinstance(videos, np.ndarray) and videos.ndim == 5:
        count = videos.shape[0]
    return EncodedBody(headers=headers, parts=parts, num_videos=count)

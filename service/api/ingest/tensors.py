"""Tensors in a request: names, dtypes, shapes and limits, checked before any pixel is read.

Every tensor format (binary, .npy, safetensors, base64 JSON) is turned into the same plan: a
list of :class:`Segment` (one item's tensor: field, item index, dtype, shape, byte count) in
body order. A batched tensor ``video`` [B,T,H,W,C] becomes B segments, so each video gets its
own blob and its own BLAKE3 digest (the result cache is per video).

Names: ``video``, ``depth``, ``world_to_camera``, ``intrinsics``, ``confidence``; batched
(leading axis = items) or per item with a suffix ``.<index>`` (``video.0``, ``video.1``...).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import numpy as np

from service.api.errors import Problem

# Wire dtype names -> numpy (little-endian).
KSERVE_DTYPES = {"UINT8": "|u1", "FP16": "<f2", "FP32": "<f4", "FP64": "<f8"}
SAFETENSORS_DTYPES = {"U8": "|u1", "F16": "<f2", "F32": "<f4", "F64": "<f8"}
JSON_DTYPES = {"uint8": "|u1", "float16": "<f2", "float32": "<f4", "float64": "<f8"}

VIDEO_DTYPES = {"|u1", "<f2", "<f4"}
GEOMETRY_DTYPES = {"<f2", "<f4", "<f8"}
GEOMETRY_FIELDS = ("depth", "world_to_camera", "intrinsics", "confidence")
FIELDS = ("video", *GEOMETRY_FIELDS)
MIN_SIDE = 8
_NAME = re.compile(r"^(video|depth|world_to_camera|intrinsics|confidence)(?:\.(\d{1,5}))?$")


@dataclass(frozen=True)
class Segment:
    field: str
    index: int
    dtype: np.dtype
    shape: tuple[int, ...]

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * self.dtype.itemsize


@dataclass(frozen=True)
class Limits:
    max_items: int
    max_frames: int
    max_side: int
    max_body_bytes: int

    @classmethod
    def from_settings(cls, settings) -> "Limits":
        return cls(max_items=settings.max_items_per_request, max_frames=settings.max_input_frames,
                   max_side=settings.max_input_side,
                   max_body_bytes=int(settings.max_body_mb * 2**20))  # fmt: skip


def dtype_from(table: dict[str, str], name: str, where: str) -> np.dtype:
    if name not in table:
        raise Problem("invalid-tensor", f"{where}: datatype {name!r} is not accepted "
                      f"(use one of {', '.join(table)})")  # fmt: skip
    return np.dtype(table[name])


def plan_segments(tensors: list[tuple[str, np.dtype, list[int]]], limits: Limits) -> list[Segment]:
    """Split (name, dtype, shape) tensors, in body order, into per-item segments; check all."""
    segments: list[Segment] = []
    batched: set[str] = set()
    per_item: set[str] = set()
    seen: set[tuple[str, int]] = set()
    batch_sizes: dict[str, int] = {}
    for name, dtype, shape in tensors:
        match = _NAME.match(name)
        if match is None:
            raise Problem("invalid-tensor", f"unknown tensor name {name!r}: use video, depth, "
                          "world_to_camera, intrinsics or confidence, optionally '.<item index>'")  # fmt: skip
        if any((not isinstance(s, int)) or s < 0 for s in shape):
            raise Problem("invalid-tensor", f"{name}: shape {shape} must be non-negative integers")
        field, suffix = match.group(1), match.group(2)
        if suffix is None:
            if field in batched:
                raise Problem("invalid-tensor", f"tensor {name!r} appears twice")
            batched.add(field)
            if len(shape) < 1:
                raise Problem("invalid-tensor", f"{name}: a batched tensor needs a leading item axis")
            batch_sizes[field] = shape[0]
            if shape[0] > limits.max_items:
                raise Problem("video-limits", f"{name}: {shape[0]} items; at most "
                              f"{limits.max_items} per request")  # fmt: skip
            for index in range(shape[0]):
                segments.append(Segment(field, index, dtype, tuple(shape[1:])))
        else:
            index = int(suffix)
            if (field, index) in seen:
                raise Problem("invalid-tensor", f"tensor {name!r} appears twice")
            seen.add((field, index))
            per_item.add(field)
            segments.append(Segment(field, index, dtype, tuple(shape)))
    mixed = batched & per_item
    if mixed:
        raise Problem("invalid-tensor", f"{sorted(mixed)[0]!r} is given both batched and per item")
    _check_items(segments, limits)
    return segments


def _check_items(segments: list[Segment], limits: Limits) -> None:
    videos = {s.index: s for s in segments if s.field == "video"}
    if not videos:
        raise Problem("invalid-tensor", "no 'video' tensor in the request")
    count = len(videos)
    if count > limits.max_items:
        raise Problem("video-limits", f"{count} videos; at most {limits.max_items} per request")
    if sorted(videos) != list(range(count)):
        raise Problem("invalid-tensor", f"video item indices must be 0..{count - 1}, got "
                      f"{sorted(videos)[:10]}")  # fmt: skip
    by_item: dict[int, dict[str, Segment]] = {}
    for segment in segments:
        if segment.index >= count:
            raise Problem("invalid-tensor", f"{segment.field}.{segment.index}: no video "
                          f"{segment.index} (the request has {count})")  # fmt: skip
        by_item.setdefault(segment.index, {})[segment.field] = segment
    for index, fields in by_item.items():
        frames = check_video(fields["video"], limits)
        check_geometry(index, fields, frames, limits)


def check_video(segment: Segment, limits: Limits) -> int:
    """Video [T,H,W,C] or [T,C,H,W] (C in 1, 3, 4); returns T."""
    where = f"video.{segment.index}"
    if segment.dtype.str not in VIDEO_DTYPES:
        raise Problem("invalid-tensor", f"{where}: dtype {segment.dtype} is not accepted for video "
                      "(uint8 in [0,255], or float16/float32 in [0,1])")  # fmt: skip
    shape = segment.shape
    if len(shape) != 4:
        raise Problem("invalid-tensor", f"{where}: shape {list(shape)} must be [T,H,W,C] or [T,C,H,W]")
    if shape[-1] in (1, 3, 4):
        frames, height, width = shape[0], shape[1], shape[2]
    elif shape[1] in (1, 3, 4):
        frames, height, width = shape[0], shape[2], shape[3]
    else:
        raise Problem("invalid-tensor", f"{where}: shape {list(shape)} has no channel axis of "
                      "size 1, 3 or 4 (last or second)")  # fmt: skip
    if frames < 2:
        raise Problem("video-limits", f"{where}: {frames} frame(s); a video needs at least 2")
    if frames > limits.max_frames:
        raise Problem("video-limits", f"{where}: {frames} frames; at most {limits.max_frames}")
    if min(height, width) < MIN_SIDE or max(height, width) > limits.max_side:
        raise Problem("video-limits", f"{where}: frames of {height}x{width} pixels; each side must "
                      f"be within {MIN_SIDE}..{limits.max_side}")  # fmt: skip
    return frames


def check_geometry(index: int, fields: dict[str, Segment], frames: int, limits: Limits) -> None:
    given = [name for name in GEOMETRY_FIELDS if name in fields]
    if not given:
        return
    missing = [n for n in ("depth", "world_to_camera", "intrinsics") if n not in fields]
    if missing:
        raise Problem("invalid-tensor", f"item {index}: known geometry needs depth, world_to_camera "
                      f"and intrinsics; missing {', '.join(missing)}")  # fmt: skip
    for name in given:
        segment = fields[name]
        if segment.dtype.str not in GEOMETRY_DTYPES:
            raise Problem("invalid-tensor", f"{name}.{index}: dtype {segment.dtype} is not accepted "
                          "(float16, float32 or float64)")  # fmt: skip
    depth = fields["depth"].shape
    if len(depth) != 3 or depth[0] != frames:
        raise Problem("invalid-tensor", f"depth.{index}: shape {list(depth)} must be [T,h,w] with "
                      f"T = {frames} (the video's frames)")  # fmt: skip
    if min(depth[1:]) < 1 or max(depth[1:]) > limits.max_side:
        raise Problem("video-limits", f"depth.{index}: {depth[1]}x{depth[2]} is outside "
                      f"1..{limits.max_side} pixels")  # fmt: skip
    if "confidence" in fields and fields["confidence"].shape != depth:
        raise Problem("invalid-tensor", f"confidence.{index}: shape {list(fields['confidence'].shape)} "
                      f"must equal depth's {list(depth)}")  # fmt: skip
    if fields["world_to_camera"].shape != (frames, 4, 4):
        raise Problem("invalid-tensor", f"world_to_camera.{index}: shape "
                      f"{list(fields['world_to_camera'].shape)} must be [{frames},4,4]")  # fmt: skip
    if fields["intrinsics"].shape not in ((frames, 3, 3), (3, 3)):
        raise Problem("invalid-tensor", f"intrinsics.{index}: shape {list(fields['intrinsics'].shape)} "
                      f"must be [{frames},3,3] or [3,3]")  # fmt: skip


class ValueCheck:
    """Checks values as bytes stream past (floats: finite, video in [0,1], depth >= 0),
    carrying partial elements across chunk boundaries. Integers need no check."""

    def __init__(self, segment: Segment) -> None:
        self.segment = segment
        self.dtype = segment.dtype
        self.enabled = segment.dtype.kind == "f"
        self._carry = b""
        self.low, self.high = math.inf, -math.inf

    def feed(self, chunk: memoryview) -> None:
        if not self.enabled:
            return
        size = self.dtype.itemsize
        start = 0
        if self._carry:
            need = size - len(self._carry)
            head = self._carry + bytes(chunk[:need])
            if len(head) < size:
                self._carry = head
                return
            self._check(np.frombuffer(head, self.dtype))
            self._carry, start = b"", need
        usable = (len(chunk) - start) // size * size
        if usable:
            self._check(np.frombuffer(chunk, self.dtype, count=usable // size, offset=start))
        rest = chunk[start + usable :]
        if len(rest):
            self._carry = bytes(rest)

    def _check(self, values: np.ndarray) -> None:
        low, high = values.min(), values.max()  # NaN propagates into both
        if not (math.isfinite(low) and math.isfinite(high)):
            raise Problem("invalid-tensor", f"{self.where}: contains NaN or inf")
        self.low, self.high = min(self.low, float(low)), max(self.high, float(high))

    @property
    def where(self) -> str:
        return f"{self.segment.field}.{self.segment.index}"

    def finish(self) -> None:
        if not self.enabled or self.low == math.inf:
            return
        field = self.segment.field
        if field == "video" and (self.low < -1e-3 or self.high > 1 + 1e-3):
            raise Problem("invalid-tensor", f"{self.where}: float video must be in [0,1], got "
                          f"values in [{self.low:.3g}, {self.high:.3g}]")  # fmt: skip
        if field in ("depth", "confidence") and self.low < 0:
            raise Problem("invalid-tensor", f"{self.where}: must be >= 0 (0 = unknown depth)")

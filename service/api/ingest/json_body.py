"""``application/json``: small requests with base64 tensors or base64 video files.

Convenient for curl and scripts; ~10x slower than the binary format for large videos
(base64 alone costs 0.3-0.6 s per 97 MB), so it has its own, smaller size limit.
"""

from __future__ import annotations

import asyncio
import binascii

import numpy as np
from pydantic import ValidationError

from service.api.errors import Problem, invalid_request
from service.api.ingest.items import build_spec
from service.api.ingest.json_text import load_json
from service.api.ingest.stream import BodyStream
from service.api.ingest.tensors import JSON_DTYPES, Limits, Segment, ValueCheck, plan_segments
from service.api.ingest.video_files import file_suffix, probe_video
from service.api.schemas import Base64File, ItemFields, JsonScoreRequest, RequestFields
from service.jobs.records import JobSpec


async def read_json(body: BodyStream, *, max_bytes: int, limits: Limits, store) -> JobSpec:
    parts, size = [], 0
    async for piece in body.pieces():
        size += len(piece)
        if size > max_bytes:
            raise Problem("body-too-large", f"JSON bodies are limited to {max_bytes} bytes; use the "
                          "binary format for large videos")  # fmt: skip
        parts.append(bytes(piece))
    payload = load_json(b"".join(parts), "the body")
    try:
        request = JsonScoreRequest.model_validate(payload)
    except ValidationError as exc:
        raise invalid_request(exc) from None
    if len(request.items) > limits.max_items:
        raise Problem("video-limits", f"{len(request.items)} videos; at most {limits.max_items}")

    tensors, files = [], {}
    for index, item in enumerate(request.items):
        if isinstance(item.video, Base64File):
            files[index] = item.video
        else:
            tensors.append((f"video.{index}", item.video))
        if item.geometry is not None:
            for name in ("depth", "world_to_camera", "intrinsics", "confidence"):
                tensor = getattr(item.geometry, name)
                if tensor is not None:
                    tensors.append((f"{name}.{index}", tensor))
    if any(item.geometry is not None and isinstance(item.video, Base64File) for item in request.items):
        raise Problem("invalid-tensor", "known geometry goes with tensor videos, not encoded files")
    planned = [(name, _dtype(t.dtype), t.shape) for name, t in tensors]
    segments = _plan_with_files(planned, files, limits)
    refs = {}
    for segment, (_, tensor) in zip(segments, tensors):
        refs[(segment.field, segment.index)] = _store_tensor(segment, tensor.b64, store)
    for index, upload in files.items():
        refs[("video", index)] = await asyncio.to_thread(_store_file, upload, store, limits,
                                                         f"items[{index}].video")  # fmt: skip
    fields = RequestFields(items=[_fields_only(item) for item in request.items],
                           options=request.options)  # fmt: skip
    return build_spec(fields, refs, len(request.items))


def _fields_only(item) -> ItemFields:
    return ItemFields(id=item.id, prompt=item.prompt, trajectory=item.trajectory, options=item.options)


def _dtype(name: str) -> np.dtype:
    return np.dtype(JSON_DTYPES[name])


def _plan_with_files(planned, files: dict, limits: Limits) -> list[Segment]:
    """Check the tensors; encoded files stand in as placeholders for the video checks."""
    if not files:
        return plan_segments(planned, limits)
    stand_ins = [(f"video.{i}", np.dtype("|u1"), [2, 8, 8, 3]) for i in files]
    segments = plan_segments(planned + stand_ins, limits)
    return segments[: len(planned)]


def _decode(b64: str, where: str) -> bytes:
    try:
        return binascii.a2b_base64(b64, strict_mode=True)
    except (binascii.Error, ValueError):
        raise Problem("invalid-tensor", f"{where}: 'b64' is not valid base64") from None


def _store_tensor(segment: Segment, b64: str, store):
    where = f"{segment.field}.{segment.index}"
    data = _decode(b64, where)
    if len(data) != segment.nbytes:
        raise Problem("invalid-tensor", f"{where}: base64 decodes to {len(data)} bytes; dtype "
                      f"{segment.dtype} and shape {list(segment.shape)} need {segment.nbytes}")  # fmt: skip
    check = ValueCheck(segment)
    check.feed(memoryview(data))
    check.finish()
    writer = store.writer("npy", dtype=segment.dtype, shape=segment.shape,
                          expected_nbytes=segment.nbytes)  # fmt: skip
    writer.write(data)
    return writer.commit()


def _store_file(upload: Base64File, store, limits: Limits, where: str):
    data = _decode(upload.b64, where)
    writer = store.writer("file", suffix=file_suffix(None, upload.format))
    writer.write(data)
    ref = writer.commit()
    probe_video(store.local_path(ref), limits, where)
    return ref

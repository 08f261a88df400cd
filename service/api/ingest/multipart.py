"""``multipart/form-data``: encoded video files, one part per video.

    POST /v1/score
    Content-Type: multipart/form-data; boundary=...
    parts:  request = <RequestFields JSON>          (optional text field)
            video   = <file>  (repeat, in item order: mp4, webm, avi, mkv, mov...)
            depth, world_to_camera, intrinsics, confidence = <.npy file>  (optional known
                      geometry: one part each per video, in the same order; frame axis = the
                      file's frames)
"""

from __future__ import annotations

import asyncio
import io

import numpy as np
from starlette.datastructures import UploadFile
from starlette.requests import Request

from service.api.errors import Problem
from service.api.ingest.items import build_spec, check_item_count, parse_fields
from service.api.ingest.tensors import GEOMETRY_FIELDS, Limits, Segment, ValueCheck, check_geometry
from service.api.ingest.video_files import file_suffix, probe_video
from service.jobs.records import JobSpec

COPY_CHUNK = 1 << 20
MAX_GEOMETRY_PART = 512 * 2**20


async def read_multipart(request: Request, *, limits: Limits, store) -> JobSpec:
    form = await request.form(max_files=limits.max_items * 5, max_fields=4, max_part_size=4 * 2**20)
    try:
        unknown = sorted(set(form.keys()) - {"request", "video", *GEOMETRY_FIELDS})
        if unknown:
            raise Problem("invalid-request", f"unknown form field(s) {unknown}: use 'video' (files), "
                          "'request' (JSON) and optional geometry .npy parts")  # fmt: skip
        raw = form.getlist("request")
        if len(raw) > 1 or (raw and not isinstance(raw[0], str)):
            raise Problem("invalid-request", "'request' must be one text field of JSON")
        fields = parse_fields(raw[0] if raw else None, "request")
        videos = form.getlist("video")
        if not videos:
            raise Problem("invalid-request", "no 'video' file part in the form")
        if len(videos) > limits.max_items:
            raise Problem("video-limits", f"{len(videos)} videos; at most {limits.max_items} per request")
        parts = {name: form.getlist(name) for name in ("video", *GEOMETRY_FIELDS)}
        for name, values in parts.items():
            if any(not isinstance(v, UploadFile) for v in values):
                raise Problem("invalid-request", f"'{name}' parts must be files")
            if name != "video" and values and len(values) != len(videos):
                raise Problem("invalid-request", f"{len(values)} '{name}' part(s) for {len(videos)} "
                              "video(s): give one per video, in order")  # fmt: skip
        check_item_count(fields, len(videos))
        refs = {}
        for index, upload in enumerate(videos):
            ref, frames = await asyncio.to_thread(_store_file, upload, store, limits, f"video[{index}]")
            refs[("video", index)] = ref
            geometry = {name: _read_npy_part(values[index], name, index)
                        for name, values in parts.items() if name != "video" and values}  # fmt: skip
            if geometry:
                segments = {name: Segment(name, index, a.dtype, a.shape) for name, a in geometry.items()}
                check_geometry(index, segments, frames, limits)
                for name, array in geometry.items():
                    check = ValueCheck(segments[name])
                    check.feed(memoryview(array.reshape(-1)).cast("B"))
                    check.finish()
                    refs[(name, index)] = store.put_array(array)
        return build_spec(fields, refs, len(videos))
    finally:
        await form.close()


def _store_file(upload: UploadFile, store, limits: Limits, where: str):
    writer = store.writer("file", suffix=file_suffix(upload.filename))
    try:
        upload.file.seek(0)
        while chunk := upload.file.read(COPY_CHUNK):
            writer.write(chunk)
        ref = writer.commit()
    except BaseException:
        writer.abort()
        raise
    return ref, probe_video(store.local_path(ref), limits, where)


def _read_npy_part(upload: UploadFile, name: str, index: int) -> np.ndarray:
    upload.file.seek(0, io.SEEK_END)
    if upload.file.tell() > MAX_GEOMETRY_PART:
        raise Problem("body-too-large", f"{name}[{index}]: geometry parts are limited to {MAX_GEOMETRY_PART} bytes")
    upload.file.seek(0)
    try:
        array = np.load(upload.file, allow_pickle=False)
    except Exception:
        raise Problem("invalid-tensor", f"{name}[{index}]: not a .npy array") from None
    if not isinstance(array, np.ndarray) or array.dtype.kind not in "f":
        raise Problem("invalid-tensor", f"{name}[{index}]: must be a float .npy array")
    return np.ascontiguousarray(array.astype(array.dtype.newbyteorder("<"), copy=False))

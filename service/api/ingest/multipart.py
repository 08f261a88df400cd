"""``multipart/form-data``: encoded video files, one part per video.

    POST /v1/score
    Content-Type: multipart/form-data; boundary=...
    parts:  request = <RequestFields JSON>          (optional text field)
            video   = <file>  (repeat, in item order: mp4, webm, avi, mkv, mov...)
"""

from __future__ import annotations

import asyncio

from starlette.datastructures import UploadFile
from starlette.requests import Request

from service.api.errors import Problem
from service.api.ingest.items import build_spec, check_item_count, parse_fields
from service.api.ingest.tensors import Limits
from service.api.ingest.video_files import file_suffix, probe_video
from service.jobs.records import JobSpec

COPY_CHUNK = 1 << 20


async def read_multipart(request: Request, *, limits: Limits, store) -> JobSpec:
    form = await request.form(max_files=limits.max_items, max_fields=4, max_part_size=4 * 2**20)
    try:
        unknown = sorted(set(form.keys()) - {"request", "video"})
        if unknown:
            raise Problem("invalid-request", f"unknown form field(s) {unknown}: use 'video' (files) "
                          "and 'request' (JSON)")  # fmt: skip
        raw = form.getlist("request")
        if len(raw) > 1 or (raw and not isinstance(raw[0], str)):
            raise Problem("invalid-request", "'request' must be one text field of JSON")
        fields = parse_fields(raw[0] if raw else None, "request")
        videos = form.getlist("video")
        if not videos:
            raise Problem("invalid-request", "no 'video' file part in the form")
        if any(not isinstance(v, UploadFile) for v in videos):
            raise Problem("invalid-request", "'video' parts must be files")
        check_item_count(fields, len(videos))
        refs = {}
        for index, upload in enumerate(videos):
            refs[("video", index)] = await asyncio.to_thread(
                _store_file, upload, store, limits, f"video[{index}]")
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
    probe_video(store.local_path(ref), limits, where)
    return ref

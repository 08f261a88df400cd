"""Upload formats of ``POST /v1/score``, chosen by Content-Type (docs/service.md, "Wire formats").

    application/octet-stream + Inference-Header-Content-Length   binary.py (fastest)
    application/octet-stream without it                           a .npy or safetensors file
    application/x-npy                                             npy.py
    application/x-safetensors                                     safetensors_body.py
    multipart/form-data                                           multipart.py (encoded videos)
    application/json                                              json_body.py (base64)

Each reader validates what it can (framing, names, dtypes, shapes, limits) before reading
the tensor bytes, then streams them into the blob store and returns the job spec.
"""

from __future__ import annotations

from dataclasses import dataclass

from starlette.requests import ClientDisconnect, Request

from service.api.errors import Problem
from service.api.ingest.binary import HEADER_LENGTH, parse_header_length, read_binary
from service.api.ingest.items import parse_fields
from service.api.ingest.json_body import read_json
from service.api.ingest.multipart import read_multipart
from service.api.ingest.npy import MAGIC, read_npy
from service.api.ingest.safetensors_body import read_safetensors
from service.api.ingest.stream import BodyStream
from service.api.ingest.tensors import Limits
from service.jobs.blobs import DirectoryBlobStore
from service.jobs.records import JobSpec

REQUEST_FIELDS_HEADER = "reward3d-request"
NPY_TYPES = {"application/x-npy", "application/npy"}
SAFETENSORS_TYPES = {"application/x-safetensors", "application/safetensors"}
FORMATS = ["binary", "npy", "safetensors", "multipart", "json"]


class UploadSession:
    """The blob store as one request sees it: remembers what the request wrote, so that a
    refused request leaves nothing behind (``discard``) instead of waiting for the janitor.

    Only blobs this request created are deleted: one that already existed belongs to other
    jobs too. (Two identical uploads racing, one refused, can still delete the other's blob;
    that job then fails its item with ``input_expired`` and can be resubmitted.)"""

    def __init__(self, store) -> None:
        self.store = store
        self.writers = []

    def writer(self, *args, **kwargs):
        writer = self.store.writer(*args, **kwargs)
        self.writers.append(writer)
        return writer

    put_array = DirectoryBlobStore.put_array  # goes through self.writer, hence is tracked

    def __getattr__(self, name):  # everything else: the store itself
        return getattr(self.store, name)

    def discard(self) -> None:
        for writer in self.writers:
            writer.abort()  # a partial upload's temp file
            if writer.created and writer.ref is not None:
                self.store.remove(writer.ref)
        self.writers.clear()


@dataclass
class Submission:
    spec: JobSpec
    format: str
    received_bytes: int


def content_length_of(request: Request) -> int | None:
    value = request.headers.get("content-length")
    if value is None:
        return None
    try:
        length = int(value)
    except ValueError:
        raise Problem("body-framing", "Content-Length is not an integer") from None
    if length < 0:
        raise Problem("body-framing", "Content-Length is negative")
    return length


async def read_submission(request: Request, settings, store) -> Submission:
    try:
        return await _read_submission(request, settings, store)
    except ClientDisconnect:  # nobody will read the answer; say what happened in the logs
        raise Problem("body-framing", "the client disconnected before the whole body arrived") from None


async def _read_submission(request: Request, settings, store) -> Submission:
    limits = Limits.from_settings(settings)
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    content_length = content_length_of(request)
    if content_length is not None and content_length > limits.max_body_bytes:
        raise Problem("body-too-large", f"the body is {content_length} bytes; the limit is "
                      f"{limits.max_body_bytes}")  # fmt: skip
    if content_length == 0:
        raise Problem("body-framing", "the request body is empty")
    if content_type == "multipart/form-data":
        spec = await read_multipart(request, limits=limits, store=store)
        return Submission(spec, "multipart", content_length or 0)

    body = BodyStream(request.stream())
    header_length = request.headers.get(HEADER_LENGTH)
    fields_header = request.headers.get(REQUEST_FIELDS_HEADER)
    fmt = _format(content_type, header_length)
    max_json_bytes = int(settings.max_json_mb * 2**20)
    if fmt == "json" and content_length is not None and content_length > max_json_bytes:
        # Refused before reading, as for the other formats (a body is not read to be refused).
        raise Problem("body-too-large", f"the JSON body is {content_length} bytes; JSON bodies are "
                      f"limited to {max_json_bytes} bytes (use the binary format for large videos)")  # fmt: skip
    if fmt == "sniff":
        fmt = await _sniff(body)
    if fmt == "binary":
        spec = await read_binary(body, content_length=content_length, limits=limits, store=store,
                                 header_length=parse_header_length(header_length, content_length))  # fmt: skip
    elif fmt == "npy":
        fields = parse_fields(fields_header, "Reward3D-Request header")
        spec = await read_npy(body, fields=fields, content_length=content_length, limits=limits,
                              store=store)  # fmt: skip
    elif fmt == "safetensors":
        fields = parse_fields(fields_header, "Reward3D-Request header") if fields_header else None
        spec = await read_safetensors(body, fields=fields, content_length=content_length,
                                      limits=limits, store=store)  # fmt: skip
    else:
        spec = await read_json(body, max_bytes=max_json_bytes, limits=limits,
                               store=store)  # fmt: skip
    return Submission(spec, fmt, body.received)


def _format(content_type: str, header_length: str | None) -> str:
    if content_type in ("application/octet-stream", ""):
        return "binary" if header_length is not None else "sniff"
    if content_type in NPY_TYPES:
        return "npy"
    if content_type in SAFETENSORS_TYPES:
        return "safetensors"
    if content_type == "application/json":
        return "json"
    raise Problem("unsupported-media-type", f"Content-Type {content_type!r} is not accepted: use "
                  "application/octet-stream (binary, with Inference-Header-Content-Length), "
                  "application/x-npy, application/x-safetensors, multipart/form-data or "
                  "application/json")  # fmt: skip


async def _sniff(body: BodyStream) -> str:
    """An octet-stream without the binary header: a .npy or safetensors file, or an error."""
    head = await body.peek(9, "body")
    if head[:6] == MAGIC:
        return "npy"
    if head[8:9] == b"{":
        return "safetensors"
    raise Problem("body-framing", "application/octet-stream bodies need an "
                  "Inference-Header-Content-Length header (the binary format), unless they are "
                  ".npy or safetensors files")  # fmt: skip

"""A safetensors body: tensors named as in the binary format, request fields in metadata.

    POST /v1/score
    Content-Type: application/x-safetensors
    body = a safetensors file; tensors ``video`` [B,T,H,W,C] or ``video.<i>`` [T,H,W,C], optional
           geometry tensors; request fields (RequestFields JSON) in ``__metadata__["reward3d"]``
           or in a ``Reward3D-Request`` header.

The header (8-byte little-endian length + JSON) is parsed and checked before the data.
"""

from __future__ import annotations

import struct

from service.api.errors import Problem
from service.api.ingest.items import build_spec, check_item_count, parse_fields
from service.api.ingest.json_text import load_json_object
from service.api.ingest.stream import BodyStream, stream_segments
from service.api.ingest.tensors import SAFETENSORS_DTYPES, Limits, dtype_from, plan_segments
from service.api.schemas import RequestFields
from service.jobs.records import JobSpec

MAX_HEADER = 16 * 2**20


async def read_safetensors(body: BodyStream, *, fields: RequestFields | None,
                           content_length: int | None, limits: Limits, store) -> JobSpec:  # fmt: skip
    (length,) = struct.unpack("<Q", await body.read_exact(8, "safetensors header length"))
    if not 2 <= length <= MAX_HEADER:
        raise Problem("body-framing", f"safetensors header length {length} is out of range")
    header = load_json_object(await body.read_exact(length, "safetensors header"), "the safetensors header")
    metadata = header.pop("__metadata__", None) or {}
    if not isinstance(metadata, dict):
        raise Problem("body-framing", "safetensors __metadata__ must be an object of strings")
    if "reward3d" in metadata:
        if fields is not None:
            raise Problem("invalid-request", "give request fields either in __metadata__['reward3d'] "
                          "or in the Reward3D-Request header, not both")  # fmt: skip
        fields = parse_fields(metadata["reward3d"], "__metadata__.reward3d")
    fields = fields or RequestFields()

    entries = []
    for name, entry in header.items():
        try:
            begin, end = (int(v) for v in entry["data_offsets"])
            dtype = dtype_from(SAFETENSORS_DTYPES, str(entry["dtype"]), name)
            shape = [int(s) for s in entry["shape"]]
        except Problem:
            raise
        except Exception:
            raise Problem("body-framing", f"safetensors entry {name!r} is malformed") from None
        entries.append((begin, end, name, dtype, shape))
    entries.sort(key=lambda e: e[0])
    position = 0
    for begin, end, name, dtype, shape in entries:  # contiguous, no holes or overlaps
        size = dtype.itemsize
        for s in shape:
            size *= s
        if begin != position or end - begin != size:
            raise Problem("body-framing", f"safetensors tensor {name!r}: data_offsets [{begin}, {end}] "
                          f"do not match its place ({position}) and size ({size} bytes)")  # fmt: skip
        position = end
    segments = plan_segments([(name, dtype, shape) for _, _, name, dtype, shape in entries], limits)
    count = sum(1 for s in segments if s.field == "video")
    check_item_count(fields, count)
    total = 8 + length + position
    if total > limits.max_body_bytes:
        raise Problem("body-too-large", f"the file is {total} bytes; the limit is {limits.max_body_bytes}")
    if content_length is not None and content_length != total:
        raise Problem("body-framing", f"the body is {content_length} bytes but the safetensors "
                      f"header declares {total}")  # fmt: skip
    refs = await stream_segments(body, segments, store)
    return build_spec(fields, refs, count)

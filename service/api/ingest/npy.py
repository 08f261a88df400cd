"""A ``.npy`` body: one video [T,H,W,C] (or [T,C,H,W]) or a group [B,T,H,W,C].

    POST /v1/score
    Content-Type: application/x-npy
    Reward3D-Request: {"items": [{"prompt": "..."}], "options": {...}}     (optional, JSON)
    body = the .npy file (numpy.save of a C-ordered little-endian uint8/float16/float32 array)

The .npy header (dtype, shape) is parsed and checked before the data is read.
"""

from __future__ import annotations

import ast
import struct

import numpy as np

from service.api.errors import Problem
from service.api.ingest.items import build_spec, check_item_count
from service.api.ingest.stream import BodyStream, stream_segments
from service.api.ingest.tensors import Limits, plan_segments
from service.api.schemas import RequestFields
from service.jobs.records import JobSpec

MAGIC = b"\x93NUMPY"
MAX_NPY_HEADER = 2**20


async def read_npy_header(body: BodyStream) -> tuple[np.dtype, list[int], int]:
    """(dtype, shape, header bytes) of the .npy at the start of the body."""
    preamble = await body.read_exact(8, ".npy preamble")
    if preamble[:6] != MAGIC:
        raise Problem("body-framing", "the body is not a .npy file (bad magic bytes)")
    major = preamble[6]
    if major == 1:
        (length,) = struct.unpack("<H", await body.read_exact(2, ".npy header length"))
        consumed = 10
    elif major in (2, 3):
        (length,) = struct.unpack("<I", await body.read_exact(4, ".npy header length"))
        consumed = 12
    else:
        raise Problem("body-framing", f"unsupported .npy format version {major}")
    if length > MAX_NPY_HEADER:
        raise Problem("body-framing", f".npy header of {length} bytes is too large")
    text = (await body.read_exact(length, ".npy header")).decode("latin1" if major < 3 else "utf8")
    try:
        header = ast.literal_eval(text)  # a literal only: never code
        descr, fortran, shape = header["descr"], header["fortran_order"], header["shape"]
        dtype = np.dtype(descr)
    except Exception:
        raise Problem("body-framing", "the .npy header is malformed") from None
    if fortran:
        raise Problem("invalid-tensor", ".npy arrays must be C-ordered (fortran_order False)")
    if dtype.byteorder == ">":
        raise Problem("invalid-tensor", ".npy arrays must be little-endian")
    if dtype.str not in ("|u1", "<f2", "<f4"):
        raise Problem("invalid-tensor", f".npy dtype {dtype} is not accepted for video "
                      "(uint8, float16 or float32)")  # fmt: skip
    if not isinstance(shape, tuple) or not all(isinstance(s, int) and s >= 0 for s in shape):
        raise Problem("body-framing", "the .npy shape is malformed")
    return dtype, list(shape), consumed + length


async def read_npy(body: BodyStream, *, fields: RequestFields, content_length: int | None,
                   limits: Limits, store) -> JobSpec:  # fmt: skip
    dtype, shape, header_bytes = await read_npy_header(body)
    if len(shape) == 5:
        name = "video"  # a group [B,T,H,W,C]
    elif len(shape) == 4:
        name = "video.0"
    else:
        raise Problem("invalid-tensor", f".npy shape {shape} must be [T,H,W,C] (one video) or "
                      "[B,T,H,W,C] (a group)")  # fmt: skip
    segments = plan_segments([(name, dtype, shape)], limits)
    check_item_count(fields, len(segments))
    total = header_bytes + sum(s.nbytes for s in segments)
    if total > limits.max_body_bytes:
        raise Problem("body-too-large", f"the array is {total} bytes; the limit is {limits.max_body_bytes}")
    if content_length is not None and content_length != total:
        raise Problem("body-framing", f"the body is {content_length} bytes but its .npy header "
                      f"declares {total}")  # fmt: skip
    refs = await stream_segments(body, segments, store)
    return build_spec(fields, refs, len(segments))

"""The binary format (KServe v2 binary-tensor extension style), the fast path.

    POST /v1/score
    Content-Type: application/octet-stream
    Inference-Header-Content-Length: <N>
    body = <N bytes: JSON header (BinaryHeader)> <tensor bytes, in header order, no padding>

Each tensor's bytes are raw little-endian, row-major (C order). Everything in the header is
validated, and the body length checked against it, before a single tensor byte is read.
"""

from __future__ import annotations

from pydantic import ValidationError

from service.api.errors import Problem, invalid_request
from service.api.ingest.items import build_spec, check_item_count
from service.api.ingest.json_text import load_json_object
from service.api.ingest.stream import BodyStream, stream_segments
from service.api.ingest.tensors import KSERVE_DTYPES, Limits, dtype_from, plan_segments
from service.api.schemas import BinaryHeader
from service.jobs.records import JobSpec

HEADER_LENGTH = "inference-header-content-length"
MAX_HEADER_BYTES = 16 * 2**20


def parse_header_length(value: str | None, content_length: int | None) -> int:
    if value is None:
        raise Problem("body-framing", "the binary format needs an Inference-Header-Content-Length "
                      "header (bytes of the JSON header at the start of the body)")  # fmt: skip
    try:
        length = int(value)
    except ValueError:
        raise Problem("body-framing", f"Inference-Header-Content-Length must be an integer, got {value[:40]!r}") from None
    if not 2 <= length <= MAX_HEADER_BYTES:
        raise Problem("body-framing", f"Inference-Header-Content-Length must be within 2..{MAX_HEADER_BYTES}")
    if content_length is not None and length > content_length:
        raise Problem("body-framing", f"Inference-Header-Content-Length ({length}) is larger than the "
                      f"body ({content_length} bytes)")  # fmt: skip
    return length


async def read_binary(body: BodyStream, *, header_length: int, content_length: int | None,
                      limits: Limits, store) -> JobSpec:  # fmt: skip
    raw = await body.read_exact(header_length, "JSON header")
    parsed = load_json_object(raw, "the JSON header", hint="is Inference-Header-Content-Length right?")
    try:
        header = BinaryHeader.model_validate(parsed)
    except ValidationError as exc:
        raise invalid_request(exc, ("header",)) from None
    tensors = []
    for position, spec in enumerate(header.inputs):
        dtype = dtype_from(KSERVE_DTYPES, spec.datatype, f"inputs[{position}] ({spec.name})")
        tensors.append((spec.name, dtype, spec.shape))
    segments = plan_segments(tensors, limits)
    for spec, (_, dtype, shape) in zip(header.inputs, tensors):
        declared = spec.parameters.binary_data_size if spec.parameters else None
        size = dtype.itemsize
        for s in shape:
            size *= s
        if declared is not None and declared != size:
            raise Problem("body-framing", f"{spec.name}: binary_data_size is {declared} but "
                          f"{spec.datatype} {spec.shape} is {size} bytes")  # fmt: skip
    count = sum(1 for s in segments if s.field == "video")
    check_item_count(header, count)
    total = header_length + sum(s.nbytes for s in segments)
    if total > limits.max_body_bytes:
        raise Problem("body-too-large", f"the tensors declare {total} bytes; the limit is "
                      f"{limits.max_body_bytes}")  # fmt: skip
    if content_length is not None and content_length != total:
        raise Problem("body-framing", f"the body is {content_length} bytes but the header declares "
                      f"{total} ({header_length} header + {total - header_length} tensor bytes)")  # fmt: skip
    refs = await stream_segments(body, segments, store)
    return build_spec(header, refs, count)

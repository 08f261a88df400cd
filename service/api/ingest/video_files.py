"""Encoded video files (multipart or base64): stored as they are, probed with PyAV first.

The probe (container, video stream, frame count, size) runs in the API so that a file that
is not a video, or one outside the limits, gets its 422 at once; decoding happens on a
worker (service.pipeline.decode). PyAV does not import torch.
"""

from __future__ import annotations

from pathlib import Path

from service.api.errors import Problem
from service.api.ingest.tensors import MIN_SIDE, Limits
from service.jobs.blobs import ALLOWED_FILE_SUFFIXES

MAX_PROBE_PACKETS_SLACK = 1


def file_suffix(filename: str | None, format_name: str | None = None) -> str:
    """A safe suffix for the stored file ('' when unknown: PyAV sniffs the content)."""
    suffix = f".{format_name.lower()}" if format_name else Path(filename or "").suffix.lower()
    return suffix if suffix in ALLOWED_FILE_SUFFIXES else ""


def probe_video(path: Path, limits: Limits, where: str) -> int:
    """Frames in the file's first video stream; 422 if it is not a video or out of limits."""
    try:
        import av
    except ImportError:  # an API image built without PyAV: tensors still work, say so
        raise Problem("unsupported-media-type", f"{where}: this API cannot read encoded video "
                      "files (PyAV is not installed); send raw tensors (binary, .npy, "
                      "safetensors) instead") from None  # fmt: skip
    try:
        container = av.open(str(path))
    except Exception:
        raise Problem("invalid-video-file", f"{where}: not a video file PyAV can open") from None
    with container:
        if not container.streams.video:
            raise Problem("invalid-video-file", f"{where}: the file has no video stream")
        stream = container.streams.video[0]
        height, width = stream.codec_context.height, stream.codec_context.width
        if min(height, width) < MIN_SIDE or max(height, width) > limits.max_side:
            raise Problem("video-limits", f"{where}: frames of {height}x{width} pixels; each side "
                          f"must be within {MIN_SIDE}..{limits.max_side}")  # fmt: skip
        frames = 0
        try:
            for packet in container.demux(stream):
                if packet.size:
                    frames += 1
                    if frames > limits.max_frames:
                        break
        except Exception:
            if frames == 0:
                raise Problem("invalid-video-file", f"{where}: the file cannot be demuxed") from None
    if frames < 2:
        raise Problem("video-limits", f"{where}: {frames} frame(s); a video needs at least 2")
    if frames > limits.max_frames:
        raise Problem("video-limits", f"{where}: more than {limits.max_frames} frames")
    return frames

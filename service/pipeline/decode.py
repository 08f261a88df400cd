"""Step 1: turn a video (file, folder of images, array) into sampled, resized frames.

Accepted inputs:
- video files PyAV can decode (.mp4, .webm, .avi, .mkv, .mov, ...),
- a folder of images (.png, .jpg, .jpeg, .bmp, .webp), taken in name order,
- ``.npy`` arrays and ``.safetensors`` files (key ``video`` or ``frames``, or a single tensor),
- in-memory arrays (numpy or torch), as the service and the SDK send them.

Arrays are [T,H,W,3] (also [T,H,W], [T,H,W,1], [T,H,W,4] and channel-first [T,3,H,W]),
uint8 in [0,255] or float in [0,1]. Frames are sampled evenly over the whole clip (the first
and last kept: parallax comes from the whole path) and resized so the longer side is
``long_side`` pixels, keeping the aspect ratio.

A geometry model that wants its own input size (DA3: long side ``da3_process_res``, sides
multiples of 14) passes ``geometry_size``: each sampled source frame is then also resized
once, on uint8, straight from the source to that size (``Video.geometry_frames``).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import torch

from service.pipeline.types import PipelineInputError, Video

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff"}
MAX_DECODED_FRAMES = 20_000  # refuse absurdly long inputs instead of filling memory
MAX_SIDE = 8192
# (source height, source width) -> (height, width) the geometry model wants its input at.
GeometrySize = Callable[[int, int], tuple[int, int]]


def load_video(
    source: str | Path | np.ndarray | torch.Tensor,
    *,
    max_frames: int,
    long_side: int,
    frame_stride: int = 1,
    geometry_size: GeometrySize | None = None,
) -> Video:
    """Read, sample and resize. Raises PipelineInputError with a reason on bad input."""
    if isinstance(source, (np.ndarray, torch.Tensor)):
        return frames_to_video(source, max_frames=max_frames, long_side=long_side,
                               frame_stride=frame_stride, geometry_size=geometry_size)
    path = Path(source)
    if not path.exists():
        raise PipelineInputError(f"no such file or folder: {path}")
    if path.is_dir():
        array, fps = _read_image_folder(path), None
    elif path.suffix.lower() == ".npy":
        array, fps = _read_npy(path), None
    elif path.suffix.lower() == ".safetensors":
        array, fps = _read_safetensors(path), None
    elif path.suffix.lower() in IMAGE_SUFFIXES:
        raise PipelineInputError(f"{path} is a single image; a video needs at least 2 frames")
    else:
        return _read_video_file(path, max_frames=max_frames, long_side=long_side,
                                frame_stride=frame_stride, geometry_size=geometry_size)
    return frames_to_video(array, max_frames=max_frames, long_side=long_side,
                           frame_stride=frame_stride, fps=fps, geometry_size=geometry_size)


def sample_indices(num_frames: int, *, max_frames: int, frame_stride: int = 1) -> list[int]:
    """Every ``frame_stride``-th frame, then at most ``max_frames`` spread evenly (ends kept)."""
    candidates = np.arange(0, num_frames, frame_stride)
    if len(candidates) > max_frames:
        picks = np.linspace(0, len(candidates) - 1, max_frames).round().astype(int)
        candidates = candidates[np.unique(picks)]
    return [int(i) for i in candidates]


def working_size(height: int, width: int, long_side: int) -> tuple[int, int]:
    """(H, W) with the longer side equal to ``long_side`` and the aspect ratio kept."""
    scale = long_side / max(height, width)
    return max(1, round(height * scale)), max(1, round(width * scale))


def resize_source_frame(frame: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """One resize of a source frame [H,W,3] uint8 -> [h,w,3] uint8: area averaging when
    shrinking, bicubic when either side grows (saturated to 0..255), as DA3's own input
    processing does."""
    height, width = frame.shape[:2]
    new_h, new_w = size
    if (new_h, new_w) == (height, width):
        return np.ascontiguousarray(frame)
    interpolation = cv2.INTER_CUBIC if new_h > height or new_w > width else cv2.INTER_AREA
    return cv2.resize(frame, (new_w, new_h), interpolation=interpolation)


def _to_uint8(frame: np.ndarray) -> np.ndarray:
    if frame.dtype == np.uint8:
        return frame
    return np.round(np.clip(frame, 0.0, 1.0) * 255.0).astype(np.uint8)


def frames_to_video(
    array: np.ndarray | torch.Tensor,
    *,
    max_frames: int,
    long_side: int,
    frame_stride: int = 1,
    fps: float | None = None,
    geometry_size: GeometrySize | None = None,
) -> Video:
    """Validate an in-memory clip, then sample and resize it."""
    array = _as_thwc(array)
    indices = sample_indices(array.shape[0], max_frames=max_frames, frame_stride=frame_stride)
    if len(indices) < 2:
        raise PipelineInputError(
            f"need at least 2 frames after sampling (frame_stride={frame_stride}), got {len(indices)}"
        )
    frames = [_resize(_to_float(array[i]), long_side) for i in indices]
    geometry_frames = None
    if geometry_size is not None:
        size = geometry_size(array.shape[1], array.shape[2])
        geometry_frames = torch.from_numpy(
            np.stack([resize_source_frame(_to_uint8(array[i]), size) for i in indices])
        )
    return Video(
        frames=torch.from_numpy(np.stack(frames)),
        source_indices=indices,
        source_num_frames=array.shape[0],
        source_size=(array.shape[1], array.shape[2]),
        fps=fps,
        geometry_frames=geometry_frames,
    )


def _as_thwc(array: np.ndarray | torch.Tensor) -> np.ndarray:
    if isinstance(array, torch.Tensor):
        array = array.detach().cpu().numpy()
    array = np.asarray(array)
    if array.dtype == np.uint8:
        pass
    elif array.dtype.kind == "f":
        if not np.isfinite(array).all():
            raise PipelineInputError("video contains NaN or inf values")
        low, high = float(array.min(initial=0.0)), float(array.max(initial=0.0))
        if low < -1e-3 or high > 1 + 1e-3:
            raise PipelineInputError(
                f"float video must be in [0,1], got values in [{low:.3g}, {high:.3g}]"
            )
        array = array.astype(np.float32, copy=False)
    else:
        raise PipelineInputError(f"video dtype must be uint8 or float, got {array.dtype}")
    if array.ndim == 3:
        array = array[..., None]
    if array.ndim != 4:
        raise PipelineInputError(f"video must be [T,H,W,3], got shape {tuple(array.shape)}")
    if array.shape[-1] not in (1, 3, 4) and array.shape[1] in (1, 3, 4):
        array = np.moveaxis(array, 1, -1)  # channel-first [T,C,H,W]
    channels = array.shape[-1]
    if channels == 1:
        array = np.repeat(array, 3, axis=-1)
    elif channels == 4:
        array = array[..., :3]
    elif channels != 3:
        raise PipelineInputError(f"video must have 1, 3 or 4 channels, got shape {array.shape}")
    t, h, w, _ = array.shape
    if t < 2:
        raise PipelineInputError(f"a video needs at least 2 frames, got {t}")
    if min(h, w) < 8 or max(h, w) > MAX_SIDE:
        raise PipelineInputError(f"frame size {h}x{w} is outside 8..{MAX_SIDE} pixels")
    return array


def _to_float(frame: np.ndarray) -> np.ndarray:
    if frame.dtype == np.uint8:
        return frame.astype(np.float32) / 255.0
    return np.clip(frame, 0.0, 1.0).astype(np.float32)


def _resize(frame: np.ndarray, long_side: int) -> np.ndarray:
    height, width = frame.shape[:2]
    new_h, new_w = working_size(height, width, long_side)
    if (new_h, new_w) == (height, width):
        return np.ascontiguousarray(frame)
    # INTER_AREA when shrinking (anti-aliased), bilinear when enlarging.
    interpolation = cv2.INTER_AREA if new_h * new_w < height * width else cv2.INTER_LINEAR
    return cv2.resize(frame, (new_w, new_h), interpolation=interpolation)


def _read_image_folder(folder: Path) -> np.ndarray:
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if len(files) < 2:
        raise PipelineInputError(f"folder {folder} holds {len(files)} images; need at least 2")
    if len(files) > MAX_DECODED_FRAMES:
        raise PipelineInputError(f"folder {folder} holds over {MAX_DECODED_FRAMES} images")
    frames = []
    for file in files:
        image = cv2.imread(str(file), cv2.IMREAD_COLOR)
        if image is None:
            raise PipelineInputError(f"cannot decode image {file}")
        frames.append(cv2.cvtColor(image, cv2.COLOR_BGR2RGB))
    sizes = {f.shape for f in frames}
    if len(sizes) != 1:
        raise PipelineInputError(f"images in {folder} differ in size: {sorted(sizes)}")
    return np.stack(frames)


def _read_npy(path: Path) -> np.ndarray:
    try:
        return np.load(path, allow_pickle=False, mmap_mode="r")
    except Exception as exc:
        raise PipelineInputError(f"cannot read {path} as .npy: {exc}") from None


def _read_safetensors(path: Path) -> np.ndarray:
    from safetensors import SafetensorError
    from safetensors.numpy import load_file

    try:
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise PipelineInputError(f"cannot read {path} as safetensors: {exc}") from None
    for key in ("video", "frames"):
        if key in tensors:
            return tensors[key]
    if len(tensors) == 1:
        return next(iter(tensors.values()))
    raise PipelineInputError(
        f"{path} holds tensors {sorted(tensors)}; name the video 'video' or 'frames'"
    )


def _read_video_file(path: Path, *, max_frames: int, long_side: int, frame_stride: int,
                     geometry_size: GeometrySize | None = None) -> Video:  # fmt: skip
    """Decode with PyAV, keeping only the sampled frames (resized as they arrive)."""
    total = _count_frames(path)  # packets; a packet that fails to decode makes this too high
    for _attempt in range(2):
        wanted = set(sample_indices(total, max_frames=max_frames, frame_stride=frame_stride))
        frames, geometry_frames, indices, source_size, fps, decoded = _decode_frames(
            path, wanted, long_side, geometry_size
        )
        if decoded >= total or len(frames) == len(wanted):
            break
        total = decoded  # fewer decodable frames than packets: sample again over what exists
    if len(frames) < 2:
        raise PipelineInputError(f"{path} decoded to {len(frames)} frame(s); need at least 2")
    return Video(
        frames=torch.from_numpy(np.stack(frames)),
        source_indices=indices,
        source_num_frames=total,
        source_size=source_size,
        fps=fps,
        geometry_frames=torch.from_numpy(np.stack(geometry_frames)) if geometry_size else None,
    )


def _decode_frames(path: Path, wanted: set[int], long_side: int, geometry_size: GeometrySize | None):
    import av

    frames, geometry_frames, indices, source_size, fps, decoded = [], [], [], None, None, 0
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise PipelineInputError(f"{path} has no video stream")
            stream = container.streams.video[0]
            fps = float(stream.average_rate) if stream.average_rate else None
            for index, frame in enumerate(container.decode(stream)):
                decoded = index + 1
                if index in wanted:
                    rgb = frame.to_ndarray(format="rgb24")
                    source_size = rgb.shape[:2]
                    frames.append(_resize(rgb.astype(np.float32) / 255.0, long_side))
                    if geometry_size is not None:
                        size = geometry_size(*source_size)
                        geometry_frames.append(resize_source_frame(rgb, size))
                    indices.append(index)
                if index >= max(wanted, default=-1):
                    break
    except PipelineInputError:
        raise
    except Exception as exc:  # av.error.* (invalid data, truncated), OSError...
        if len(frames) < 2:
            raise PipelineInputError(f"cannot decode video {path}: {exc}") from None
        # A truncated tail: keep what decoded; the resampling pass picks frames that exist.
    return frames, geometry_frames, indices, source_size, fps, decoded


def _count_frames(path: Path) -> int:
    """Frames in the first video stream, counted by demuxing (no decoding: cheap)."""
    import av

    try:
        container = av.open(str(path))
    except Exception as exc:  # not a media file at all
        raise PipelineInputError(f"cannot open video {path}: {exc}") from None
    count = 0
    with container:
        if not container.streams.video:
            raise PipelineInputError(f"{path} has no video stream")
        try:
            for packet in container.demux(container.streams.video[0]):
                if packet.size:
                    count += 1
                    if count > MAX_DECODED_FRAMES:
                        raise PipelineInputError(f"{path} has over {MAX_DECODED_FRAMES} frames")
        except PipelineInputError:
            raise
        except Exception:
            pass  # a truncated file: count what could be demuxed
    return count

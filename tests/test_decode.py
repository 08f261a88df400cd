"""Step 1: every accepted input format, sampling, resizing, and clear errors for bad input."""

import numpy as np
import pytest
import torch

from service.pipeline.decode import load_video, sample_indices, working_size
from service.pipeline.types import PipelineInputError


def clip_array(frames=10, height=36, width=64) -> np.ndarray:
    g = np.random.default_rng(0)
    return g.integers(0, 256, size=(frames, height, width, 3), dtype=np.uint8)


def write_mp4(path, frames: np.ndarray, fps: int = 10) -> None:
    import av

    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height = frames.shape[2], frames.shape[1]
        stream.pix_fmt = "yuv420p"
        for frame in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def test_sampling_spreads_over_the_whole_clip():
    assert sample_indices(100, max_frames=5) == [0, 25, 50, 74, 99]
    assert sample_indices(5, max_frames=16) == [0, 1, 2, 3, 4]
    assert sample_indices(10, max_frames=16, frame_stride=3) == [0, 3, 6, 9]


def test_working_size_keeps_the_aspect_ratio():
    assert working_size(480, 832, 448) == (258, 448)
    assert working_size(1920, 1080, 448) == (448, 252)


def test_array_inputs_uint8_float_and_channel_first_agree():
    array = clip_array()
    as_uint8 = load_video(array, max_frames=4, long_side=32)
    as_float = load_video(array.astype(np.float32) / 255, max_frames=4, long_side=32)
    channel_first = load_video(torch.from_numpy(array).permute(0, 3, 1, 2), max_frames=4, long_side=32)
    assert as_uint8.frames.shape == (4, 18, 32, 3)
    torch.testing.assert_close(as_uint8.frames, as_float.frames, atol=1e-6, rtol=0)
    torch.testing.assert_close(as_uint8.frames, channel_first.frames)
    assert as_uint8.source_indices == [0, 3, 6, 9] and as_uint8.source_num_frames == 10


def test_npy_safetensors_folder_and_mp4(tmp_path):
    import cv2
    from safetensors.numpy import save_file

    array = clip_array()
    np.save(tmp_path / "clip.npy", array)
    save_file({"video": array}, str(tmp_path / "clip.safetensors"))
    folder = tmp_path / "frames"
    folder.mkdir()
    for i, frame in enumerate(array):
        cv2.imwrite(str(folder / f"{i:04d}.png"), cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    reference = load_video(array, max_frames=16, long_side=64).frames
    for source in ("clip.npy", "clip.safetensors", "frames"):
        loaded = load_video(tmp_path / source, max_frames=16, long_side=64)
        torch.testing.assert_close(loaded.frames, reference, msg=source)
    smooth = np.stack([np.full((64, 96, 3), 20 * i, dtype=np.uint8) for i in range(8)])
    write_mp4(tmp_path / "clip.mp4", smooth)
    video = load_video(tmp_path / "clip.mp4", max_frames=4, long_side=48)
    assert video.frames.shape == (4, 32, 48, 3) and video.source_num_frames == 8
    assert video.fps == pytest.approx(10)
    # Lossy, but the mean brightness of each frame survives.
    means = video.frames.mean(dim=(1, 2, 3)) * 255
    assert torch.allclose(means, torch.tensor([0.0, 40, 100, 140]), atol=4)


@pytest.mark.parametrize(
    "name, content, message",
    [
        ("missing.mp4", None, "no such file"),
        ("junk.mp4", b"not a video at all", "cannot open video"),
        ("bad.npy", b"\x93NUMPY garbage", "cannot read"),
        ("bad.safetensors", b"\x00\x01", "cannot read"),
        ("empty_folder", "folder", "need at least 2"),
        ("still.png", b"png", "single image"),
    ],
)
def test_bad_files_raise_a_clear_error(tmp_path, name, content, message):
    path = tmp_path / name
    if content == "folder":
        path.mkdir()
    elif content is not None:
        path.write_bytes(content)
    with pytest.raises(PipelineInputError, match=message):
        load_video(path, max_frames=8, long_side=64)


def test_truncated_mp4_keeps_what_decodes(tmp_path):
    array = np.stack([np.full((64, 96, 3), 10 * i, dtype=np.uint8) for i in range(20)])
    write_mp4(tmp_path / "full.mp4", array)
    data = (tmp_path / "full.mp4").read_bytes()
    (tmp_path / "cut.mp4").write_bytes(data[: len(data) // 3])
    try:
        video = load_video(tmp_path / "cut.mp4", max_frames=8, long_side=48)
    except PipelineInputError as exc:  # a clear error is also acceptable
        assert "video" in str(exc)
    else:
        assert 2 <= video.num_frames <= 8


@pytest.mark.parametrize(
    "array, message",
    [
        (np.zeros((0, 16, 16, 3), np.uint8), "at least 2 frames"),
        (np.zeros((1, 16, 16, 3), np.uint8), "at least 2 frames"),
        (np.zeros((4, 16, 16), np.int32), "dtype"),
        (np.zeros((4, 16, 16, 5), np.uint8), "channels"),
        (np.zeros((16, 16), np.uint8), "shape"),
        (np.full((3, 16, 16, 3), np.nan, np.float32), "NaN"),
        (np.full((3, 16, 16, 3), 7.0, np.float32), r"\[0,1\]"),
        (np.zeros((3, 4, 4, 3), np.uint8), "outside"),
    ],
)
def test_bad_arrays_raise_a_clear_error(array, message):
    with pytest.raises(PipelineInputError, match=message):
        load_video(array, max_frames=8, long_side=64)


def test_geometry_frames_are_the_source_resized_once(tmp_path):
    """A geometry model that names its input size gets each sampled SOURCE frame resized once
    to it (uint8), from every input kind; without one, no extra frames are kept."""
    array = clip_array(frames=6, height=72, width=120)
    requested = []

    def geometry_size(height, width):
        requested.append((height, width))
        return (42, 70)  # shrinks both sides: area averaging

    video = load_video(array, max_frames=3, long_side=40, geometry_size=geometry_size)
    assert requested and set(requested) == {(72, 120)}  # asked with the SOURCE size
    assert video.frames.shape == (3, 24, 40, 3)
    geometry = video.geometry_frames
    assert geometry.dtype == torch.uint8 and geometry.shape == (3, 42, 70, 3)
    # Area averaging of the source keeps its mean; the sampled frames are the same ones.
    for frame, index in zip(geometry, video.source_indices):
        assert abs(float(frame.float().mean()) - float(array[index].mean())) < 1.0
    assert load_video(array, max_frames=3, long_side=40).geometry_frames is None
    # Enlarging (bicubic) on a float clip: converted to uint8 first, saturated, not wrapped.
    grown = load_video(array.astype(np.float32) / 255, max_frames=2, long_side=40,
                       geometry_size=lambda h, w: (84, 140)).geometry_frames  # fmt: skip
    assert grown.shape == (2, 84, 140, 3) and grown.dtype == torch.uint8
    # A video file: same frames (the codec is lossy, so compare brightness).
    smooth = np.stack([np.full((64, 96, 3), 20 * i, dtype=np.uint8) for i in range(8)])
    write_mp4(tmp_path / "clip.mp4", smooth)
    video = load_video(tmp_path / "clip.mp4", max_frames=4, long_side=48, geometry_size=lambda h, w: (56, 84))
    assert video.geometry_frames.shape == (4, 56, 84, 3)
    means = video.geometry_frames.float().mean(dim=(1, 2, 3))
    assert torch.allclose(means, torch.tensor([0.0, 40, 100, 140]), atol=4)

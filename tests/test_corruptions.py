"""The corruption protocol (service/validation/corruptions.py): deterministic, graded, shaped."""

import numpy as np
import pytest

from service.validation.corruptions import FAMILIES, SEVERITIES, corrupt


@pytest.fixture(scope="module")
def frames() -> np.ndarray:
    rng = np.random.default_rng(3)
    base = rng.integers(0, 256, size=(16, 40, 64, 3), dtype=np.uint8)
    # Smooth-ish content with a per-frame shift, so frames differ like a moving camera's.
    return np.stack([np.roll(base[0], 2 * t, axis=1) for t in range(16)])


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_each_family_is_deterministic_and_changes_the_clip(frames, family):
    for severity in SEVERITIES:
        first = corrupt(frames, family, severity, seed=0)
        assert first.dtype == np.uint8 and first.shape[1:] == frames.shape[1:]
        assert np.array_equal(first, corrupt(frames, family, severity, seed=0))
        if first.shape == frames.shape:
            assert not np.array_equal(first, frames), (family, severity)
    assert np.array_equal(corrupt(frames, family, 0), frames)  # severity 0 = clean


def test_severity_grows(frames):
    def changed_frames(family, severity):
        out = corrupt(frames, family, severity)
        return int(sum(not np.array_equal(a, b) for a, b in zip(out, frames)))

    for family in ("shuffle", "reverse", "frozen", "scene_cut"):
        counts = [changed_frames(family, s) for s in SEVERITIES]
        assert counts == sorted(counts) and counts[0] < counts[-1], (family, counts)
    lengths = [len(corrupt(frames, "drop", s)) for s in SEVERITIES]
    assert lengths == [14, 12, 10]
    for family in ("elastic", "homography", "flicker"):
        errors = [np.abs(corrupt(frames, family, s).astype(int) - frames).mean() for s in SEVERITIES]
        assert errors == sorted(errors), (family, errors)


def test_shuffle_moves_every_chosen_frame_and_keeps_the_set(frames):
    out = corrupt(frames, "shuffle", 3)
    order = [next(i for i in range(16) if np.array_equal(f, frames[i])) for f in out]
    assert sorted(order) == list(range(16))
    assert all(o != i for i, o in enumerate(order))  # severity 3: every frame leaves its place


def test_bad_arguments_are_refused(frames):
    with pytest.raises(ValueError, match="unknown corruption"):
        corrupt(frames, "blur", 1)
    with pytest.raises(ValueError, match="severity"):
        corrupt(frames, "flicker", 4)
    with pytest.raises(ValueError, match="uint8"):
        corrupt(frames.astype(np.float32), "flicker", 1)


def test_severities_share_one_random_layout(frames):
    """Common random numbers: severity extends or scales the same damage."""
    moved = []
    for severity in SEVERITIES:
        out = corrupt(frames, "shuffle", severity)
        moved.append({i for i in range(16) if not np.array_equal(out[i], frames[i])})
    assert moved[0] <= moved[1] <= moved[2]
    patches = [np.any(corrupt(frames, "popping", s) != frames, axis=(0, 3)) for s in SEVERITIES]
    assert np.all(patches[1][patches[0]]) and np.all(patches[2][patches[1]])  # same centre, grows

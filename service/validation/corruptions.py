"""Corruptions that break a clip's 3D consistency in known ways, at three severities.

    corrupt(frames, family, severity, seed=0) -> frames'      # frames [T,H,W,3] uint8

Used by ``bench/validate.py`` (does the reward rank clean above broken?) and by the evaluation
to build corrupted folders. Pure functions of (frames, family, severity, seed): the same call
always returns the same array. Severity 0 is the clean clip.

| family       | what it does                                              | severity 1 / 2 / 3          |
|--------------|-----------------------------------------------------------|-----------------------------|
| shuffle      | frames at random positions trade places (each one moves)  | 25 / 50 / 100 % of frames   |
| reverse      | a centred segment plays backwards                         | 1/3 / 2/3 / all of the clip |
| drop         | a centred block of frames is cut out (the clip jumps)     | 1/8 / 1/4 / 3/8 of frames   |
| elastic      | smooth random non-rigid warp, independent per frame       | 2 / 4 / 8 px (max)          |
| homography   | random per-frame homography (corners jittered)            | 2 / 4 / 6 % of the size     |
| flicker      | per-frame brightness gain 1 +- a (random sign, |.| >= a/2)| a = 10 / 20 / 35 %          |
| popping      | a patch from elsewhere pops in and out at a fixed place   | 10 / 20 / 30 % of the area  |
| scene_cut    | the clip's end is replaced by another scene               | 1/8 / 1/4 / 3/8 of frames   |
| frozen       | a centred block repeats its first frame                   | 1/8 / 1/4 / 1/2 of frames   |

Counts are rounded and at least one frame is affected. ``scene_cut`` splices in
``service.synthetic``'s ray-cast room (deterministic, and a different scene from any footage).

Common random numbers: a family draws the same random layout at every severity (the same warp
fields, jitter directions, gain signs, patch place, shuffle order), and severity only scales it
or extends it (a superset of shuffled frames, a larger patch around the same centre). So a
higher severity is the same damage, more of it, never a luckier or unluckier draw.
"""

from __future__ import annotations

from collections.abc import Callable

import cv2
import numpy as np

SEVERITIES = (1, 2, 3)

SHUFFLE_FRACTION = (0.25, 0.5, 1.0)
REVERSE_FRACTION = (1 / 3, 2 / 3, 1.0)
DROP_FRACTION = (1 / 8, 1 / 4, 3 / 8)
ELASTIC_PX = (2.0, 4.0, 8.0)
HOMOGRAPHY_FRACTION = (0.02, 0.04, 0.06)
FLICKER_AMPLITUDE = (0.10, 0.20, 0.35)
POPPING_AREA = (0.10, 0.20, 0.30)
SCENE_CUT_FRACTION = (1 / 8, 1 / 4, 3 / 8)
FROZEN_FRACTION = (1 / 8, 1 / 4, 1 / 2)


def corrupt(frames: np.ndarray, family: str, severity: int, *, seed: int = 0) -> np.ndarray:
    """``frames`` [T,H,W,3] uint8 -> corrupted frames [T',H,W,3] uint8 (T' < T only for drop)."""
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ValueError(f"frames must be uint8 [T,H,W,3], got {frames.dtype} {frames.shape}")
    if family not in FAMILIES:
        raise ValueError(f"unknown corruption {family!r}; known: {', '.join(FAMILIES)}")
    if severity == 0:
        return frames.copy()
    if severity not in SEVERITIES:
        raise ValueError(f"severity must be 0 (clean) or one of {SEVERITIES}, got {severity}")
    # One generator per (family, seed), the same for every severity (common random numbers).
    rng = np.random.default_rng([seed, sorted(FAMILIES).index(family)])
    return FAMILIES[family](frames, severity - 1, rng)


def _count(fraction: float, total: int, minimum: int = 1) -> int:
    return max(minimum, min(total, int(round(fraction * total))))


def _centred_block(length: int, total: int) -> slice:
    start = (total - length) // 2
    return slice(start, start + length)


def shuffle(frames: np.ndarray, level: int, rng: np.random.Generator) -> np.ndarray:
    total = len(frames)
    # The first k positions of one random permutation (nested across severities), cycled:
    # every chosen frame leaves its place.
    cycle = rng.permutation(total)[: _count(SHUFFLE_FRACTION[level], total, 2)]
    order = np.arange(total)
    order[cycle] = np.roll(cycle, 1)
    return frames[order]


def reverse(frames: np.ndarray, level: int, rng: np.random.Generator) -> np.ndarray:
    total = len(frames)
    block = _centred_block(_count(REVERSE_FRACTION[level], total, 2), total)
    out = frames.copy()
    out[block] = frames[block][::-1]
    return out


def drop(frames: np.ndarray, level: int, rng: np.random.Generator) -> np.ndarray:
    total = len(frames)
    block = _centred_block(_count(DROP_FRACTION[level], total), total)
    keep = np.ones(total, dtype=bool)
    keep[block] = False
    return frames[keep]


def elastic(frames: np.ndarray, level: int, rng: np.random.Generator) -> np.ndarray:
    """Each frame resampled through a smooth random displacement field whose largest
    displacement is ELASTIC_PX (cubic upsampling of noise on a grid of 1/8 the size)."""
    amplitude = ELASTIC_PX[level]
    height, width = frames.shape[1:3]
    grid_u, grid_v = np.meshgrid(np.arange(width, dtype=np.float32),
                                 np.arange(height, dtype=np.float32))  # fmt: skip
    out = []
    for frame in frames:
        coarse = rng.normal(size=(2, height // 8 + 2, width // 8 + 2)).astype(np.float32)
        field = np.stack([cv2.resize(c, (width, height), interpolation=cv2.INTER_CUBIC) for c in coarse])
        field *= amplitude / max(float(np.abs(field).max()), 1e-6)
        out.append(cv2.remap(frame, grid_u + field[0], grid_v + field[1], cv2.INTER_LINEAR,
                             borderMode=cv2.BORDER_REFLECT))  # fmt: skip
    return np.stack(out)


def homography(frames: np.ndarray, level: int, rng: np.random.Generator) -> np.ndarray:
    """Each frame warped by the homography that moves its four corners by up to
    HOMOGRAPHY_FRACTION of the frame size (uniform, independent per corner and frame)."""
    height, width = frames.shape[1:3]
    corners = np.array([[0, 0], [width, 0], [width, height], [0, height]], dtype=np.float32)
    jitter = HOMOGRAPHY_FRACTION[level] * np.array([width, height], dtype=np.float32)
    out = []
    for frame in frames:
        moved = corners + rng.uniform(-1, 1, size=(4, 2)).astype(np.float32) * jitter
        matrix = cv2.getPerspectiveTransform(corners, moved)
        out.append(cv2.warpPerspective(frame, matrix, (width, height), flags=cv2.INTER_LINEAR,
                                       borderMode=cv2.BORDER_REFLECT))  # fmt: skip
    return np.stack(out)


def flicker(frames: np.ndarray, level: int, rng: np.random.Generator) -> np.ndarray:
    amplitude = FLICKER_AMPLITUDE[level]
    total = len(frames)
    gains = 1.0 + amplitude * rng.choice([-1.0, 1.0], size=total) * rng.uniform(0.5, 1.0, size=total)
    out = frames.astype(np.float32) * gains[:, None, None, None].astype(np.float32)
    return np.clip(np.round(out), 0, 255).astype(np.uint8)


def popping(frames: np.ndarray, level: int, rng: np.random.Generator) -> np.ndarray:
    """A square patch (POPPING_AREA of the frame) cut from another place of another frame,
    pasted at one fixed place in a random half of the frames (at least one with, one without)."""
    total, height, width = frames.shape[:3]
    side = int(round(np.sqrt(POPPING_AREA[level] * height * width)))
    side = min(side, height, width)
    # Centres drawn in [0,1]^2 (the same at every severity); the square grows around them.
    centre, source_centre = rng.random(2), rng.random(2)
    source_frame = rng.integers(0, total)
    top, left = _place(centre, side, height, width)
    source_top, source_left = _place(source_centre, side, height, width)
    # A flipped patch, so it never lines up with the scene it came from.
    patch = frames[source_frame, source_top : source_top + side, source_left : source_left + side]
    patch = patch[::-1, ::-1]
    shown = rng.random(total) < 0.5
    shown[rng.integers(0, total)] = True
    if shown.all():
        shown[rng.integers(0, total)] = False
    out = frames.copy()
    out[shown, top : top + side, left : left + side] = patch
    return out


def _place(centre: np.ndarray, side: int, height: int, width: int) -> tuple[int, int]:
    """Top-left corner of a ``side`` square centred at ``centre`` (fractions), inside the frame."""
    top = int(round(centre[0] * height - side / 2))
    left = int(round(centre[1] * width - side / 2))
    return min(max(top, 0), height - side), min(max(left, 0), width - side)


def scene_cut(frames: np.ndarray, level: int, rng: np.random.Generator) -> np.ndarray:
    total, height, width = frames.shape[:3]
    spliced = _count(SCENE_CUT_FRACTION[level], total)
    other = _other_scene(spliced, height, width)
    out = frames.copy()
    out[total - spliced :] = other
    return out


def frozen(frames: np.ndarray, level: int, rng: np.random.Generator) -> np.ndarray:
    total = len(frames)
    block = _centred_block(_count(FROZEN_FRACTION[level], total) + 1, total)
    out = frames.copy()
    out[block] = frames[block.start]
    return out


def _other_scene(num_frames: int, height: int, width: int) -> np.ndarray:
    from service.synthetic import make_clip

    # A short orbit in the synthetic room, with the footage's size.
    return make_clip("orbit", max(num_frames, 2), height, width, detail=0.5).frames[:num_frames]


FAMILIES: dict[str, Callable[[np.ndarray, int, np.random.Generator], np.ndarray]] = {
    "shuffle": shuffle,
    "reverse": reverse,
    "drop": drop,
    "elastic": elastic,
    "homography": homography,
    "flicker": flicker,
    "popping": popping,
    "scene_cut": scene_cut,
    "frozen": frozen,
}

"""Degenerate videos a policy could drift to, made from any clip (fixed seeds).

    hack(frames, name, seed=0) -> frames   # [T,H,W,3] uint8 -> [T,H,W,3] uint8, same shape

Each is something a video model can produce cheaply and a naive 3D reward might pay for:
a flat picture sliding, zooming or turning (a homography explains every view); a frozen frame
with sensor noise; slow motion by repeating frames; a ping-pong loop; blur, down-up sampling,
low contrast, posterisation and noise (low-detail or damaged frames); a flat grey field; and a
still camera watching one pasted object move. bench/hacking.py scores them against the clean
clip. Only ``pingpong`` may legitimately tie the clean clip (it is the clean footage played
forward then back: 3D-consistent); it is reported, not required to lose.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

HACKS = ["slide", "zoom", "rotate", "frozen_noise", "repeat", "pingpong", "blur2", "blur5",
         "downup8", "contrast", "posterise", "noise8", "grey", "moving_object"]  # fmt: skip
MAY_TIE = {"pingpong"}


def hack(frames: np.ndarray, name: str, *, seed: int = 0) -> np.ndarray:
    if name not in HACKS:
        raise ValueError(f"unknown hack {name!r}; known: {HACKS}")
    rng = np.random.default_rng(seed)
    num, height, width, _ = frames.shape
    still = frames[num // 2]
    if name in ("slide", "zoom", "rotate"):
        out = []
        for t in range(num):
            s = t / max(1, num - 1)
            if name == "slide":  # a crop window moving sideways over 20 % of the width
                matrix = np.array([[1.25, 0, -0.2 * width * s], [0, 1.25, -0.1 * height]])
            elif name == "zoom":
                scale = 1.0 + 0.3 * s
                matrix = cv2.getRotationMatrix2D((width / 2, height / 2), 0.0, scale)
            else:
                matrix = cv2.getRotationMatrix2D((width / 2, height / 2), 10.0 * s, 1.15)
            out.append(cv2.warpAffine(still, matrix, (width, height), flags=cv2.INTER_LINEAR,
                                      borderMode=cv2.BORDER_REFLECT))  # fmt: skip
        return np.stack(out)
    if name == "frozen_noise":
        noise = rng.normal(0, 3.0, size=frames.shape)
        return np.clip(still[None].astype(np.float64) + noise, 0, 255).round().astype(np.uint8)
    if name == "repeat":  # slow motion: each of the first half's frames shown twice
        return frames[np.arange(num) // 2]
    if name == "pingpong":
        half = (num + 1) // 2
        forward = frames[np.linspace(0, num - 1, half).round().astype(int)]
        return np.concatenate([forward, forward[::-1][1 : num - half + 1]])[:num]
    if name in ("blur2", "blur5"):
        sigma = 2.0 if name == "blur2" else 5.0
        return np.stack([cv2.GaussianBlur(f, (0, 0), sigma) for f in frames])
    if name == "downup8":
        small = (max(1, width // 8), max(1, height // 8))
        return np.stack([cv2.resize(cv2.resize(f, small, interpolation=cv2.INTER_AREA),
                                    (width, height), interpolation=cv2.INTER_LINEAR)
                         for f in frames])  # fmt: skip
    if name == "contrast":
        mean = frames.reshape(num, -1).mean(1)[:, None, None, None]
        return np.clip(mean + 0.25 * (frames - mean), 0, 255).round().astype(np.uint8)
    if name == "posterise":
        return ((frames // 64) * 64 + 32).astype(np.uint8)
    if name == "noise8":
        return np.clip(frames + rng.normal(0, 8.0, size=frames.shape), 0, 255).round().astype(np.uint8)
    if name == "grey":
        return np.full_like(frames, 128)
    # moving_object: a still frame with a textured patch (cut from another time) crossing it
    out = []
    side = max(8, min(height, width) // 4)
    patch = frames[0][:side, :side].copy()
    for t in range(num):
        frame = still.copy()
        x = int(round((width - side) * t / max(1, num - 1)))
        y = int(round((height - side) / 2 + 0.2 * height * math.sin(2 * math.pi * t / num)))
        y = min(max(0, y), height - side)
        frame[y : y + side, x : x + side] = patch
        out.append(frame)
    return np.stack(out)

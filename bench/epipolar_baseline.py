"""The cheap geometric reward a user might write instead of reward3d (issue 14's baseline).

    python bench/epipolar_baseline.py clip.npy      # [T,H,W,3] uint8 -> one JSON line

SIFT features per frame (OpenCV, grayscale), ratio-test matches between consecutive frames, a
fundamental matrix per pair by MAGSAC (cv2.USAC_MAGSAC, 1 px threshold), and the mean Sampson
error (pixels) of all ratio-test matches under it: low error = epipolar-consistent motion.
Reward = exp(-mean Sampson error / 1 px). One thread, run as a whole process by bench/speed.py.
"""

from __future__ import annotations

import json
import sys
import time

import cv2
import numpy as np


def sampson_error(fundamental: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """First-order geometric error (pixels) of correspondences a [N,2] <-> b [N,2] under F [3,3]
    (b^T F a = 0, pixel coordinates)."""
    ones = np.ones((len(a), 1))
    x1, x2 = np.hstack([a, ones]), np.hstack([b, ones])
    fx1, ftx2 = x1 @ fundamental.T, x2 @ fundamental
    numerator = np.sum(x2 * fx1, axis=1) ** 2
    denominator = fx1[:, 0] ** 2 + fx1[:, 1] ** 2 + ftx2[:, 0] ** 2 + ftx2[:, 1] ** 2
    return np.sqrt(numerator / np.maximum(denominator, 1e-12))


def main() -> None:
    started = time.perf_counter()
    cv2.setNumThreads(1)
    frames = np.load(sys.argv[1], mmap_mode="r")
    sift = cv2.SIFT_create(nfeatures=2000)
    features = [sift.detectAndCompute(cv2.cvtColor(np.ascontiguousarray(f), cv2.COLOR_RGB2GRAY), None)
                for f in frames]  # fmt: skip
    matcher = cv2.BFMatcher(cv2.NORM_L2)
    errors = []
    for (kp_a, desc_a), (kp_b, desc_b) in zip(features[:-1], features[1:]):
        if desc_a is None or desc_b is None or len(kp_a) < 8 or len(kp_b) < 8:
            continue
        pairs = [m for m, n in (p for p in matcher.knnMatch(desc_a, desc_b, k=2) if len(p) == 2)
                 if m.distance < 0.8 * n.distance]  # fmt: skip
        if len(pairs) < 8:
            continue
        a = np.float64([kp_a[m.queryIdx].pt for m in pairs])
        b = np.float64([kp_b[m.trainIdx].pt for m in pairs])
        try:
            fundamental, _ = cv2.findFundamentalMat(a, b, cv2.USAC_MAGSAC, 1.0, 0.999, 10_000)
        except cv2.error:  # degenerate pair (e.g. no motion): MAGSAC finds no model
            continue
        if fundamental is None or fundamental.shape != (3, 3):
            continue
        errors.append(float(np.mean(sampson_error(fundamental, a, b))))
    mean_error = float(np.mean(errors)) if errors else float("inf")
    print(json.dumps({"reward": float(np.exp(-mean_error)), "sampson_px": mean_error,
                      "pairs": len(errors), "seconds": time.perf_counter() - started}))  # fmt: skip


if __name__ == "__main__":
    main()

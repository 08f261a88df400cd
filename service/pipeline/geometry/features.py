"""Sparse correspondences for the classical backend: SIFT keypoints, matching, pair selection.

Pure functions on numpy arrays (OpenCV does the heavy lifting, single-threaded and with no
randomness, so the same frames always give the same matches).

Keypoints are in our pixel convention (docs/conventions.md): pixel (row i, column j) has its
centre at ``(u, v) = (j + 0.5, i + 0.5)``; OpenCV puts that centre at ``(j, i)``, so 0.5 is added
here, once. COLMAP uses the same convention as we do.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

# OpenCV's default contrast threshold (0.04) finds only ~200 keypoints on smooth 448-pixel
# aerial or generated frames; half of it finds ~2-4x more without much noise.
SIFT_CONTRAST_THRESHOLD = 0.02
RETRIEVAL_FEATURES = 256  # strongest keypoints used to rank candidate pairs cheaply


@dataclass(frozen=True)
class Features:
    keypoints_uv: np.ndarray  # [N,2] float64 pixel coordinates (centres at +0.5)
    descriptors: np.ndarray  # [N,128] float32 RootSIFT, unit L2 norm, strongest first

    @property
    def count(self) -> int:
        return self.keypoints_uv.shape[0]


def detect_features(gray: np.ndarray, *, max_features: int) -> Features:  # gray [H,W] uint8
    """SIFT keypoints with RootSIFT descriptors (Hellinger kernel: better matching than L2)."""
    sift = cv2.SIFT_create(nfeatures=max_features, contrastThreshold=SIFT_CONTRAST_THRESHOLD)
    keypoints, descriptors = sift.detectAndCompute(gray, None)
    return _as_features(keypoints, descriptors)


def _as_features(keypoints, descriptors) -> Features:
    if descriptors is None or len(keypoints) == 0:
        return Features(np.zeros((0, 2)), np.zeros((0, 128), np.float32))
    response = np.array([k.response for k in keypoints])
    uv = np.array([k.pt for k in keypoints], dtype=np.float64) + 0.5
    # Strongest first (stable sort: ties keep OpenCV's order), so retrieval can take a prefix.
    order = np.argsort(-response, kind="stable")
    descriptors = descriptors[order].astype(np.float32)
    descriptors /= descriptors.sum(axis=1, keepdims=True) + 1e-12
    descriptors = np.sqrt(descriptors)  # unit L2 norm after the L1 normalisation
    return Features(np.ascontiguousarray(uv[order]), np.ascontiguousarray(descriptors))


def match_descriptors(
    descriptors_a: np.ndarray,  # [Na,128] unit norm
    descriptors_b: np.ndarray,  # [Nb,128] unit norm
    *,
    ratio: float,
    chunk: int = 2048,
) -> np.ndarray:
    """Mutual nearest neighbours that pass Lowe's ratio test -> index pairs [M,2] int64.

    Descriptors have unit norm, so squared distances are ``2 - 2 * similarity`` and matrix
    products give every distance (rows in chunks, to bound memory on large keypoint sets).
    """
    if len(descriptors_a) < 2 or len(descriptors_b) < 2:
        return np.zeros((0, 2), dtype=np.int64)
    count_a = len(descriptors_a)
    best = np.empty(count_a, dtype=np.int64)
    best_similarity = np.empty(count_a, dtype=np.float32)
    second_similarity = np.empty(count_a, dtype=np.float32)
    column_best = np.full(len(descriptors_b), -np.inf, dtype=np.float32)
    column_argbest = np.zeros(len(descriptors_b), dtype=np.int64)
    for start in range(0, count_a, chunk):
        similarity = descriptors_a[start : start + chunk] @ descriptors_b.T  # [n,Nb]
        rows = np.arange(similarity.shape[0])
        top = similarity.argmax(axis=1)
        best[start : start + chunk] = top
        best_similarity[start : start + chunk] = similarity[rows, top]
        # Column-wise best row (the first on ties, like argmax over the full matrix).
        chunk_best = similarity.max(axis=0)
        better = chunk_best > column_best
        column_argbest[better] = similarity.argmax(axis=0)[better] + start
        column_best[better] = chunk_best[better]
        similarity[rows, top] = -np.inf
        second_similarity[start : start + chunk] = similarity.max(axis=1)
    rows = np.arange(count_a)
    mutual = column_argbest[best] == rows
    best_distance = np.sqrt(np.maximum(2.0 - 2.0 * best_similarity, 0.0))
    second_distance = np.sqrt(np.maximum(2.0 - 2.0 * second_similarity, 0.0))
    keep = mutual & (best_distance < ratio * second_distance)
    return np.stack([rows[keep], best[keep]], axis=1).astype(np.int64)


def candidate_pairs(
    features: list[Features],
    *,
    exhaustive_up_to: int,
    temporal_window: int,
    retrieval_partners: int,
    ratio: float,
) -> list[tuple[int, int]]:
    """Frame pairs worth matching fully, as (i, j) with i < j, sorted.

    Short clips: every pair. Longer ones: each frame's ``temporal_window`` next frames plus its
    ``retrieval_partners`` most similar frames, ranked by mutual matches among the strongest
    keypoints, plus ``spanning_pairs`` (wide baselines at growing offsets, first to last
    included). Retrieval keeps shuffled, reversed or looping clips matchable without paying
    for every pair; the spanning pairs let a slow camera show how far it moves over the clip.
    """
    num = len(features)
    if num <= exhaustive_up_to:
        return [(i, j) for i in range(num) for j in range(i + 1, num)]
    pairs = {(i, j) for i in range(num) for j in range(i + 1, min(num, i + 1 + temporal_window))}
    strongest = [f.descriptors[:RETRIEVAL_FEATURES] for f in features]
    votes = np.zeros((num, num))
    for i in range(num):
        for j in range(i + 1, num):
            votes[i, j] = votes[j, i] = len(match_descriptors(strongest[i], strongest[j], ratio=ratio))
    for i in range(num):
        ranked = sorted((j for j in range(num) if j != i), key=lambda j: (-votes[i, j], j))
        for j in ranked[:retrieval_partners]:
            if votes[i, j] > 0:
                pairs.add((min(i, j), max(i, j)))
    return sorted(pairs | set(spanning_pairs(num)))


def spanning_pairs(num: int) -> list[tuple[int, int]]:
    """Pairs (i, i + d) at offsets d = 4, 8, 16, ... (each offset's anchors d/2 apart) and the
    first-to-last pair: O(T log T) pairs whose baselines span the whole clip, so that motion is
    judged from the largest baselines a clip has, not from adjacent frames alone."""
    pairs = {(0, num - 1)} if num > 1 else set()
    offset = 4
    while offset < num:
        pairs |= {(i, i + offset) for i in range(0, num - offset, max(1, offset // 2))}
        offset *= 2
    return sorted(pairs)

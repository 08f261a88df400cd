"""OpenCV's chessboard views as a posed multi-view capture (ground truth for pose accuracy).

In OpenCV's ``left*.jpg`` samples the camera stands still and a person moves a 9x6 board in
front of it. Relative to the *board* the camera moves, and ``cv2.solvePnP`` with the given
calibration recovers that motion exactly: that is the ground truth. To make the images a rigid
scene for a structure-from-motion backend they are undistorted with the same calibration and
everything outside the board (the static room, the person) is greyed out.

    board_views(images, camera_matrix, distortion) -> BoardViews(frames, world_to_camera)
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

BOARD_CORNERS = (9, 6)  # inner corners per row, per column
SQUARE_M = 0.025
HULL_GROWTH = 1.1  # keep the board's margin around the outer inner corners
GREY = 128


@dataclass(frozen=True)
class BoardViews:
    frames: np.ndarray  # [T,H,W,3] uint8: undistorted, board only
    world_to_camera: np.ndarray  # [T,4,4] float64: board frame -> camera (OpenCV axes, metres)
    camera_matrix: np.ndarray  # [3,3] pixels (the undistorted frames' pinhole camera)
    names: list[str]


def read_calibration(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """(camera_matrix [3,3], distortion [5]) from OpenCV's ``left_intrinsics.yml``."""
    storage = cv2.FileStorage(str(path), cv2.FILE_STORAGE_READ)
    if not storage.isOpened():
        raise FileNotFoundError(f"cannot read calibration {path}")
    camera_matrix = storage.getNode("camera_matrix").mat()
    distortion = storage.getNode("distortion_coefficients").mat().reshape(-1)
    return camera_matrix.astype(np.float64), distortion.astype(np.float64)


def board_views(
    image_paths: list[str | Path], camera_matrix: np.ndarray, distortion: np.ndarray
) -> BoardViews:
    """Views where the board is found: masked undistorted frames and solvePnP poses."""
    board = np.zeros((BOARD_CORNERS[0] * BOARD_CORNERS[1], 3), np.float32)
    board[:, :2] = np.mgrid[0 : BOARD_CORNERS[0], 0 : BOARD_CORNERS[1]].T.reshape(-1, 2) * SQUARE_M
    criteria = (cv2.TERM_CRITERIA_EPS + cv2.TERM_CRITERIA_MAX_ITER, 30, 1e-3)
    frames, poses, names = [], [], []
    for path in image_paths:
        gray = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
        if gray is None:
            raise FileNotFoundError(f"cannot read {path}")
        found, corners = cv2.findChessboardCorners(gray, BOARD_CORNERS)
        if not found:
            continue
        corners = cv2.cornerSubPix(gray, corners, (11, 11), (-1, -1), criteria)
        _, rotation_vector, translation = cv2.solvePnP(board, corners, camera_matrix, distortion)
        world_to_camera = np.eye(4)
        world_to_camera[:3, :3] = cv2.Rodrigues(rotation_vector)[0]
        world_to_camera[:3, 3] = translation[:, 0]

        undistorted = cv2.undistort(gray, camera_matrix, distortion)
        corners_undistorted = cv2.undistortPoints(corners, camera_matrix, distortion,
                                                  P=camera_matrix)[:, 0]  # fmt: skip
        hull = cv2.convexHull(corners_undistorted.astype(np.float32))[:, 0]
        centre = hull.mean(axis=0)
        mask = np.zeros_like(gray)
        cv2.fillConvexPoly(mask, np.round(centre + HULL_GROWTH * (hull - centre)).astype(np.int32), 255)
        board_only = np.where(mask > 0, undistorted, GREY).astype(np.uint8)
        frames.append(np.repeat(board_only[..., None], 3, axis=-1))
        poses.append(world_to_camera)
        names.append(Path(path).name)
    if not frames:
        raise ValueError("no chessboard found in any view")
    return BoardViews(np.stack(frames), np.stack(poses), camera_matrix.copy(), names)

"""Pose accuracy of the classical geometry backend against ground truth.

    python bench/pose_accuracy.py                       # fox + chessboard from ../shared/data
    python bench/pose_accuracy.py --data DIR --long-side 448

- **fox** (instant-ngp, the 16 photos present of the 67 listed, ground-truth camera-to-world in NeRF/OpenGL axes): the
  estimated camera centres are aligned to the ground truth by a Sim(3) (Umeyama, closed form,
  deterministic); ATE = mean centre error after alignment, reported as a percentage of the
  trajectory extent (the largest distance between two ground-truth centres). Rotation error:
  geodesic angle between estimated and ground-truth relative rotations (camera i to camera j),
  over every pair of registered frames.
- **chessboard** (OpenCV samples, 13 views of a 9x6 board): ground truth is each view's board
  pose from ``cv2.solvePnP`` with the calibration in ``left_intrinsics.yml``. The *camera* is
  static and the *board* moves, so we score the camera relative to the board: the frames are
  undistorted with the given calibration, pixels outside the board's hull are greyed out
  (``service/validation/chessboard.py``; the static background would otherwise say "the
  camera did not move"), and relative rotations are compared as for the fox. Run with the given intrinsics and with the focal
  estimated.

Prints a table; numbers go to bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from service.pipeline.decode import frames_to_video, load_video  # noqa: E402
from service.pipeline.geometry.classical import ClassicalGeometry  # noqa: E402
from service.pipeline.transforms import (  # noqa: E402
    OPENGL_TO_OPENCV,
    apply_sim3,
    camera_centers,
    invert_rigid,
    rotation_geodesic_deg,
    umeyama_sim3,
)
from service.settings import Settings  # noqa: E402
from service.validation.chessboard import board_views, read_calibration  # noqa: E402

sys.path.append(str(Path(__file__).resolve().parent))  # for _shared (bench/service.py shadows "service" if first)
from _shared import shared_data  # noqa: E402



def relative_rotation_errors(estimated_w2c: torch.Tensor, truth_w2c: torch.Tensor) -> torch.Tensor:
    """Geodesic error (degrees) of R_j R_i^T for every pair i < j; inputs [N,4,4]."""
    errors = []
    n = estimated_w2c.shape[0]
    for i in range(n):
        for j in range(i + 1, n):
            est = estimated_w2c[j, :3, :3] @ estimated_w2c[i, :3, :3].T
            gt = truth_w2c[j, :3, :3] @ truth_w2c[i, :3, :3].T
            errors.append(rotation_geodesic_deg(est[None], gt[None])[0])
    return torch.stack(errors)


def ate_percent(estimated_w2c: torch.Tensor, truth_w2c: torch.Tensor) -> tuple[float, float]:
    """(ATE as % of the trajectory extent, extent) after a Sim(3) fit of the centres."""
    est, gt = camera_centers(estimated_w2c), camera_centers(truth_w2c)
    scale, rotation, translation = umeyama_sim3(est, gt)
    aligned = apply_sim3(scale, rotation, translation, est)
    extent = float(torch.cdist(gt, gt).max())
    return 100.0 * float((aligned - gt).norm(dim=1).mean()) / extent, extent


def fox(data: Path, settings: Settings, long_side: int) -> dict:
    meta = json.loads((data / "fox_nc" / "transforms.json").read_text())
    # transforms.json lists 67 frames; the shared copy holds 16 of the photos.
    frames = sorted((f for f in meta["frames"] if (data / "fox_nc" / f["file_path"]).is_file()),
                    key=lambda f: f["file_path"])  # fmt: skip
    camera_to_world = torch.tensor([f["transform_matrix"] for f in frames], dtype=torch.float64)
    truth = invert_rigid(camera_to_world @ OPENGL_TO_OPENCV)
    video = load_video(data / "fox_nc" / "images", max_frames=len(frames), long_side=long_side)
    assert video.num_frames == len(frames)
    start = time.perf_counter()
    geometry = ClassicalGeometry(settings=settings).predict(video)
    seconds = time.perf_counter() - start
    ok = geometry.registered
    ate, _ = ate_percent(geometry.world_to_camera[ok], truth[ok])
    rotation = relative_rotation_errors(geometry.world_to_camera[ok], truth[ok])
    focal_truth = meta["fl_x"] * video.width / meta["w"]
    return {
        "clip": "fox", "frames": video.num_frames, "registered": int(ok.sum()),
        "ate_pct_extent": ate, "rot_err_mean_deg": float(rotation.mean()),
        "rot_err_max_deg": float(rotation.max()),
        "focal_err_pct": 100 * abs(geometry.diagnostics["focal_px"] - focal_truth) / focal_truth,
        "seconds": seconds,
    }  # fmt: skip


def chessboard(data: Path, settings: Settings, long_side: int, given_intrinsics: bool) -> dict:
    folder = data / "opencv_samples"
    camera_matrix, distortion = read_calibration(folder / "left_intrinsics.yml")
    views = board_views(sorted(folder.glob("left*.jpg")), camera_matrix, distortion)
    video = frames_to_video(views.frames, max_frames=len(views.frames), long_side=long_side)
    k_work = views.camera_matrix.copy()
    k_work[:2] *= video.width / views.frames.shape[2]
    model = ClassicalGeometry(settings=settings, intrinsics=k_work if given_intrinsics else None)
    start = time.perf_counter()
    geometry = model.predict(video)
    seconds = time.perf_counter() - start
    ok = geometry.registered
    truth = torch.tensor(views.world_to_camera, dtype=torch.float64)
    rotation = relative_rotation_errors(geometry.world_to_camera[ok], truth[ok])
    return {
        "clip": f"chessboard ({'given K' if given_intrinsics else 'focal estimated'})",
        "frames": video.num_frames, "registered": int(ok.sum()),
        "ate_pct_extent": ate_percent(geometry.world_to_camera[ok], truth[ok])[0]
        if int(ok.sum()) >= 3 else float("nan"),
        "rot_err_mean_deg": float(rotation.mean()) if rotation.numel() else float("nan"),
        "rot_err_max_deg": float(rotation.max()) if rotation.numel() else float("nan"),
        "focal_err_pct": 100 * abs(geometry.diagnostics["focal_px"] - k_work[0, 0]) / k_work[0, 0],
        "seconds": seconds,
    }  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=shared_data())
    parser.add_argument("--long-side", type=int, default=448)
    args = parser.parse_args()
    torch.set_num_threads(1)
    settings = Settings(geometry_backend="classical")
    rows = [
        fox(args.data, settings, args.long_side),
        chessboard(args.data, settings, args.long_side, given_intrinsics=True),
        chessboard(args.data, settings, args.long_side, given_intrinsics=False),
    ]
    print(f"classical geometry, long side {args.long_side} px, torch {torch.__version__}")
    header = f"{'clip':<32} {'reg':>7} {'ATE %ext':>9} {'rot mean':>9} {'rot max':>8} {'focal err':>10} {'time s':>7}"
    print(header)
    for r in rows:
        print(f"{r['clip']:<32} {r['registered']:>3}/{r['frames']:<3} {r['ate_pct_extent']:9.3f} "
              f"{r['rot_err_mean_deg']:9.3f} {r['rot_err_max_deg']:8.3f} {r['focal_err_pct']:9.1f}% "
              f"{r['seconds']:7.2f}")
    print("(ATE: mean camera-centre error after Sim(3) alignment, % of the largest distance "
          "between ground-truth centres; rot: relative-rotation geodesic error over all frame "
          "pairs, degrees)")
    if not math.isfinite(rows[0]["ate_pct_extent"]):
        sys.exit(1)


if __name__ == "__main__":
    main()

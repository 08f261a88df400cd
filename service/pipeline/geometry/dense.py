"""Dense depth for the classical backend: triangulate optical flow between posed frames.

For a reference frame ``a`` and a partner ``b`` with known cameras:

1. DIS optical flow a -> b and b -> a (OpenCV, deterministic);
2. every pixel centre of ``a`` and its flow target in ``b`` are triangulated along a's ray
   (closed-form least squares for the depth);
3. confidence = fb * epipolar * parallax, each in [0, 1]:
   - ``fb = exp(-1/2 (e_fb / 1 px)^2)``: forward-backward consistency (occlusions, flow errors);
   - ``epipolar = exp(-1/2 (e_epi / 1 px)^2)``: distance of the flow target from the epipolar
     line; non-rigid motion (moving objects, warped frames) breaks it;
   - ``parallax = 1 - exp(-(p / 3 px)^2)`` with ``p = triangulation angle x focal``: rays that
     barely diverge fix no depth (a camera that does not translate gives p = 0).
4. depths from several partners are fused per pixel: the most confident one wins, and two
   confident partners that disagree by more than ~10 % lower the confidence.

All functions are pure (numpy in, numpy out). Shapes: H, W pixels. Conventions
(docs/conventions.md): OpenCV axes, ``world_to_camera`` 4x4, intrinsics in pixels, pixel centre
of (row i, column j) at ``(j + 0.5, i + 0.5)``, z-depth.
"""

from __future__ import annotations

import cv2
import numpy as np

FB_SIGMA_PX = 1.0
EPIPOLAR_SIGMA_PX = 1.0
PARALLAX_SCALE_PX = 3.0
AGREEMENT_TOLERANCE = 0.1  # relative depth difference tolerated between two partners
CONFIDENT = 0.3
# DIS quality: FAST is ~4x quicker than MEDIUM at 448x252 and scored the same on real footage.
DIS_PRESET = cv2.DISOPTICAL_FLOW_PRESET_FAST


def optical_flow(
    gray_from: np.ndarray,  # [H,W] uint8
    gray_to: np.ndarray,  # [H,W] uint8
    homography: np.ndarray | None = None,  # [3,3] our pixel convention, from -> to
) -> np.ndarray:
    """DIS optical flow [H,W,2] (du, dv) in pixels from ``gray_from`` to ``gray_to``.

    DIS is coarse-to-fine but still loses track beyond a few tens of pixels. Frames far apart
    (a clip sampled at 1 fps, photos around an object) are therefore first aligned by
    ``homography`` (the motion a plane at the scene's median depth would have, from the
    estimated cameras): ``gray_to`` is warped into ``gray_from``'s view, DIS measures what the
    plane does not explain (parallax), and the two are composed.
    """
    dis = cv2.DISOpticalFlow_create(DIS_PRESET)
    if homography is None:
        return dis.calc(gray_from, gray_to, None)
    height, width = gray_from.shape
    # OpenCV puts pixel centres at integers, we at +0.5: conjugate by the half-pixel shift.
    shift = np.array([[1.0, 0.0, 0.5], [0.0, 1.0, 0.5], [0.0, 0.0, 1.0]])
    homography_cv = np.linalg.inv(shift) @ homography @ shift
    # warped(p) = gray_to(H p): WARP_INVERSE_MAP samples the source at H p.
    warped = cv2.warpPerspective(gray_to, homography_cv, (width, height),
                                 flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                                 borderMode=cv2.BORDER_REPLICATE)  # fmt: skip
    residual = dis.calc(gray_from, warped, None)
    u, v = np.meshgrid(np.arange(width, dtype=np.float64), np.arange(height, dtype=np.float64))
    x, y = u + residual[..., 0], v + residual[..., 1]
    w = homography_cv[2, 0] * x + homography_cv[2, 1] * y + homography_cv[2, 2]
    w = np.where(np.abs(w) > 1e-12, w, 1e-12)
    target_u = (homography_cv[0, 0] * x + homography_cv[0, 1] * y + homography_cv[0, 2]) / w
    target_v = (homography_cv[1, 0] * x + homography_cv[1, 1] * y + homography_cv[1, 2]) / w
    return np.stack([target_u - u, target_v - v], axis=-1).astype(np.float32)


def plane_homography(
    intrinsics_a: np.ndarray,  # [3,3]
    intrinsics_b: np.ndarray,  # [3,3]
    a_to_b: np.ndarray,  # [4,4]
    depth: float,  # z-depth of the plane in a's camera
) -> np.ndarray:
    """[3,3] mapping a's pixels to b's for the fronto-parallel plane z = depth in a's camera:
    points on it satisfy n.X = depth with n = (0, 0, 1), so X_b = (R + t n^T / depth) X_a."""
    plane = a_to_b[:3, :3] + np.outer(a_to_b[:3, 3], [0.0, 0.0, 1.0 / depth])
    return intrinsics_b @ plane @ np.linalg.inv(intrinsics_a)


def forward_backward_error(flow_ab: np.ndarray, flow_ba: np.ndarray) -> np.ndarray:
    """|flow_ab(p) + flow_ba(p + flow_ab(p))| [H,W] in pixels (0 for a consistent pair).
    Targets outside frame b get an infinite error."""
    height, width = flow_ab.shape[:2]
    grid_u, grid_v = np.meshgrid(np.arange(width, dtype=np.float32),
                                 np.arange(height, dtype=np.float32))  # fmt: skip
    map_u, map_v = grid_u + flow_ab[..., 0], grid_v + flow_ab[..., 1]
    back = cv2.remap(flow_ba, map_u, map_v, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    error = np.linalg.norm(flow_ab + back, axis=-1)
    outside = (map_u < -0.5) | (map_u > width - 0.5) | (map_v < -0.5) | (map_v > height - 0.5)
    error[outside] = np.inf
    return error


def triangulate_flow(
    flow_ab: np.ndarray,  # [H,W,2] pixels
    intrinsics_a: np.ndarray,  # [3,3]
    intrinsics_b: np.ndarray,  # [3,3]
    a_to_b: np.ndarray,  # [4,4] rigid: points_camera_b = R @ points_camera_a + t
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Depth of every pixel of frame a from its flow correspondence in frame b.

    Returns z-depth [H,W] in a's camera (0 where the rays do not meet in front of both
    cameras), parallax [H,W] in pixels (triangulation angle x focal of a) and the epipolar
    distance [H,W] of the flow target in pixels. Elementwise float32 maths (no [H,W,3] @ [3,3]
    products): this runs for every frame and partner.
    """
    height, width = flow_ab.shape[:2]
    u, v = _pixel_centres(height, width)
    fa, fb = intrinsics_a[[0, 1], [0, 1]], intrinsics_b[[0, 1], [0, 1]]
    ca, cb = intrinsics_a[[0, 1], [2, 2]], intrinsics_b[[0, 1], [2, 2]]
    # Ray of a (z = 1) and the flow target's normalised coordinates in b.
    ray_x = ((u - ca[0]) / fa[0]).astype(np.float32)
    ray_y = ((v - ca[1]) / fa[1]).astype(np.float32)
    target_u, target_v = u + flow_ab[..., 0], v + flow_ab[..., 1]
    obs_x = (target_u - cb[0]) / fb[0]
    obs_y = (target_v - cb[1]) / fb[1]
    r = a_to_b[:3, :3].astype(np.float32)
    t = a_to_b[:3, 3].astype(np.float32)
    # R r: a's ray in b's axes.
    rot_x = r[0, 0] * ray_x + r[0, 1] * ray_y + r[0, 2]
    rot_y = r[1, 0] * ray_x + r[1, 1] * ray_y + r[1, 2]
    rot_z = r[2, 0] * ray_x + r[2, 1] * ray_y + r[2, 2]

    # b sees the point d * r (in a) at (R d r + t); its normalised image (x', y') satisfies
    # x' (d (Rr)_z + t_z) = d (Rr)_x + t_x, and the same for y: least squares in d.
    coeff_x = obs_x * rot_z - rot_x
    coeff_y = obs_y * rot_z - rot_y
    rhs_x = t[0] - obs_x * t[2]
    rhs_y = t[1] - obs_y * t[2]
    denominator = coeff_x * coeff_x + coeff_y * coeff_y
    solvable = denominator > 1e-12
    depth = np.where(solvable, (coeff_x * rhs_x + coeff_y * rhs_y) / np.maximum(denominator, 1e-12), 0.0)
    in_front = (depth > 0) & (depth * rot_z + t[2] > 0)

    # Triangulation angle between a's ray and the ray from b's centre to the point (in a).
    centre_b = -r.T @ t
    px, py, pz = depth * ray_x, depth * ray_y, depth
    qx, qy, qz = px - centre_b[0], py - centre_b[1], pz - centre_b[2]
    cosine = (px * qx + py * qy + pz * qz) / np.maximum(
        np.sqrt((px * px + py * py + pz * pz) * (qx * qx + qy * qy + qz * qz)), 1e-12
    )
    parallax_px = np.arccos(np.clip(cosine, -1.0, 1.0)) * (0.5 * (fa[0] + fa[1]))

    # Epipolar line of a's ray in b's normalised plane: l = [t]x R r; distance in b's pixels.
    line_a = t[1] * rot_z - t[2] * rot_y
    line_b = t[2] * rot_x - t[0] * rot_z
    line_c = t[0] * rot_y - t[1] * rot_x
    # In pixels: x' = (u - cx) / fx, so scale the line's coefficients back to pixel units.
    line_u, line_v = line_a / fb[0], line_b / fb[1]
    line_w = line_c - line_a * cb[0] / fb[0] - line_b * cb[1] / fb[1]
    norm = np.sqrt(line_u * line_u + line_v * line_v)
    epipolar_px = np.where(
        norm > 1e-12, np.abs(line_u * target_u + line_v * target_v + line_w) / np.maximum(norm, 1e-12), 0.0
    )
    depth = np.where(in_front, depth, 0.0)
    return depth.astype(np.float32), parallax_px.astype(np.float32), epipolar_px.astype(np.float32)


def _pixel_centres(height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """u [H,W] and v [H,W] of every pixel centre (j + 0.5, i + 0.5), float32."""
    v, u = np.meshgrid(np.arange(height, dtype=np.float32) + 0.5,
                       np.arange(width, dtype=np.float32) + 0.5, indexing="ij")  # fmt: skip
    return u, v


def pair_depth(
    flow_ab: np.ndarray,  # [H,W,2]
    flow_ba: np.ndarray,  # [H,W,2]
    intrinsics_a: np.ndarray,  # [3,3]
    intrinsics_b: np.ndarray,  # [3,3]
    a_to_b: np.ndarray,  # [4,4]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Depth [H,W], confidence [H,W] in [0,1] and parallax [H,W] (px) of frame a from partner b."""
    depth, parallax_px, epipolar_px = triangulate_flow(flow_ab, intrinsics_a, intrinsics_b, a_to_b)
    fb_px = forward_backward_error(flow_ab, flow_ba)
    confidence = (
        np.exp(-0.5 * (fb_px / FB_SIGMA_PX) ** 2)
        * np.exp(-0.5 * (epipolar_px / EPIPOLAR_SIGMA_PX) ** 2)
        * (1.0 - np.exp(-((parallax_px / PARALLAX_SCALE_PX) ** 2)))
    )
    confidence = np.where(depth > 0, confidence, 0.0).astype(np.float32)
    return depth, confidence, parallax_px


def fuse_depths(
    depths: list[np.ndarray],  # each [H,W]
    confidences: list[np.ndarray],  # each [H,W]
) -> tuple[np.ndarray, np.ndarray]:
    """Fuse per-partner depths: the confidence-weighted mean of the partners that agree with the
    most confident one (within ~10 %); two confident partners that disagree lower the
    confidence (one of them is wrong, and we cannot tell which)."""
    depth_stack = np.stack(depths)  # [P,H,W]
    confidence_stack = np.stack(confidences)
    best = confidence_stack.argmax(axis=0)[None]
    reference = np.take_along_axis(depth_stack, best, axis=0)[0]
    confidence = np.take_along_axis(confidence_stack, best, axis=0)[0]
    if len(depths) == 1:
        return reference.astype(np.float32), confidence.astype(np.float32)
    relative = np.abs(depth_stack - reference[None]) / np.maximum(reference[None], 1e-12)
    agreement = np.exp(-((relative / AGREEMENT_TOLERANCE) ** 2))  # [P,H,W], 1 for the best
    usable = (depth_stack > 0) & (confidence_stack > 0)
    weight = np.where(usable, confidence_stack * agreement, 0.0)
    depth = np.where(weight.sum(0) > 0, (weight * depth_stack).sum(0) / np.maximum(weight.sum(0), 1e-12),
                     reference)  # fmt: skip
    others_confident = (confidence_stack > CONFIDENT) & (depth_stack > 0)
    confidence = confidence * np.where(others_confident, agreement, 1.0).min(axis=0)
    return depth.astype(np.float32), confidence.astype(np.float32)

"""Synthetic clips with exact geometry, ray-cast analytically (tests, benchmarks, demos).

A textured room (floor, ceiling, three walls) with two boxes, seen by a moving pinhole
camera. Every pixel's colour and z-depth come from ray/plane intersections, independent of
our renderers, so the reconstruction term can be checked against ground truth.
Conventions: docs/conventions.md (OpenCV axes, world_to_camera, pixels, z-depth).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from service.pipeline.transforms import fov_to_focal


@dataclass(frozen=True)
class SyntheticClip:
    frames: np.ndarray  # [T,H,W,3] uint8
    depth: np.ndarray  # [T,H,W] float32 z-depth
    world_to_camera: np.ndarray  # [T,4,4] float64
    intrinsics: np.ndarray  # [T,3,3] float64

    def geometry_arrays(self) -> dict[str, np.ndarray]:
        """The oracle backend's .npz layout."""
        return {"depth": self.depth, "world_to_camera": self.world_to_camera,
                "intrinsics": self.intrinsics}  # fmt: skip


# Axis-aligned rectangles: (axis, offset, (lo0, hi0, lo1, hi1) on the other two axes, pattern id)
_ROOM = [
    (1, 1.2, (-4.0, 4.0, -2.0, 9.0), 0),  # floor (y down is +: floor at y = +1.2)
    (1, -2.0, (-4.0, 4.0, -2.0, 9.0), 1),  # ceiling
    (2, 8.0, (-4.0, 4.0, -2.0, 1.2), 2),  # back wall
    (0, -3.5, (-2.0, 1.2, -2.0, 9.0), 3),  # left wall (other axes: y, z)
    (0, 3.5, (-2.0, 1.2, -2.0, 9.0), 4),  # right wall
]


def _boxes() -> list[tuple[int, float, tuple[float, float, float, float], int]]:
    faces = []
    for (x0, x1, y0, y1, z0, z1), pattern in (((-1.6, -0.6, 0.2, 1.2, 3.5, 4.5), 5),
                                              ((0.8, 1.8, -0.4, 1.2, 5.0, 6.0), 6)):  # fmt: skip
        faces += [
            (2, z0, (x0, x1, y0, y1), pattern), (2, z1, (x0, x1, y0, y1), pattern),
            (0, x0, (y0, y1, z0, z1), pattern), (0, x1, (y0, y1, z0, z1), pattern),
            (1, y0, (x0, x1, z0, z1), pattern),
        ]  # fmt: skip
    return faces


def _texture(
    pattern: int, a: np.ndarray, b: np.ndarray, detail: float = 1.0, contrast: float = 1.0,
) -> np.ndarray:  # fmt: skip
    """Colourful procedural texture on plane coordinates (a, b) -> [...,3]; ``detail`` scales
    its spatial frequencies (lower it for small images, where fine texture aliases),
    ``contrast`` its amplitude around each surface's base colour (weak texture: few keypoints)."""
    rng = np.random.default_rng(100 + pattern)
    freqs = rng.uniform(1.5, 7.0, size=(3, 3)) * detail
    phases = rng.uniform(0, 2 * math.pi, size=(3, 3))
    base = rng.uniform(0.25, 0.75, size=3)
    channels = []
    for c in range(3):
        value = base[c]
        for k in range(3):
            value = value + 0.12 * np.sin(freqs[c, k] * (a * (k + 1) + b * (2 - k)) + phases[c, k])
        channels.append(value)
    checker = ((np.floor(a * 2.0 * detail) + np.floor(b * 2.0 * detail)) % 2) * 0.15 - 0.075
    texture = np.stack(channels, -1) + checker[..., None]
    return np.clip(base + contrast * (texture - base), 0, 1)


def _look_at(centre: np.ndarray, target: np.ndarray) -> np.ndarray:
    """world_to_camera [4,4] for a camera at ``centre`` looking at ``target`` (y down)."""
    forward = target - centre
    forward /= np.linalg.norm(forward)
    right = np.cross(forward, np.array([0.0, -1.0, 0.0]))  # world up is -y
    right /= np.linalg.norm(right)
    down = np.cross(forward, right)
    rotation = np.stack([right, down, forward])  # rows: camera axes in world
    transform = np.eye(4)
    transform[:3, :3] = rotation
    transform[:3, 3] = -rotation @ centre
    return transform


def camera_path(motion: str, num_frames: int) -> np.ndarray:
    """world_to_camera [T,4,4] for a few motions inside the room."""
    poses = []
    for i in range(num_frames):
        s = i / max(num_frames - 1, 1)
        if motion == "orbit":
            angle = math.radians(-14 + 28 * s)
            target = np.array([0.0, 0.3, 4.8])
            centre = target + 4.2 * np.array([math.sin(angle), 0.0, -math.cos(angle)])
            centre[1] = -0.2
        elif motion == "push_in":
            centre, target = np.array([0.0, -0.2, -1.0 + 2.0 * s]), np.array([0.0, 0.0, 8.0])
        elif motion == "move_right":
            centre = np.array([-1.0 + 2.0 * s, -0.2, -1.0])
            target = centre + np.array([0.0, 0.1, 5.0])
        elif motion == "pan":  # turning 16 degrees, drifting 3 cm like a hand-held camera
            angle = math.radians(-8 + 16 * s)
            centre = np.array([-0.015 + 0.03 * s, -0.2, -1.0])
            target = centre + np.array([math.sin(angle), 0.02, math.cos(angle)])
        elif motion == "static":
            centre, target = np.array([0.0, -0.2, -1.0]), np.array([0.0, 0.0, 8.0])
        else:
            raise ValueError(f"unknown motion {motion!r}")
        poses.append(_look_at(centre, target))
    return np.stack(poses)


def render_scene(
    world_to_camera: np.ndarray, intrinsics: np.ndarray, height: int, width: int,
    detail: float = 1.0, contrast: float = 1.0,
) -> tuple[np.ndarray, np.ndarray]:
    """Colour [H,W,3] in [0,1] and z-depth [H,W] of the room seen by one camera."""
    v, u = np.meshgrid(np.arange(height) + 0.5, np.arange(width) + 0.5, indexing="ij")
    k_inv = np.linalg.inv(intrinsics)
    rays_camera = np.stack([u, v, np.ones_like(u)], -1) @ k_inv.T  # z = 1
    rotation, translation = world_to_camera[:3, :3], world_to_camera[:3, 3]
    centre = -rotation.T @ translation
    rays_world = rays_camera @ rotation  # = (R^T r)^T
    best_t = np.full((height, width), np.inf)
    colour = np.zeros((height, width, 3))
    for axis, offset, (lo0, hi0, lo1, hi1), pattern in _ROOM + _boxes():
        others = [a for a in range(3) if a != axis]
        direction = rays_world[..., axis]
        with np.errstate(divide="ignore", invalid="ignore"):
            t = (offset - centre[axis]) / direction
        hit = centre + t[..., None] * rays_world
        p0, p1 = hit[..., others[0]], hit[..., others[1]]
        valid = (t > 1e-6) & (p0 >= lo0) & (p0 <= hi0) & (p1 >= lo1) & (p1 <= hi1) & (t < best_t)
        best_t = np.where(valid, t, best_t)
        colour = np.where(valid[..., None], _texture(pattern, p0, p1, detail, contrast), colour)
    depth = np.where(np.isfinite(best_t), best_t, 0.0)  # rays have z = 1: t is z-depth
    return colour, depth.astype(np.float32)


def make_clip(
    motion: str = "orbit", num_frames: int = 8, height: int = 72, width: int = 128,
    fov_deg: float = 60.0, detail: float = 1.0, supersample: int = 2, contrast: float = 1.0,
) -> SyntheticClip:  # fmt: skip
    """A clip of the room. Colours are supersampled (``supersample``^2 rays per pixel, like a
    real camera's anti-aliasing); depth is the pixel centre's. ``contrast`` < 1 weakens every
    texture (fewer keypoints, as in flat rendered scenes)."""
    focal = fov_to_focal(fov_deg, width)
    intrinsics = np.array([[focal, 0, width / 2], [0, focal, height / 2], [0, 0, 1.0]])
    fine = intrinsics.copy()
    fine[:2] *= supersample
    poses = camera_path(motion, num_frames)
    frames, depths = [], []
    for pose in poses:
        _, depth = render_scene(pose, intrinsics, height, width, detail, contrast)
        colour, _ = render_scene(pose, fine, height * supersample, width * supersample, detail,
                                 contrast)  # fmt: skip
        colour = colour.reshape(height, supersample, width, supersample, 3).mean(axis=(1, 3))
        frames.append(np.round(colour * 255).astype(np.uint8))
        depths.append(depth)
    return SyntheticClip(
        frames=np.stack(frames),
        depth=np.stack(depths),
        world_to_camera=poses,
        intrinsics=np.repeat(intrinsics[None], num_frames, axis=0),
    )

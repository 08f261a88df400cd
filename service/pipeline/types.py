"""The typed hand-offs between pipeline stages (conventions: docs/conventions.md).

Shape letters: T frames, H, W pixels, N Gaussians, V rendered views.
Cameras use OpenCV axes (x right, y down, z forward); poses are world-to-camera 4x4 matrices;
intrinsics are in pixels at the working resolution, pixel centres at +0.5.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import torch
from torch import Tensor


class PipelineInputError(ValueError):
    """Bad input (unreadable file, wrong shape, NaN poses...): a 4xx, never a 500."""


class GeometryError(RuntimeError):
    """Geometry could not be estimated at all; the terms that need it report `failed`."""


@dataclass(frozen=True)
class Video:
    """Decoded, sampled and resized frames, ready for geometry."""

    frames: Tensor  # [T,H,W,3] float32 in [0,1], RGB
    source_indices: list[int]  # index of each frame in the input video, increasing
    source_num_frames: int  # frames in the input before sampling
    source_size: tuple[int, int]  # (H, W) of the input before resizing
    fps: float | None = None
    # [T,h,w,3] uint8 RGB: the same sampled frames resized ONCE from the source to the size
    # the geometry model asked for (GeometryModel.input_size); None when it asked for none.
    # A learned model then sees the source pixels, not the working frames upsampled again.
    geometry_frames: Tensor | None = None

    def __post_init__(self) -> None:
        t, h, w, c = self.frames.shape
        if c != 3 or self.frames.dtype != torch.float32:
            raise PipelineInputError("frames must be float32 [T,H,W,3]")
        if len(self.source_indices) != t:
            raise PipelineInputError("one source index per frame")
        if self.geometry_frames is not None:
            g = self.geometry_frames
            if g.dtype != torch.uint8 or g.ndim != 4 or g.shape[0] != t or g.shape[-1] != 3:
                raise PipelineInputError("geometry_frames must be uint8 [T,h,w,3], one per frame")

    @property
    def num_frames(self) -> int:
        return self.frames.shape[0]

    @property
    def height(self) -> int:
        return self.frames.shape[1]

    @property
    def width(self) -> int:
        return self.frames.shape[2]

    @property
    def normalized_times(self) -> Tensor:  # [T] in [0,1]: position of each frame in the clip
        denominator = max(self.source_num_frames - 1, 1)
        return torch.tensor(self.source_indices, dtype=torch.float64) / denominator


@dataclass(frozen=True)
class Geometry:
    """Per-frame depth and cameras, from any geometry backend."""

    depth: Tensor  # [T,H,W] float32 z-depth along the optical axis, scene units; 0 = unknown
    confidence: Tensor  # [T,H,W] float32 in [0,1]
    world_to_camera: Tensor  # [T,4,4] float64 rigid transforms, OpenCV axes
    intrinsics: Tensor  # [T,3,3] float64 pixels at depth's H x W
    registered: Tensor  # [T] bool: frames whose pose was estimated (others are placeholders)
    backend: str
    diagnostics: dict[str, float | int | str | bool | None] = field(default_factory=dict)
    # Gaussians predicted by the geometry model itself (DA3's Gaussian head), world frame,
    # each tagged with its source frame. None: the pipeline lifts its own from depth.
    gaussians: Gaussians | None = None

    def __post_init__(self) -> None:
        t, h, w = self.depth.shape
        checks = {
            "confidence": (self.confidence.shape, (t, h, w)),
            "world_to_camera": (self.world_to_camera.shape, (t, 4, 4)),
            "intrinsics": (self.intrinsics.shape, (t, 3, 3)),
            "registered": (self.registered.shape, (t,)),
        }
        for name, (got, want) in checks.items():
            if tuple(got) != want:
                raise PipelineInputError(f"geometry {name} has shape {tuple(got)}, expected {want}")
        if not torch.isfinite(self.world_to_camera).all():
            raise PipelineInputError("geometry world_to_camera contains NaN or inf")
        if not torch.isfinite(self.intrinsics).all():
            raise PipelineInputError("geometry intrinsics contain NaN or inf")

    @property
    def num_frames(self) -> int:
        return self.depth.shape[0]

    def with_diagnostics(self, **extra: float | int | str | bool | None) -> "Geometry":
        return replace(self, diagnostics={**self.diagnostics, **extra})


@dataclass(frozen=True)
class Gaussians:
    """3D Gaussians in world space, each remembering which frame it was lifted from."""

    means: Tensor  # [N,3] float32 world points
    quats: Tensor  # [N,4] float32 unit quaternions, wxyz, rotating local axes into world
    scales: Tensor  # [N,3] float32 standard deviations along the local axes, scene units
    opacities: Tensor  # [N] float32 in [0,1]
    colors: Tensor  # [N,3] float32 RGB in [0,1]
    source_frame: Tensor  # [N] int64 frame index each Gaussian came from (-1: none)

    def __post_init__(self) -> None:
        n = self.means.shape[0]
        for name, want in (
            ("means", (n, 3)),
            ("quats", (n, 4)),
            ("scales", (n, 3)),
            ("opacities", (n,)),
            ("colors", (n, 3)),
            ("source_frame", (n,)),
        ):
            got = tuple(getattr(self, name).shape)
            if got != want:
                raise ValueError(f"gaussians.{name} has shape {got}, expected {want}")

    @property
    def num_gaussians(self) -> int:
        return self.means.shape[0]

    def select(self, mask: Tensor) -> "Gaussians":  # mask [N] bool
        return Gaussians(
            means=self.means[mask],
            quats=self.quats[mask],
            scales=self.scales[mask],
            opacities=self.opacities[mask],
            colors=self.colors[mask],
            source_frame=self.source_frame[mask],
        )

    def to(self, device: torch.device | str) -> "Gaussians":
        return Gaussians(*(getattr(self, f).to(device) for f in self.__dataclass_fields__))


@dataclass(frozen=True)
class RenderOutput:
    rgb: Tensor  # [V,H,W,3] float32, composited over the background
    depth: Tensor  # [V,H,W] float32 expected z-depth (normalised by alpha; 0 where alpha = 0)
    alpha: Tensor  # [V,H,W] float32 accumulated opacity in [0,1]

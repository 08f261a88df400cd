"""All configuration, read once from the environment (prefix ``REWARD3D_``) or a ``.env`` file.

One flat class with sections, so an operator finds every knob in one place. Values here are
defaults for a request; a request's :class:`service.schemas.ScoreOptions` may override the
per-request ones (terms, weights, frames).
"""

from __future__ import annotations

from enum import Enum
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class GeometryBackend(str, Enum):
    """Where depth, confidence and camera poses come from."""

    AUTO = "auto"  # da3 when a CUDA device and a DA3 checkpoint are configured, else classical
    CLASSICAL = "classical"  # weights-free: feature tracks + SfM + dense flow triangulation (CPU)
    DA3 = "da3"  # Depth Anything 3 (hub id or local directory in `da3_model`)
    ORACLE = "oracle"  # supplied by the caller (an .npz); for tests and known-geometry data


class RendererBackend(str, Enum):
    """How Gaussians are turned back into images."""

    AUTO = "auto"  # gsplat on CUDA when importable, else torch_points
    TORCH_POINTS = "torch_points"  # fast z-buffer point splat (CPU default)
    TORCH_EWA = "torch_ewa"  # pure-torch EWA Gaussian compositor (the reference)
    GSPLAT = "gsplat"  # CUDA rasterizer (optional `gpu` extra)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="REWARD3D_", env_file=".env", extra="ignore", use_enum_values=False
    )

    # --- compute ---------------------------------------------------------------------------
    device: str = Field("auto", description="'auto', 'cpu', 'cuda' or 'cuda:N'.")
    num_threads: int = Field(1, ge=1, description="torch intra-op threads for CPU work.")

    # --- 1. decode -------------------------------------------------------------------------
    max_frames: int = Field(16, ge=2, le=1024, description="Frames sampled evenly over the clip.")
    frame_stride: int = Field(1, ge=1, description="Take every k-th frame before sampling.")
    long_side: int = Field(448, ge=32, le=4096, description="Working resolution: longer side, px.")

    # --- 2. geometry -----------------------------------------------------------------------
    geometry_backend: GeometryBackend = GeometryBackend.AUTO
    da3_model: str = Field(
        "depth-anything/DA3-BASE", description="Hub id or local directory of a DA3 checkpoint."
    )
    da3_process_res: int = Field(504, ge=14, description="DA3 input long side (multiple of 14).")

    # --- 3. gaussians ----------------------------------------------------------------------
    max_gaussians: int = Field(
        1_500_000, ge=1000, description="Budget over all frames; frames are subsampled to fit."
    )
    footprint_scale: float = Field(
        0.7, gt=0, description="Gaussian std as a multiple of the pixel footprint depth/focal."
    )

    # --- 4. render -------------------------------------------------------------------------
    renderer: RendererBackend = RendererBackend.AUTO

    # --- 5. terms --------------------------------------------------------------------------
    neighbours: int = Field(
        4, ge=1, description="Each held-out frame is rendered from this many nearest frames."
    )
    lpips_weights: Path | None = Field(
        None, description="Local LPIPS weights (see docs/models.md); LPIPS is skipped without."
    )
    vlm_model: str | None = Field(
        None, description="Qwen3-VL hub id or local directory; plausibility/quality need it."
    )

    # --- 6. combine ------------------------------------------------------------------------
    weight_reconstruction: float = Field(1.0, ge=0)
    weight_trajectory: float = Field(1.0, ge=0)
    weight_plausibility: float = Field(1.0, ge=0)
    weight_quality: float = Field(0.0, ge=0)

    # --- GPU path: learned models (issue 7; docs/models.md) -----------------------------------
    da3_compile: Literal["auto", "tensorrt", "torch_compile", "eager"] = Field(
        "auto",
        description="DA3 backbone acceleration on CUDA: 'auto' (TensorRT, else torch.compile, "
        "else eager), 'tensorrt', 'torch_compile' or 'eager'. CPU always runs eager fp32.",
    )
    da3_engine_cache: Path = Field(
        Path.home() / ".cache" / "reward3d" / "tensorrt",
        description="Directory where built TensorRT engines are kept between processes.",
    )
    da3_max_frames: int = Field(
        128, ge=1, description="Largest frame count the DA3 engine is built for (dynamic shape)."
    )
    novel_views: int = Field(
        4, ge=1, le=16, description="Novel views rendered off the estimated path for the VLM."
    )
    vlm_batch_size: int = Field(8, ge=1, description="Images per VLM forward pass.")
    quality_backend: Literal["vlm", "preference", "brightness"] = Field(
        "vlm",
        description="'vlm' (reuse the loaded VLM), 'preference' (CLIP-style model), or "
        "'brightness' (TEST ONLY: mean frame brightness, for RL sanity checks of the trainer).",
    )
    quality_model: str | None = Field(
        None, description="Hub id or local dir of an image-preference model ('preference')."
    )

    # --- service ---------------------------------------------------------------------------
    redis_url: str | None = Field(
        None,
        validation_alias=AliasChoices("REWARD3D_REDIS_URL", "REDIS_URL"),
        description="Redis for the job queue; unset = `reward3d serve` starts a private one.",
    )

    @field_validator("device")
    @classmethod
    def _check_device(cls, value: str) -> str:
        if value not in ("auto", "cpu", "cuda") and not value.startswith("cuda:"):
            raise ValueError(f"device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {value!r}")
        return value

    def default_weights(self) -> dict[str, float]:
        return {
            "reconstruction": self.weight_reconstruction,
            "trajectory": self.weight_trajectory,
            "plausibility": self.weight_plausibility,
            "quality": self.weight_quality,
        }


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings (read once; tests build their own ``Settings(...)``)."""
    return Settings()

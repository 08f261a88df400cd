"""All configuration, read once from the environment (prefix ``REWARD3D_``) or a ``.env`` file.

One flat class with sections, so an operator finds every knob in one place. Values here are
defaults for a request; a request's :class:`service.schemas.ScoreOptions` may override the
per-request ones (terms, weights, frames).
"""

from __future__ import annotations

import os
from enum import Enum
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Literal

from pydantic import AliasChoices, Field, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict


class GeometryBackend(str, Enum):
    """Where depth, confidence and camera poses come from."""

    AUTO = "auto"  # da3 when a CUDA device and a DA3 checkpoint are configured, else classical
    CLASSICAL = "classical"  # weights-free: feature tracks + SfM + dense flow triangulation (CPU)
    DA3 = "da3"  # Depth Anything 3 (hub id or local directory in `da3_model`)
    ORACLE = "oracle"  # supplied by the caller (an .npz); for tests and known-geometry data


class RendererBackend(str, Enum):
    """How Gaussians are turned back into images."""

    AUTO = "auto"  # gsplat on CUDA when importable, else torch_points
    TORCH_POINTS = "torch_points"  # fast z-buffered footprint splat (CPU default)
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
        4_000_000,
        ge=1000,
        description="Budget over all frames; frames are subsampled to fit. Keep 16 frames at "
        "448 px (1.8 M) unsubsampled: coarser Gaussians need wider splats, so subsampling "
        "saves memory, not render time, and blurs the renders.",
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
    trajectory_without_target: Literal["not_applicable", "smoothness"] = Field(
        "not_applicable",
        description="When a video asks for no camera path: leave the trajectory term out of the "
        "total, or score the smoothness of the estimated path (catches shuffled and jittered "
        "frames; recommended for RL on prompts without camera words).",
    )
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
    da3_warm_up_shapes: Annotated[list[str], NoDecode] = Field(
        ["16x480x832"],
        description="Request shapes DA3 is compiled for at start-up, each 'FRAMESxHEIGHTxWIDTH' "
        "of the SOURCE video (480x832: Wan 2.1). Frames: what requests sample (max_frames); "
        "at least 3, so DA3's reference-view branch is compiled. A source size not listed "
        "compiles (or builds a TensorRT engine) inside its first request.",
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

    # --- classical geometry backend (issue 3; service/pipeline/geometry/classical.py) --------
    classical_fov_deg: float = Field(
        55.0, gt=5, lt=170,
        description="Horizontal field of view assumed by the classical backend before bundle "
        "adjustment refines the focal length (and kept when the camera does not translate).",
    )

    # --- service ---------------------------------------------------------------------------
    redis_url: str | None = Field(
        None,
        validation_alias=AliasChoices("REWARD3D_REDIS_URL", "REDIS_URL"),
        description="Redis for the job queue; unset = `reward3d serve` starts a private one.",
    )

    # --- service: API, queue, workers (issue 4; docs/service.md) ----------------------------
    # Security: every route but /healthz and /readyz needs `Authorization: Bearer <key>`.
    api_keys: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Accepted API keys (comma-separated in REWARD3D_API_KEYS).",
    )
    api_keys_file: Path | None = Field(None, description="File with one API key per line.")
    insecure_no_auth: bool = Field(
        False, description="Serve without API keys (a laptop on a private network only)."
    )
    metrics_public: bool = Field(False, description="Serve /metrics without an API key.")
    # Where state lives. The embedded Redis, its AOF and the blob store default to data_dir.
    data_dir: Path = Field(
        default_factory=lambda: Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
        / "reward3d",
        description="Local state of `reward3d serve`: blobs, embedded Redis, generated key.",
    )
    blob_dir: Path | None = Field(
        None, description="Blob store directory shared by API and workers (default data_dir/blobs)."
    )
    blob_store: Literal["directory", "s3"] = Field(
        "directory",
        description="Where uploads and report pages live: 'directory' (blob_dir, shared by API and "
        "workers) or 's3' (an S3-compatible bucket; blob_dir is then a local cache).",
    )
    s3_bucket: str | None = Field(None, description="Bucket of the s3 blob store.")
    s3_prefix: str = Field("reward3d", description="Key prefix in the bucket.")
    s3_endpoint_url: str | None = Field(
        None, description="S3-compatible endpoint (MinIO, Ceph...); unset for AWS. Credentials: "
        "boto3's chain (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, profile, pod role).",
    )  # fmt: skip
    s3_region: str | None = Field(None, description="Region of the bucket (AWS).")
    queue_name: str = Field("reward3d", pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    host: str = Field("127.0.0.1", description="`reward3d serve` bind address.")
    port: int = Field(8000, ge=0, le=65535)
    embedded_workers: int = Field(1, ge=0, le=64, description="Workers `reward3d serve` starts.")
    # Limits: 413 above the body size, 422 outside the video limits, 429 when full.
    max_body_mb: float = Field(1024.0, gt=0, description="Largest request body (MiB).")
    max_json_mb: float = Field(64.0, gt=0, description="Largest JSON (base64) body (MiB).")
    max_items_per_request: int = Field(64, ge=1, le=4096)
    max_input_frames: int = Field(1024, ge=2, description="Frames per uploaded video, at most.")
    max_input_side: int = Field(4096, ge=8, description="Height and width of uploads, at most.")
    max_queued_jobs: int = Field(1000, ge=1, description="Unfinished jobs in all (then 429).")
    max_inflight_per_key: int = Field(64, ge=1, description="Unfinished jobs per API key.")
    max_wait_s: float = Field(300.0, ge=0, description="Longest `?wait=` a request may ask for.")
    # Slow or hostile clients (service/api/limits.py): a connection is held only while it
    # keeps sending, and one client cannot hold them all.
    request_header_timeout_s: float = Field(
        10.0, gt=0, description="Request line and headers must arrive within this (then 408)."
    )
    request_body_timeout_s: float = Field(
        30.0, gt=0, description="Longest wait for the next piece of a request body (then 408); "
        "also the grace before the minimum upload rate applies.",
    )  # fmt: skip
    min_upload_kib_s: float = Field(
        256.0, gt=0, description="Slowest accepted upload (KiB/s): a body of N bytes must arrive "
        "within request_body_timeout_s + N / rate (then 408).",
    )  # fmt: skip
    max_connections_per_client: int = Field(
        64, ge=0, description="Open connections per client address (0 = no cap; behind a proxy "
        "every client has the proxy's address: cap there instead). Over it: 429, closed.",
    )  # fmt: skip
    # Reliability.
    job_retries: int = Field(3, ge=0, le=100, description="Re-runs of a job after a crash/error.")
    retry_backoff_s: Annotated[list[int], NoDecode] = Field(
        default_factory=lambda: [1, 5, 15], description="Delay before each retry (comma-separated)."
    )
    item_time_limit_s: float = Field(600.0, gt=0, description="Wall-time limit per video.")
    heartbeat_interval_s: float = Field(2.0, gt=0, description="Worker heartbeat period.")
    heartbeat_ttl_s: int = Field(
        20, ge=2, description="A job whose worker is silent this long is re-queued."
    )
    watchdog_interval_s: float = Field(2.0, gt=0, description="Period of the re-queue sweep.")
    worker_ready_file: Path | None = Field(
        None,
        description="A worker writes this file once its models are warm and removes it when it "
        "stops (for `exec: test -f` readiness probes; service/jobs/readiness.py).",
    )
    # Lifetimes of what the service keeps (seconds).
    result_ttl_s: int = Field(86_400, ge=1, description="Finished jobs and their results.")
    cache_ttl_s: int = Field(7 * 86_400, ge=0, description="Result cache (0 = no cache).")
    blob_ttl_s: int = Field(3_600, ge=60, description="Uploaded tensors no running job uses.")
    idempotency_ttl_s: int = Field(86_400, ge=1, description="Idempotency-Key -> job mapping.")

    @field_validator("api_keys", "retry_backoff_s", "da3_warm_up_shapes", mode="before")
    @classmethod
    def _comma_separated(cls, value):
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @model_validator(mode="after")
    def _s3_needs_a_bucket(self) -> "Settings":
        if self.blob_store == "s3" and not self.s3_bucket:
            raise ValueError("blob_store is 's3': set REWARD3D_S3_BUCKET")
        return self

    def resolved_blob_dir(self) -> Path:
        return self.blob_dir if self.blob_dir is not None else self.data_dir / "blobs"

    @field_validator("device")
    @classmethod
    def _check_device(cls, value: str) -> str:
        if value not in ("auto", "cpu", "cuda") and not value.startswith("cuda:"):
            raise ValueError(f"device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {value!r}")
        return value

    @field_validator("da3_warm_up_shapes")
    @classmethod
    def _check_warm_up_shapes(cls, value: list[str]) -> list[str]:
        if not value:
            raise ValueError("da3_warm_up_shapes needs at least one FRAMESxHEIGHTxWIDTH shape")
        for shape in value:
            parts = shape.lower().split("x")
            if len(parts) != 3 or not all(p.isdigit() and int(p) > 0 for p in parts):
                raise ValueError(f"warm-up shape {shape!r} is not FRAMESxHEIGHTxWIDTH, e.g. 16x480x832")
        return value

    def warm_up_shapes(self) -> list[tuple[int, int, int]]:
        """``da3_warm_up_shapes`` as (frames, source height, source width)."""
        return [tuple(int(p) for p in shape.lower().split("x")) for shape in self.da3_warm_up_shapes]

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

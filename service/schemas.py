"""What goes into a score and what comes out: the public contract (no torch here).

The API, the queue and the CLI all exchange these models; the SDK in ``trainer_client`` keeps
its own copy of the result schema (it must not import ``service``) and a test checks they agree.
"""

from __future__ import annotations

import math
from enum import Enum
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

TERM_NAMES = ("reconstruction", "trajectory", "plausibility", "quality")
TermName = Literal["reconstruction", "trajectory", "plausibility", "quality"]


class TermStatus(str, Enum):
    OK = "ok"
    NOT_APPLICABLE = "not_applicable"  # e.g. no camera path asked for: never scored as 0
    FAILED = "failed"  # could not be computed; a trainer should mask the sample


Matrix4 = Annotated[list[list[float]], Field(min_length=4, max_length=4)]


class TrajectoryTarget(BaseModel):
    """A requested camera path: explicit poses (OpenCV axes, any length; resampled in time)."""

    model_config = ConfigDict(extra="forbid")

    camera_to_world: list[Matrix4] | None = Field(
        None, description="[N,4,4] camera-to-world, OpenCV axes (x right, y down, z forward)."
    )
    world_to_camera: list[Matrix4] | None = Field(None, description="[N,4,4] world-to-camera.")
    convention: Literal["opencv", "opengl"] = Field(
        "opencv", description="'opengl' poses (y up, z backward) are converted on arrival."
    )

    @model_validator(mode="after")
    def _exactly_one(self) -> "TrajectoryTarget":
        given = [m for m in (self.camera_to_world, self.world_to_camera) if m is not None]
        if len(given) != 1:
            raise ValueError("give exactly one of camera_to_world or world_to_camera")
        poses = given[0]
        if len(poses) < 2:
            raise ValueError("a trajectory needs at least 2 poses")
        for pose in poses:
            if any(len(row) != 4 for row in pose):
                raise ValueError("each pose must be a 4x4 matrix")
            if not all(math.isfinite(v) for row in pose for v in row):
                raise ValueError("poses must be finite (no NaN or inf)")
        return self


class ScoreOptions(BaseModel):
    """Per-request options; anything left unset takes the server's settings."""

    model_config = ConfigDict(extra="forbid")

    terms: list[TermName] | None = Field(
        None, description="Terms to compute; default: all that are usable on the server."
    )
    weights: dict[TermName, Annotated[float, Field(ge=0)]] | None = Field(
        None, description="Weights for the total; missing terms keep the server default."
    )
    max_frames: int | None = Field(None, ge=2, le=1024)
    frame_stride: int | None = Field(None, ge=1, le=1000)
    long_side: int | None = Field(None, ge=32, le=4096)

    @field_validator("terms")
    @classmethod
    def _no_duplicates(cls, value: list[str] | None) -> list[str] | None:
        if value is not None and len(set(value)) != len(value):
            raise ValueError("terms must not repeat")
        return value


class TermResult(BaseModel):
    score: float | None = Field(None, description="In [0,1]; null unless status is 'ok'.")
    status: TermStatus
    reason: str | None = Field(None, description="Why (always set unless status is 'ok').")
    metrics: dict[str, float | int | str | bool | None | list[float]] = Field(default_factory=dict)


class GeometrySummary(BaseModel):
    backend: str
    num_frames: int
    height: int
    width: int
    source_frame_indices: list[int] = Field(description="Index of each frame in the input video.")
    world_to_camera: list[list[list[float]]] = Field(description="[T,4,4], OpenCV axes.")
    intrinsics: list[list[list[float]]] = Field(description="[T,3,3], pixels at height x width.")
    registered: list[bool] = Field(description="Frames whose pose could be estimated.")
    diagnostics: dict[str, float | int | str | bool | None] = Field(default_factory=dict)


class Versions(BaseModel):
    reward3d: str
    reward_spec: str
    backends: dict[str, str] = Field(default_factory=dict)


class RewardResult(BaseModel):
    """One video's reward. Same input + same config = the same result (timings aside)."""

    total: float | None = Field(
        None, description="Weighted mean of the 'ok' terms with non-zero weight; null if none."
    )
    total_terms: list[str] = Field(default_factory=list, description="Terms that made the total.")
    weights: dict[str, float] = Field(default_factory=dict)
    terms: dict[str, TermResult]
    geometry: GeometrySummary | None = None
    timings_ms: dict[str, float] = Field(default_factory=dict)
    versions: Versions

"""The SDK's copy of the service's result schema (``service/schemas.py``: RewardResult and
what it contains) and of the job view (``service/api/schemas.py``: JobPublic, ItemPublic).

The SDK must not import ``service``, so the models are repeated here, under the same names;
``tests/test_sdk_wire.py`` compares their JSON schemas with the service's so the two cannot
drift. Unknown fields from a newer server are ignored (pydantic's default), so an older SDK
keeps working when the service adds a field.
"""

from __future__ import annotations

from enum import Enum
from typing import Literal

from pydantic import BaseModel, Field

__all__ = [
    "GeometrySummary",
    "ItemError",
    "ItemPublic",
    "JobPublic",
    "RewardResult",
    "TermResult",
    "TermStatus",
    "Versions",
]

TERMINAL_JOB_STATUSES = ("finished", "failed", "cancelled")


class TermStatus(str, Enum):
    OK = "ok"
    NOT_APPLICABLE = "not_applicable"  # e.g. no camera path asked for: never scored as 0
    FAILED = "failed"  # could not be computed; a trainer should mask the sample


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


class ItemError(BaseModel):
    code: str = Field(description="invalid_input | input_expired | timeout | out_of_memory | "
                      "internal_error | worker_lost | cancelled")  # fmt: skip
    detail: str


class ItemPublic(BaseModel):
    index: int
    id: str | None = None
    status: Literal["pending", "ok", "failed", "cancelled"]
    cached: bool = False
    result: RewardResult | None = None
    error: ItemError | None = None
    report: str | None = Field(None, description="Path of the item's HTML report, when it asked for one.")


class Progress(BaseModel):
    done: int
    total: int


class JobPublic(BaseModel):
    """``GET /v1/jobs/{id}`` and ``POST /v1/score`` responses."""

    id: str
    status: Literal["queued", "running", "finished", "failed", "cancelled"]
    created_at: float
    started_at: float | None = None
    finished_at: float | None = None
    attempts: int
    progress: Progress
    error: ItemError | None = None
    items: list[ItemPublic]
    deduplicated: bool = False

    @property
    def ended(self) -> bool:
        return self.status in TERMINAL_JOB_STATUSES

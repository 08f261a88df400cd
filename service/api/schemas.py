"""What the HTTP API takes and gives (the wire contract; docs/service.md explains it).

In:  ``RequestFields`` (per-item prompt/trajectory/options, shared by every upload format),
     ``BinaryHeader`` (the JSON header of the binary format), ``JsonScoreRequest`` (base64).
Out: ``JobPublic`` (status, progress, one ``ItemPublic`` per video), ``InfoPublic``.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from service.schemas import RewardResult, ScoreOptions, TrajectoryTarget

ItemStatus = Literal["pending", "ok", "failed", "cancelled"]
JobStatus = Literal["queued", "running", "finished", "failed", "cancelled"]


# -- in --------------------------------------------------------------------------------------
class ItemFields(BaseModel):
    """Everything about one video except its pixels."""

    model_config = ConfigDict(extra="forbid")

    id: str | None = Field(None, max_length=256, description="Your tag for the item, echoed back.")
    prompt: str | None = Field(
        None, max_length=20_000, description="The generation prompt; camera words set the target path."
    )
    trajectory: TrajectoryTarget | None = Field(None, description="An explicit target camera path.")
    options: ScoreOptions | None = Field(None, description="Overrides the request's options.")
    report: bool = Field(False, description="Keep an HTML report of this item (frames, re-renders, "
                         "error maps, camera path): GET /v1/jobs/{id}/report?item=<index>.")  # fmt: skip


class RequestFields(BaseModel):
    """Request-level fields, common to every upload format."""

    model_config = ConfigDict(extra="forbid")

    items: list[ItemFields] | None = Field(
        None, max_length=4096,
        description="One entry per video, in order (omit for videos without prompt/options).",
    )  # fmt: skip
    options: ScoreOptions | None = Field(None, description="Defaults for every item.")


class TensorParameters(BaseModel):
    model_config = ConfigDict(extra="forbid")

    binary_data_size: int | None = Field(None, ge=0, description="Bytes of this tensor in the body.")


class TensorHeader(BaseModel):
    """One tensor in the binary body (KServe v2 binary extension layout)."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(max_length=64, description="video | depth | world_to_camera | intrinsics | "
                      "confidence, optionally suffixed '.<item index>'.")  # fmt: skip
    datatype: str = Field(max_length=8, description="UINT8, FP16, FP32 or FP64.")
    shape: list[int] = Field(min_length=1, max_length=8, description="Row-major shape.")
    parameters: TensorParameters | None = None


class BinaryHeader(RequestFields):
    """The JSON header that starts a binary body."""

    inputs: list[TensorHeader] = Field(min_length=1, max_length=4096 * 5)


class Base64Tensor(BaseModel):
    model_config = ConfigDict(extra="forbid")

    dtype: Literal["uint8", "float16", "float32", "float64"]
    shape: list[int] = Field(min_length=1, max_length=8, description="Row-major shape.")
    b64: str = Field(description="Raw little-endian row-major bytes, base64 (standard alphabet).")


class Base64File(BaseModel):
    model_config = ConfigDict(extra="forbid")

    format: str = Field(pattern=r"^[A-Za-z0-9]{1,8}$", description="File type, e.g. mp4, webm.")
    b64: str = Field(description="The encoded video file, base64.")


class Base64Geometry(BaseModel):
    model_config = ConfigDict(extra="forbid")

    depth: Base64Tensor
    world_to_camera: Base64Tensor
    intrinsics: Base64Tensor
    confidence: Base64Tensor | None = None


class JsonItem(ItemFields):
    video: Base64Tensor | Base64File
    geometry: Base64Geometry | None = Field(None, description="Known geometry (see docs).")


class JsonScoreRequest(BaseModel):
    """``application/json`` body: small requests with base64 tensors or files."""

    model_config = ConfigDict(extra="forbid")

    items: list[JsonItem] = Field(min_length=1, max_length=4096)
    options: ScoreOptions | None = None


# -- out -------------------------------------------------------------------------------------
class ItemError(BaseModel):
    code: str = Field(description="invalid_input | input_expired | timeout | out_of_memory | "
                      "internal_error | worker_lost | cancelled")  # fmt: skip
    detail: str


class ItemPublic(BaseModel):
    index: int
    id: str | None = None
    status: ItemStatus = Field(description="'ok': result is set. 'failed'/'cancelled': mask it.")
    cached: bool = False
    result: RewardResult | None = None
    error: ItemError | None = None
    report: str | None = Field(None, description="Path of the item's HTML report, when it asked "
                               "for one and it was kept.")  # fmt: skip


class Progress(BaseModel):
    done: int
    total: int


class JobPublic(BaseModel):
    id: str
    status: JobStatus
    created_at: float = Field(description="Unix time.")
    started_at: float | None = None
    finished_at: float | None = None
    attempts: int = Field(description="Times a worker started this job (>1 after a crash).")
    progress: Progress
    error: ItemError | None = Field(None, description="Why the whole job failed, if it did.")
    items: list[ItemPublic]
    deduplicated: bool = Field(
        False, description="True when this submit returned an existing job (same key or content)."
    )


class WorkerPublic(BaseModel):
    name: str
    warm: bool
    device: str | None = None
    geometry_backend: str | None = None
    current_job: str | None = None
    versions: dict | None = None


class InfoPublic(BaseModel):
    reward3d: str
    reward_spec: str
    scoring: dict = Field(description="What a warm worker scores with (long_side, max_frames, "
                          "terms, weights); the SDK resizes to long_side.")  # fmt: skip
    workers: list[WorkerPublic]
    limits: dict
    formats: list[str]
    auth: str

"""Who scores the videos: this process (``InProcessScorer``) or a running service
(``ServiceScorer``, in service/evaluation/remote.py). Both take ``Task``s and yield ``Scored``s.

A scorer also states its *fingerprint*: everything that changes the numbers (options, backends,
versions). It is part of each result's cache key, so changing an option rescores.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Literal

from service.evaluation.videos import VideoEntry
from service.schemas import RewardResult, ScoreOptions
from service.settings import GeometryBackend, Settings

# Item errors that a rerun would reproduce (cached like results); any other error is retried
# on the next run.
DETERMINISTIC_ERRORS = {"invalid_input", "timeout"}

# Settings that change a score (the fingerprint); the rest (threads, service knobs) do not.
SCORING_SETTINGS = (
    "max_frames", "frame_stride", "long_side", "da3_model", "da3_process_res", "max_gaussians",
    "footprint_scale", "neighbours", "lpips_weights", "vlm_model", "novel_views",
    "quality_backend", "quality_model", "weight_reconstruction", "weight_trajectory",
    "weight_plausibility", "weight_quality",
)  # fmt: skip


class EvaluationSetupError(RuntimeError):
    """The scorer cannot run at all (backend missing, service unreachable): stop the run."""


@dataclass(frozen=True)
class Task:
    """One video to score, with everything that keys its result."""

    entry: VideoEntry
    prompt: str | None
    key: str
    video_sha256: str
    geometry_sha256: str | None
    trajectory_sha256: str | None = None


@dataclass
class Scored:
    status: Literal["ok", "failed"]
    result: RewardResult | None = None
    error: dict[str, str] | None = None  # {code, detail}
    output: Any = None  # PipelineOutput (in-process), for full reports; dropped after use
    job_id: str | None = None
    report_html: str | None = None  # a report page drawn by the scorer (a service), if any

    @property
    def cacheable(self) -> bool:
        return self.status == "ok" or (self.error or {}).get("code") in DETERMINISTIC_ERRORS


class InProcessScorer:
    """Scores one video at a time with a warm ``RewardPipeline`` (the ``reward3d score`` path)."""

    source = "in-process"
    full_reports = True  # keeps the PipelineOutput: frames, renders, heat maps, novel views

    def __init__(self, settings: Settings, options: ScoreOptions) -> None:
        self.settings = settings
        self.options = options
        self.uses_known_geometry = settings.geometry_backend == GeometryBackend.ORACLE
        self._pipeline = None

    def fingerprint(self) -> dict[str, Any]:
        import service
        from service.pipeline.device import resolve_device
        from service.pipeline.geometry import resolve_geometry_backend
        from service.pipeline.render import get_renderer, resolve_renderer_backend

        device = resolve_device(self.settings.device)
        # The renderer's version, not just its name: a renderer change re-scores stored videos.
        try:
            renderer = get_renderer(self.settings.renderer, device_type=device.type).versions()["renderer"]
        except (ImportError, RuntimeError):  # unusable here: prepare() says so
            renderer = resolve_renderer_backend(self.settings.renderer, device.type).value
        return {
            "reward3d": service.__version__,
            "reward_spec": service.REWARD_SPEC_VERSION,
            "geometry": resolve_geometry_backend(self.settings).value,
            "renderer": renderer,
            "settings": {name: getattr(self.settings, name) for name in SCORING_SETTINGS},
            "options": self.options.model_dump(mode="json", exclude_none=True),
        }

    def prepare(self) -> None:
        """Build the pipeline and its geometry model now, so a missing backend stops the run
        before any video rather than failing every one of them."""
        from service.pipeline import RewardPipeline

        try:
            self._pipeline = RewardPipeline(self.settings)
            if not self.uses_known_geometry:
                self._pipeline.geometry_model()
        except (ImportError, RuntimeError) as exc:
            raise EvaluationSetupError(f"cannot build the scoring pipeline: {exc}") from None

    def score_all(self, tasks: Iterable[Task]) -> Iterator[tuple[Task, Scored]]:
        if self._pipeline is None:
            self.prepare()
        for task in tasks:
            yield task, self.score(task)

    def fetch_report(self, record: dict) -> str | None:
        return None  # pages are drawn here, from a fresh score (renders are not stored)

    def score(self, task: Task) -> Scored:
        from service.inputs import InputFileError, load_trajectory_file
        from service.pipeline.geometry.oracle import load_geometry_file
        from service.pipeline.types import PipelineInputError

        try:
            trajectory = None
            if task.entry.trajectory_path is not None:
                trajectory = load_trajectory_file(task.entry.trajectory_path)
            arrays = None
            if self.uses_known_geometry:
                if task.entry.geometry_path is None:
                    raise PipelineInputError(
                        f"--geometry oracle needs {task.entry.path.name}'s known geometry in "
                        f"a file NAME.geometry.npz next to it"
                    )
                arrays = load_geometry_file(task.entry.geometry_path)
            output = self._pipeline.run(task.entry.path, prompt=task.prompt, trajectory=trajectory,
                                        options=self.options, geometry_arrays=arrays)  # fmt: skip
        except (PipelineInputError, InputFileError) as exc:
            return Scored("failed", error={"code": "invalid_input", "detail": str(exc)})
        except Exception as exc:  # noqa: BLE001  (one broken video must not stop a long run)
            return Scored("failed", error={"code": "internal_error",
                                           "detail": f"{type(exc).__name__}: {exc}"})  # fmt: skip
        return Scored("ok", result=output.result, output=output)

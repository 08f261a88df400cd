"""The reward, top to bottom: decode -> geometry -> gaussians -> render -> terms -> combine.

``RewardPipeline`` holds what is expensive to build (geometry model, renderer, VLM) and is
reused across videos: a worker builds one and keeps it warm. ``pipeline(video, ...)`` returns a
``RewardResult``; ``pipeline.run(...)`` also returns the intermediate tensors (for reports and
``--save-renders``).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

import service
from service.pipeline.combine import combine_terms
from service.pipeline.decode import load_video
from service.pipeline.device import resolve_device
from service.pipeline.gaussians import lift_gaussians
from service.pipeline.geometry import get_geometry, resolve_geometry_backend
from service.pipeline.render import get_renderer
from service.pipeline.render.held_out import HeldOutRenders, render_held_out
from service.pipeline.terms.reconstruction import reconstruction_term
from service.pipeline.terms.trajectory import (
    TargetPath,
    not_applicable,
    smoothness_term,
    target_from_request,
    trajectory_term,
)
from service.pipeline.types import Geometry, GeometryError, Video
from service.schemas import (
    TERM_NAMES,
    GeometrySummary,
    RewardResult,
    ScoreOptions,
    TermResult,
    TermStatus,
    TrajectoryTarget,
    Versions,
)
from service.settings import GeometryBackend, Settings, get_settings

VideoSource = str | Path | np.ndarray | torch.Tensor
GEOMETRY_TERMS = ("reconstruction", "trajectory", "plausibility")  # terms that need step 2


@dataclass
class PipelineOutput:
    """Everything a report needs; ``result`` is what the API returns."""

    result: RewardResult
    video: Video
    geometry: Geometry | None = None
    held_out: HeldOutRenders | None = None
    target: TargetPath | None = None
    extras: dict[str, Any] = field(default_factory=dict)  # e.g. novel views shown to the VLM


class RewardPipeline:
    def __init__(self, settings: Settings | None = None) -> None:
        self.settings = settings or get_settings()
        self.device = resolve_device(self.settings.device)
        self.renderer = get_renderer(self.settings.renderer, device_type=self.device.type)
        self._geometry_models: dict[GeometryBackend, Any] = {}
        self._judge = None  # the VLM (plausibility, quality), loaded on first use

    # -- set-up -----------------------------------------------------------------------------
    def geometry_model(self, backend: GeometryBackend | None = None):
        """The geometry backend (built once, then reused)."""
        backend = backend or resolve_geometry_backend(self.settings)
        if backend not in self._geometry_models:
            self._geometry_models[backend] = get_geometry(backend, settings=self.settings)
        return self._geometry_models[backend]

    def judge(self):
        """The VLM shared by plausibility and quality (loaded once, on first use)."""
        if self._judge is None:
            from service.pipeline.terms.vlm_judge import VLMJudge

            self._judge = VLMJudge.load(self.settings.vlm_model, device=self.device)
        return self._judge

    def usable_terms(self) -> list[str]:
        """Terms computed when a request names none."""
        settings = self.settings
        terms = ["reconstruction", "trajectory"]
        if settings.vlm_model:
            terms.append("plausibility")
        if (
            (settings.quality_backend == "vlm" and settings.vlm_model)
            or (settings.quality_backend == "preference" and settings.quality_model)
            or settings.quality_backend == "brightness"
        ):
            terms.append("quality")
        return terms

    def warm_up(self) -> None:
        """Load models and run a tiny clip through every stage, so the first request is fast."""
        rng = np.random.default_rng(0)
        base = rng.integers(0, 255, size=(48, 80, 3), dtype=np.uint8)
        clip = np.stack([np.roll(base, shift=2 * i, axis=1) for i in range(4)])
        self(clip, options=ScoreOptions(max_frames=4, long_side=80))

    # -- the reward -------------------------------------------------------------------------
    def __call__(self, video: VideoSource, **kwargs) -> RewardResult:
        return self.run(video, **kwargs).result

    def run(
        self,
        video: VideoSource,
        *,
        prompt: str | None = None,
        trajectory: TrajectoryTarget | None = None,
        options: ScoreOptions | None = None,
        geometry_arrays: dict[str, np.ndarray] | None = None,
        on_stage: Callable[[str], None] | None = None,
    ) -> PipelineOutput:
        """Score one video. ``on_stage(name)`` is called as each stage starts (progress bars)."""
        options = options or ScoreOptions()
        settings = self.settings
        terms_wanted = list(options.terms) if options.terms else self.usable_terms()
        weights = {**settings.default_weights(), **(options.weights or {})}
        timings: dict[str, float] = {}
        clock = _Stopwatch(timings, on_stage)

        # The geometry model (built once) is chosen first: one that wants its own input size
        # gets the source frames resized once to it at decode.
        model = None
        if geometry_arrays is not None:
            model = get_geometry(GeometryBackend.ORACLE, settings=settings, arrays=geometry_arrays)
        elif set(terms_wanted) & set(GEOMETRY_TERMS):
            model = self.geometry_model()

        # 1. Decode: sample frames over the whole clip, resize to the working resolution.
        with clock("decode"):
            clip = load_video(
                video,
                max_frames=options.max_frames or settings.max_frames,
                long_side=options.long_side or settings.long_side,
                frame_stride=options.frame_stride or settings.frame_stride,
                geometry_size=getattr(model, "input_size", None),
            )
            target = target_from_request(
                prompt=prompt, trajectory=trajectory, times=clip.normalized_times
            )

        # 2. Geometry: depth, confidence and cameras per frame (skipped when no wanted term
        #    needs it, e.g. the trainer's quality-only dynamic phase).
        geometry, geometry_error = None, None
        with clock("geometry"):
            try:
                geometry = model.predict(clip) if model is not None else None
            except GeometryError as exc:
                geometry_error = str(exc)

        # 3. Gaussians: the geometry model's own (DA3 Gaussian head) when it has them, else
        #    lift every registered frame's pixels to 3D.
        gaussians = None
        with clock("gaussians"):
            if geometry is not None and geometry.gaussians is not None:
                gaussians = geometry.gaussians.to(self.device)
            elif geometry is not None:
                gaussians = lift_gaussians(
                    clip.frames,
                    geometry,
                    max_gaussians=settings.max_gaussians,
                    footprint_scale=settings.footprint_scale,
                ).to(self.device)

        # 4. Render: each frame from its neighbours' Gaussians, at its own pose.
        held_out = None
        with clock("render"):
            if gaussians is not None and "reconstruction" in terms_wanted:
                held_out = render_held_out(
                    gaussians, geometry, self.renderer, frames=clip.frames,
                    neighbours=settings.neighbours,
                )  # fmt: skip

        # 5. Terms.
        terms: dict[str, TermResult] = {}
        extras: dict[str, Any] = {}
        with clock("terms"):
            for name in TERM_NAMES:
                if name not in terms_wanted:
                    continue
                terms[name] = self._term(name, clip, geometry, geometry_error, held_out,
                                         gaussians, target, prompt, extras)  # fmt: skip

        # 6. Combine.
        total, used = combine_terms(terms, weights)
        timings["total"] = sum(timings.values())
        result = RewardResult(
            total=total,
            total_terms=used,
            weights={name: weights[name] for name in terms},
            terms=terms,
            geometry=_summary(geometry, clip) if geometry is not None else None,
            timings_ms=timings,
            versions=self.versions(model),
        )
        return PipelineOutput(result, clip, geometry, held_out, target, extras)

    def _term(self, name, clip, geometry, geometry_error, held_out, gaussians, target, prompt,
              extras) -> TermResult:  # fmt: skip
        needs_geometry = name in GEOMETRY_TERMS
        no_path = name == "trajectory" and target is None
        if no_path and self.settings.trajectory_without_target == "not_applicable":
            return not_applicable()
        if needs_geometry and geometry is None:
            return TermResult(status=TermStatus.FAILED,
                              reason=f"geometry could not be estimated: {geometry_error}")
        if no_path:
            return smoothness_term(geometry)
        if name == "reconstruction":
            return reconstruction_term(clip.frames, geometry, held_out, lpips=self._lpips())
        if name == "trajectory":
            return trajectory_term(geometry, target)
        return self._judge_term(name, clip, geometry, gaussians, prompt, extras)

    def _lpips(self):
        """LPIPS from local weights when configured (GPU issue); None otherwise."""
        if self.settings.lpips_weights is None:
            return None
        from service.pipeline.terms.lpips import load_lpips

        if not hasattr(self, "_lpips_fn"):
            self._lpips_fn = load_lpips(self.settings.lpips_weights, device=self.device)
        return self._lpips_fn

    def _judge_term(self, name, clip, geometry, gaussians, prompt, extras) -> TermResult:
        uses_vlm = name == "plausibility" or self.settings.quality_backend == "vlm"
        if uses_vlm and not self.settings.vlm_model:
            return TermResult(
                status=TermStatus.FAILED,
                reason=f"the {name} term needs a VLM: set REWARD3D_VLM_MODEL "
                "(a Qwen3-VL hub id or local directory)",
            )
        if name == "plausibility":
            from service.pipeline.terms.plausibility import plausibility_term

            return plausibility_term(self, clip, geometry, gaussians, extras=extras)
        from service.pipeline.terms.quality import quality_term

        return quality_term(self, clip, prompt=prompt, extras=extras)

    def versions(self, geometry_model=None) -> Versions:
        backends = dict(self.renderer.versions())
        if geometry_model is not None:
            backends.update(geometry_model.versions())
        if self._judge is not None:
            backends.update(self._judge.versions())
        return Versions(
            reward3d=service.__version__,
            reward_spec=service.REWARD_SPEC_VERSION,
            backends=backends,
        )


class _Stopwatch:
    """``with clock("stage"):`` adds the stage's wall time (ms) to ``timings``."""

    def __init__(self, timings: dict[str, float], on_stage: Callable[[str], None] | None) -> None:
        self.timings = timings
        self.on_stage = on_stage
        self._stage = ""

    def __call__(self, stage: str) -> "_Stopwatch":
        self._stage = stage
        if self.on_stage is not None:
            self.on_stage(stage)
        return self

    def __enter__(self) -> None:
        self._start = time.perf_counter()

    def __exit__(self, *exc) -> None:
        elapsed = (time.perf_counter() - self._start) * 1000
        self.timings[self._stage] = self.timings.get(self._stage, 0.0) + elapsed


def _summary(geometry: Geometry, clip: Video) -> GeometrySummary:
    return GeometrySummary(
        backend=geometry.backend,
        num_frames=geometry.num_frames,
        height=clip.height,
        width=clip.width,
        source_frame_indices=clip.source_indices,
        world_to_camera=geometry.world_to_camera.tolist(),
        intrinsics=geometry.intrinsics.tolist(),
        registered=[bool(r) for r in geometry.registered],
        diagnostics=dict(geometry.diagnostics),
    )

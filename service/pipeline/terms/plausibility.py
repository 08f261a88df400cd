"""Term `plausibility`: does the reconstruction look like one solid 3D scene from nearby
viewpoints it was not filmed from?

1. K novel cameras off the estimated path (render/novel_views.py: interpolated, slightly
   extrapolated, a small orbit around the scene centre), at the working resolution;
2. the Gaussians rendered there (all of them: these are new views, nothing is held out);
3. the VLM judge scores each view with the `plausibility` rubric (rubrics.yaml): expectation
   over the digit tokens of one forward pass, in [0,1];
4. score = mean over the views. Per-view scores, their names, the labels' probability mass
   and the views' coverage are in the metrics; the rendered views go to ``extras`` so reports
   can show what the judge saw.
"""

from __future__ import annotations

from typing import Any

import torch

from service.pipeline.render.novel_views import novel_views, scene_centre
from service.pipeline.terms.vlm_judge import JudgeError, load_rubrics, score_views_per_video
from service.pipeline.types import Gaussians, Geometry, Video
from service.schemas import TermResult, TermStatus

RUBRIC = "plausibility"


def plausibility_term(
    pipeline,  # RewardPipeline: its renderer, settings and (lazily loaded) judge
    clip: Video,
    geometry: Geometry,
    gaussians: Gaussians | None,
    *,
    extras: dict[str, Any],
) -> TermResult:
    if gaussians is None or gaussians.num_gaussians == 0:
        return TermResult(status=TermStatus.FAILED, reason="no Gaussians to render novel views from")
    rubric = load_rubrics()[RUBRIC]
    settings = pipeline.settings

    # 1. Novel cameras.
    centre = scene_centre(geometry.depth, geometry.confidence, geometry.world_to_camera,
                          geometry.intrinsics)  # fmt: skip
    views = novel_views(geometry.world_to_camera, geometry.intrinsics, centre,
                        count=settings.novel_views)  # fmt: skip

    # 2. Render them.
    device = gaussians.means.device
    rendered = pipeline.renderer.render(
        gaussians,
        world_to_camera=torch.stack([v.world_to_camera for v in views]).to(device),
        intrinsics=torch.stack([v.intrinsics for v in views]).to(device),
        width=clip.width,
        height=clip.height,
    )
    images = rendered.rgb.float().clamp(0, 1).cpu()  # [V,H,W,3]
    coverage = (rendered.alpha > 0.5).float().mean(dim=(1, 2)).cpu()  # [V]

    # 3. Judge them.
    try:
        judge = pipeline.judge()
        (judged,) = score_views_per_video(judge, [images], rubric,
                                          batch_size=settings.vlm_batch_size)  # fmt: skip
    except JudgeError as exc:
        return TermResult(status=TermStatus.FAILED, reason=f"VLM judge unusable: {exc}")

    extras["novel_views"] = {
        "names": [v.name for v in views],
        "rgb": images,
        "alpha": rendered.alpha.float().cpu(),
        "world_to_camera": torch.stack([v.world_to_camera for v in views]),
        "intrinsics": torch.stack([v.intrinsics for v in views]),
        "scores": judged.scores,
    }
    # 4. Combine.
    score = sum(judged.scores) / len(judged.scores)
    return TermResult(
        score=min(1.0, max(0.0, score)),
        status=TermStatus.OK,
        metrics={
            "rubric": rubric.tag,
            "views": ",".join(v.name for v in views),
            "view_scores": [round(s, 6) for s in judged.scores],
            "label_mass": sum(judged.label_mass) / len(judged.label_mass),
            "view_coverage": [round(float(c), 6) for c in coverage],
        },
    )

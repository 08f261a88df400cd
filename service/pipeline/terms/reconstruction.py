"""Term `reconstruction`: do held-out frames re-render from the rest of the clip?

Protocol (render/held_out.py): frame t is rendered at its own estimated pose from Gaussians
lifted from its nearest frames, never from its own pixels. Per frame, on the covered pixels
(alpha > 0.5):

    psnr_score  = clip((PSNR - 12 dB) / 24 dB, 0, 1)       # 12 dB -> 0, 36 dB -> 1
    ssim_score  = clip(SSIM, 0, 1)
    lpips_score = clip(1 - LPIPS, 0, 1)                     # only when LPIPS weights are given
    similarity  = mean of the scores above
    frame_score = coverage * similarity * detail_factor

    coverage      = covered pixels / all pixels  (uncovered pixels count as errors: a score
                    that looked at covered pixels alone could be fooled by breaking geometry)
    detail_factor = min(1, image detail / 0.01)   (a blank frame re-renders perfectly and
                    proves nothing; see metrics.image_detail)

Frames that carry no evidence score 0: unregistered frames (no pose) and frozen frames (exact
copies of the previous frame: a frozen video is not rewarded). The term is the mean over all
frames, in [0,1]. Brightness flicker is deliberately *not* compensated: exposure jumps are an
inconsistency of generated video we want to penalise.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

from service.pipeline.render.held_out import HeldOutRenders
from service.pipeline.terms.metrics import image_detail, masked_psnr, masked_ssim
from service.pipeline.types import Geometry
from service.schemas import TermResult, TermStatus

COVERED_ALPHA = 0.5
PSNR_FLOOR_DB = 12.0
PSNR_RANGE_DB = 24.0
DETAIL_MIN = 0.01

# (rendered [H,W,3], target [H,W,3]) -> LPIPS distance (lower is better)
LpipsFn = Callable[[Tensor, Tensor], float]


def psnr_to_score(psnr_db: float) -> float:
    if math.isnan(psnr_db):
        return 0.0
    return min(1.0, max(0.0, (psnr_db - PSNR_FLOOR_DB) / PSNR_RANGE_DB))


def reconstruction_term(
    frames: Tensor,  # [T,H,W,3] in [0,1]
    geometry: Geometry,
    held_out: HeldOutRenders,
    *,
    lpips: LpipsFn | None = None,
) -> TermResult:
    num_frames = frames.shape[0]
    renders = held_out.renders
    frame_scores, psnrs, ssims, lpips_values, coverages = [], [], [], [], []
    skipped = {"unregistered": 0, "frozen": 0, "no_neighbours": 0}
    for t in range(num_frames):
        if not bool(geometry.registered[t]):
            skipped["unregistered"] += 1
        elif bool(held_out.duplicate_of_previous[t]):
            skipped["frozen"] += 1
        elif not held_out.neighbours[t]:
            skipped["no_neighbours"] += 1
        else:
            mask = renders.alpha[t] > COVERED_ALPHA
            coverage = float(mask.float().mean())
            psnr = masked_psnr(renders.rgb[t], frames[t], mask)
            ssim = masked_ssim(renders.rgb[t], frames[t], mask)
            scores = [psnr_to_score(psnr), 0.0 if math.isnan(ssim) else min(1.0, max(0.0, ssim))]
            if lpips is not None and coverage > 0:
                # Uncovered pixels are already counted by `coverage`: show LPIPS the frame there.
                filled = torch.where(mask[..., None], renders.rgb[t], frames[t])
                distance = float(lpips(filled, frames[t]))
                lpips_values.append(distance)
                scores.append(min(1.0, max(0.0, 1.0 - distance)))
            detail_factor = min(1.0, image_detail(frames[t]) / DETAIL_MIN)
            frame_scores.append(coverage * sum(scores) / len(scores) * detail_factor)
            coverages.append(coverage)
            if not math.isnan(psnr):
                psnrs.append(psnr)
            if not math.isnan(ssim):
                ssims.append(ssim)
            continue
        frame_scores.append(0.0)

    evaluated = len(coverages)
    metrics: dict = {
        "psnr": _mean(psnrs),
        "ssim": _mean(ssims),
        "coverage": _mean(coverages) if coverages else 0.0,
        "frames_evaluated": evaluated,
        "frames_unregistered": skipped["unregistered"],
        "frames_frozen": skipped["frozen"],
        "frames_without_neighbours": skipped["no_neighbours"],
        "frame_scores": [round(s, 6) for s in frame_scores],
    }
    if lpips is not None:
        metrics["lpips"] = _mean(lpips_values)
    score = float(sum(frame_scores) / num_frames)
    reason = None
    if evaluated == 0:
        reason = (
            f"no frame could be evaluated ({skipped['unregistered']} unregistered, "
            f"{skipped['frozen']} frozen, {skipped['no_neighbours']} without neighbours)"
        )
    elif evaluated < num_frames:
        reason = (
            f"{num_frames - evaluated} of {num_frames} frames scored 0 "
            f"({skipped['unregistered']} unregistered, {skipped['frozen']} frozen)"
        )
    return TermResult(score=min(1.0, max(0.0, score)), status=TermStatus.OK, reason=reason,
                      metrics=metrics)  # fmt: skip


def _mean(values: list[float]) -> float | None:
    return float(sum(values) / len(values)) if values else None

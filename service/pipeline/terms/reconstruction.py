"""Term `reconstruction`: do held-out frames re-render from the rest of the clip?

Protocol (render/held_out.py): frame t is rendered at its own estimated pose from Gaussians
lifted from its nearest frames, never from its own pixels. Per frame, on the covered pixels
(alpha > 0.5):

    psnr_score  = clip((PSNR - 12 dB) / 24 dB, 0, 1)       # 12 dB -> 0, 36 dB -> 1
    ssim_score  = clip(SSIM, 0, 1)
    lpips_score = clip(1 - LPIPS, 0, 1)                     # only when LPIPS weights are given
    similarity  = mean of the scores above
    frame_score = coverage * similarity * detail_factor * evidence

    coverage      = covered pixels / all pixels  (uncovered pixels count as errors: a score
                    that looked at covered pixels alone could be fooled by breaking geometry)
    detail_factor = min(1, image detail / 0.01)   (a blank frame re-renders perfectly and
                    proves nothing; see metrics.image_detail)
    evidence      = min(1, depth_parallax / (0.005 * max(H, W)))   (observability of depth)

Evidence: a held-out render tests the estimated depth only if the frames it is rendered from
see the scene with parallax that depth *variation* produces. A camera that turns in place or
stands still re-renders "consistently" with any depth at all, and so does a flat scene (a
picture sliding, zooming or turning): a homography explains such views exactly. Such frames
are no 3D evidence and must not be rewarded as such (else a policy learns to stop moving the
camera, or to slide flat pictures). ``depth_parallax`` is the plane + parallax residual of
evidence.py: the mean displacement, in pixels of neighbour s, of frame t's pixels that the best
homography between the two views cannot explain (less a noise floor of 2 % of the baseline
parallax), averaged over the neighbours that render frame t. It is computed from the geometry itself
(poses, intrinsics, depth), so every backend is judged alike. Full evidence needs 0.5 % of the image's longer side (2.2 px at 448 px); less
scales the frame down. ``parallax_px`` (relative to infinity: what translation alone does) is
reported beside it.

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

from service.pipeline.evidence import DEPTH_PARALLAX_FULL, frame_parallax
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
    parallaxes, depth_parallaxes, evidences = [], [], []
    skipped = {"unregistered": 0, "frozen": 0, "no_neighbours": 0}
    parallax_full_px = DEPTH_PARALLAX_FULL * max(frames.shape[1], frames.shape[2])
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
            known = held_out.parallax[t] if held_out.parallax else {}  # measured by the partner search
            if all(s in known for s in held_out.neighbours[t]):
                pairs = [known[s] for s in held_out.neighbours[t]]
            else:
                parallax_from = frame_parallax(geometry, t)
                pairs = [known[s] if s in known else parallax_from(s) for s in held_out.neighbours[t]]
            parallax = sum(p.baseline_px for p in pairs) / len(pairs)
            depth_parallax = sum(p.evidence_px for p in pairs) / len(pairs)
            evidence = min(1.0, depth_parallax / parallax_full_px)
            frame_scores.append(coverage * sum(scores) / len(scores) * detail_factor * evidence)
            coverages.append(coverage)
            parallaxes.append(parallax)
            depth_parallaxes.append(depth_parallax)
            evidences.append(evidence)
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
        "parallax_px": _median(parallaxes),
        "depth_parallax_px": _median(depth_parallaxes),
        "evidence": _mean(evidences),
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
    weak = sum(e < 0.5 for e in evidences)
    if weak:
        note = (
            f"{weak} of {evaluated} evaluated frames see too little depth parallax (under half "
            f"of the {parallax_full_px:.3g} px that earn full credit; median over all frames "
            f"{_median(depth_parallaxes):.2g} px): a homography explains their views (a flat "
            "scene, or a camera that barely translates), so depth is unobservable and those "
            "frames are not 3D evidence"
        )
        reason = f"{reason}; {note}" if reason else note
    return TermResult(score=min(1.0, max(0.0, score)), status=TermStatus.OK, reason=reason,
                      metrics=metrics)  # fmt: skip


def frame_parallax_px(geometry: Geometry, frame: int, neighbours: list[int]) -> float:
    """Translation parallax of ``frame`` seen from ``neighbours``, in pixels: the mean over the
    neighbours of evidence.PairParallax ``baseline_px`` (the median distance between where a
    pixel lands at its depth and at infinite depth). 0 for a camera that does not translate."""
    if not neighbours:
        return 0.0
    parallax_from = frame_parallax(geometry, frame)
    return sum(parallax_from(other).baseline_px for other in neighbours) / len(neighbours)


def _mean(values: list[float]) -> float | None:
    return float(sum(values) / len(values)) if values else None


def _median(values: list[float]) -> float | None:
    return float(torch.tensor(values, dtype=torch.float64).median()) if values else None

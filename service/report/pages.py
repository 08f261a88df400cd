"""Build the report pages: collect what a score saw into plain values, render Jinja2 templates.

A video page is built from a ``RewardResult`` and, when the video was scored in this process,
its ``PipelineOutput`` (frames, held-out renders, geometry, the target path, the VLM's novel
views). With the result alone (e.g. a result from a service) the page shows the terms and the
estimated camera path, and says what it cannot show.

Sections of a video page: the total and the terms (score, status, reason, metrics); each frame
beside its held-out re-render and the error heat map, with its coverage, PSNR and frame score;
the camera path (a static plot, plus an interactive 3D view drawn by a small inline script);
the novel views the VLM judged, with their scores; geometry, timings and versions.
"""

from __future__ import annotations

import base64
import io
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from service.schemas import TERM_NAMES, RewardResult, TermStatus

TEMPLATES = Path(__file__).parent / "templates"
JPEG_QUALITY = 85
ERROR_SCALE = 0.25  # heat map saturates at this mean absolute error (as artifacts.error_heatmap)


def _environment():
    from jinja2 import Environment, FileSystemLoader, StrictUndefined

    # autoescape=True for every template: prompts, names and reasons are user text.
    environment = Environment(loader=FileSystemLoader(TEMPLATES), autoescape=True,
                              undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True)  # fmt: skip
    environment.filters["number"] = format_number
    return environment


def format_number(value: Any, digits: int = 3) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "-"
        return f"{value:.{digits}f}" if abs(value) < 1e4 else f"{value:.4g}"
    if isinstance(value, list):
        shown = ", ".join(format_number(v, 2) for v in value[:24])
        return f"[{shown}{', ...' if len(value) > 24 else ''}]"
    return str(value)


# -- images ------------------------------------------------------------------------------------
def data_uri(image: np.ndarray, *, fmt: str = "JPEG") -> str:
    """``image`` [H,W,3] uint8 -> ``data:image/...;base64,...``."""
    from PIL import Image

    buffer = io.BytesIO()
    options = {"quality": JPEG_QUALITY} if fmt == "JPEG" else {"optimize": True}
    Image.fromarray(image).save(buffer, format=fmt, **options)
    mime = "image/jpeg" if fmt == "JPEG" else "image/png"
    return f"data:{mime};base64,{base64.b64encode(buffer.getvalue()).decode('ascii')}"


def png_uri(png_bytes: bytes) -> str:
    return f"data:image/png;base64,{base64.b64encode(png_bytes).decode('ascii')}"


# -- camera paths ------------------------------------------------------------------------------
def camera_paths(
    world_to_camera: np.ndarray,  # [T,4,4] estimated, OpenCV axes
    registered: np.ndarray,  # [T] bool
    target_camera_to_world: np.ndarray | None = None,  # [T,4,4] requested, OpenCV axes
) -> dict[str, Any]:
    """Estimated and requested camera centres and viewing directions, for display.

    Both paths are expressed in their first registered camera's frame (x right, y down,
    z forward), as the trajectory term compares them; the estimate is scaled to the requested
    path's length (display only: the estimate's scale is arbitrary). Returns ``{"frames": [k],
    "estimated": {"centres": [k,3], "forward": [k,3]}, "target": same or None, "scale": how the
    estimate was scaled}`` as lists.
    """
    frames = np.flatnonzero(np.asarray(registered, dtype=bool))
    if frames.size == 0:
        return {"frames": [], "estimated": {"centres": [], "forward": []}, "target": None,
                "scale": ""}
    camera_to_world = np.linalg.inv(np.asarray(world_to_camera, dtype=np.float64)[frames])
    estimated = _relative_to_first(camera_to_world)
    target, scale = None, "estimate in the geometry's units"
    est_length = _path_length(estimated)
    if target_camera_to_world is not None:
        target = _relative_to_first(np.asarray(target_camera_to_world, np.float64)[frames])
        tgt_length = _path_length(target)
        if est_length > 1e-12 and tgt_length > 1e-12:
            estimated[:, :3, 3] *= tgt_length / est_length
            scale = "estimate scaled to the requested length"
    elif est_length > 1e-12:  # no target: unit path length, so the view has a sensible size
        estimated[:, :3, 3] /= est_length
        scale = "estimate scaled to unit path length"

    def pack(poses):
        return {"centres": np.round(poses[:, :3, 3], 5).tolist(),
                "forward": np.round(poses[:, :3, 2], 5).tolist()}  # fmt: skip

    return {"frames": frames.tolist(), "estimated": pack(estimated), "scale": scale,
            "target": None if target is None else pack(target)}  # fmt: skip


def _relative_to_first(camera_to_world: np.ndarray) -> np.ndarray:  # [T,4,4] -> [T,4,4]
    return np.linalg.inv(camera_to_world[0])[None] @ camera_to_world


def _path_length(poses: np.ndarray) -> float:  # [T,4,4]
    return float(np.linalg.norm(np.diff(poses[:, :3, 3], axis=0), axis=-1).sum())


def path_plot_uri(paths: dict[str, Any], score: float | None) -> str | None:
    from service.pipeline.artifacts import plot_camera_paths

    if not paths["frames"]:
        return None
    target = paths["target"]
    buffer = io.BytesIO()
    plot_camera_paths(np.array(paths["estimated"]["centres"]),
                      None if target is None else np.array(target["centres"]), buffer,
                      score=score, scale_note=paths["scale"])  # fmt: skip
    return png_uri(buffer.getvalue())


# -- the video page ----------------------------------------------------------------------------
def video_page(
    result: RewardResult | None,
    *,
    name: str,
    output=None,  # PipelineOutput of this result, when scored in this process
    prompt: str | None = None,
    group: str | None = None,
    error: dict[str, str] | None = None,  # {code, detail} when the video could not be scored
    index_href: str | None = None,
    key: str | None = None,
) -> str:
    """One video's report as a self-contained HTML page."""
    context: dict[str, Any] = {
        "name": name, "group": group, "prompt": prompt, "error": error, "key": key,
        "index_href": index_href, "result": None, "terms": [], "frames": [], "strip": [],
        "path": None, "novel_views": [], "geometry": None, "timings": {}, "versions": {},
        "full": output is not None, "notes": [],
    }  # fmt: skip
    if result is not None:
        context.update(_result_context(result))
        context["path"] = _path_context(result, output, prompt)
    if output is not None:
        context["frames"], context["strip"] = _frames_context(output, result)
        context["novel_views"] = _novel_views_context(output)
    elif result is not None:
        context["notes"].append(
            "Scored elsewhere (e.g. by a service): frames, re-renders and novel views are not "
            "available here; rescore in-process with --report to see them."
        )
    return _environment().get_template("video.html.jinja").render(**context)


def _result_context(result: RewardResult) -> dict[str, Any]:
    terms = []
    for name in TERM_NAMES:
        term = result.terms.get(name)
        if term is None:
            continue
        metrics = [(key, format_number(value)) for key, value in term.metrics.items()]
        terms.append({
            "name": name, "status": term.status.value, "score": term.score,
            "reason": term.reason, "metrics": metrics,
            "weight": result.weights.get(name), "in_total": name in result.total_terms,
        })  # fmt: skip
    geometry = None
    if result.geometry is not None:
        g = result.geometry
        geometry = {"backend": g.backend, "frames": g.num_frames, "size": f"{g.width} x {g.height}",
                    "registered": sum(g.registered),
                    "diagnostics": [(k, format_number(v)) for k, v in g.diagnostics.items()]}  # fmt: skip
    return {
        "result": {"total": result.total, "total_terms": result.total_terms},
        "terms": terms,
        "geometry": geometry,
        "timings": {k: f"{v:.0f} ms" for k, v in result.timings_ms.items()},
        "versions": {"reward3d": result.versions.reward3d,
                     "reward spec": result.versions.reward_spec, **result.versions.backends},
    }  # fmt: skip


def _path_context(result: RewardResult, output, prompt: str | None) -> dict[str, Any] | None:
    if result.geometry is None:
        return None
    world_to_camera = np.array(result.geometry.world_to_camera)
    registered = np.array(result.geometry.registered, dtype=bool)
    target, target_note = None, None
    if output is not None and output.target is not None:
        target = output.target.camera_to_world.numpy()
        target_note = output.target.description
    elif output is None and prompt:
        target, target_note = _target_from_prompt(prompt, result.geometry.source_frame_indices)
    paths = camera_paths(world_to_camera, registered, target)
    term = result.terms.get("trajectory")
    score = term.score if term is not None else None
    return {
        "plot": path_plot_uri(paths, score),
        "data": paths,
        "target_note": target_note,
        "registered": int(registered.sum()),
        "frames": int(registered.size),
    }


def _target_from_prompt(prompt: str, source_indices: list[int]):
    """The requested path from the prompt's camera words, at the frames' times (approximated
    from the sampled indices: the sampler keeps the first and last frames)."""
    import torch

    from service.pipeline.terms.trajectory import target_from_request

    last = max(source_indices[-1], 1)
    times = torch.tensor(source_indices, dtype=torch.float64) / last
    target = target_from_request(prompt=prompt, trajectory=None, times=times)
    if target is None:
        return None, None
    return target.camera_to_world.numpy(), target.description


def _frames_context(output, result: RewardResult | None) -> tuple[list[dict], list[dict]]:
    """Per frame: input, held-out render, error heat map and numbers; or just the inputs
    (``strip``) when nothing was re-rendered."""
    from service.pipeline.artifacts import error_heatmap, to_uint8
    from service.pipeline.terms.metrics import masked_psnr

    frames = output.video.frames  # [T,H,W,3]
    held_out = output.held_out
    if held_out is None:
        return [], [{"index": t, "source": output.video.source_indices[t],
                     "input": data_uri(to_uint8(frames[t]))} for t in range(frames.shape[0])]  # fmt: skip
    recon = result.terms.get("reconstruction") if result is not None else None
    frame_scores = (recon.metrics.get("frame_scores") if recon is not None else None) or []
    renders = held_out.renders
    rows = []
    for t in range(frames.shape[0]):
        covered = renders.alpha[t] > 0.5
        coverage = float(covered.float().mean())
        note = None
        if output.geometry is not None and not bool(output.geometry.registered[t]):
            note = "no pose (unregistered): scores 0"
        elif bool(held_out.duplicate_of_previous[t]):
            note = "copy of the previous frame (frozen): scores 0"
        elif not held_out.neighbours[t]:
            note = "no neighbour to render from: scores 0"
        rows.append({
            "index": t,
            "source": output.video.source_indices[t],
            "input": data_uri(to_uint8(frames[t])),
            "render": data_uri(to_uint8(renders.rgb[t])),
            "error": data_uri(error_heatmap(renders.rgb[t], frames[t], renders.alpha[t])),
            "coverage": coverage,
            "psnr": masked_psnr(renders.rgb[t], frames[t], covered) if coverage > 0 else None,
            "score": frame_scores[t] if t < len(frame_scores) else None,
            "neighbours": held_out.neighbours[t],
            "note": note,
        })  # fmt: skip
    return rows, []


def _novel_views_context(output) -> list[dict]:
    from service.pipeline.artifacts import to_uint8

    novel = output.extras.get("novel_views")
    if not novel:
        return []
    views = []
    for i, (name, image, score) in enumerate(zip(novel["names"], novel["rgb"], novel["scores"])):
        alpha = novel.get("alpha")
        coverage = float((alpha[i] > 0.5).float().mean()) if alpha is not None else None
        views.append({"name": name, "image": data_uri(to_uint8(image)), "score": score,
                      "coverage": coverage})  # fmt: skip
    return views


# -- the index page ----------------------------------------------------------------------------
@dataclass(frozen=True)
class IndexEntry:
    group: str
    name: str
    href: str | None  # the video's page, relative to the index; None when not written
    status: str  # ok | failed
    total: float | None
    scores: dict[str, float | None]  # term -> score
    error: str | None = None


def index_page(summary, videos: list[IndexEntry], *, title: str = "reward3d evaluation") -> str:
    """The run's index: summary table with intervals, comparisons, and every video."""
    from service.evaluation.tables import verdict

    terms = [t for t in TERM_NAMES if any(v.scores.get(t) is not None for v in videos)]
    return _environment().get_template("index.html.jinja").render(
        title=title, summary=summary, videos=videos, terms=terms, verdict=verdict,
        percent=f"{summary.confidence:.0%}" if summary is not None else "95%",
    )  # fmt: skip



def write_video_report(output, directory: str | Path, *, name: str, prompt: str | None = None
                       ) -> Path:  # fmt: skip
    """``reward3d score --report DIR``: DIR/report.html for one in-process score."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "report.html"
    path.write_text(video_page(output.result, output=output, name=name, prompt=prompt),
                    encoding="utf-8")  # fmt: skip
    return path

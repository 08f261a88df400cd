"""Writing what a score saw to disk, only when asked (``--save-renders``, reports).

Side effects live here, at the edge: the pipeline itself never writes files.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from service.pipeline.pipeline import PipelineOutput
from service.pipeline.transforms import invert_rigid, relative_to_first


def to_uint8(image: torch.Tensor | np.ndarray) -> np.ndarray:  # [H,W,3] in [0,1]
    array = image.detach().cpu().numpy() if isinstance(image, torch.Tensor) else image
    return (np.clip(array, 0, 1) * 255 + 0.5).astype(np.uint8)


def error_heatmap(rendered: torch.Tensor, frame: torch.Tensor, alpha: torch.Tensor) -> np.ndarray:
    """[H,W,3] uint8: per-pixel error (black = exact, yellow = large); uncovered pixels blue."""
    import matplotlib

    error = (rendered - frame).abs().mean(-1).clamp(0, 0.25) / 0.25
    colours = matplotlib.colormaps["inferno"](error.cpu().numpy())[..., :3]
    colours[(alpha <= 0.5).cpu().numpy()] = (0.1, 0.2, 0.8)
    return to_uint8(colours)


def save_renders(output: PipelineOutput, directory: str | Path) -> list[Path]:
    """frame_XXX.png: [input | held-out render | error map] per frame, novel_<view>_<score>.png
    (the plausibility judge's views, when it ran), and trajectory.png."""
    from PIL import Image

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    frames = output.video.frames
    if output.held_out is not None:
        renders = output.held_out.renders
        for t in range(frames.shape[0]):
            panel = np.concatenate(
                [
                    to_uint8(frames[t]),
                    to_uint8(renders.rgb[t]),
                    error_heatmap(renders.rgb[t], frames[t], renders.alpha[t]),
                ],
                axis=1,
            )
            path = directory / f"frame_{t:03d}.png"
            Image.fromarray(panel).save(path)
            written.append(path)
    novel = output.extras.get("novel_views")  # what the plausibility judge saw
    if novel is not None:
        for name, image, score in zip(novel["names"], novel["rgb"], novel["scores"]):
            path = directory / f"novel_{name}_{score:.3f}.png"
            Image.fromarray(to_uint8(image)).save(path)
            written.append(path)
    if output.geometry is not None:
        path = directory / "trajectory.png"
        plot_trajectory(output, path)
        written.append(path)
    return written


def trajectory_points(output: PipelineOutput) -> tuple[np.ndarray, np.ndarray | None]:
    """Estimated and target camera centres [T,3], relative to the first registered frame,
    the estimate scaled onto the target's path length (for display only)."""
    geometry = output.geometry
    registered = torch.nonzero(geometry.registered).flatten()
    estimated = relative_to_first(invert_rigid(geometry.world_to_camera[registered]))[:, :3, 3]
    target = None
    if output.target is not None:
        target = relative_to_first(output.target.camera_to_world[registered])[:, :3, 3]
        est_len = float((estimated[1:] - estimated[:-1]).norm(dim=-1).sum())
        tgt_len = float((target[1:] - target[:-1]).norm(dim=-1).sum())
        if est_len > 1e-12 and tgt_len > 1e-12:
            estimated = estimated * (tgt_len / est_len)
        target = target.numpy()
    return estimated.numpy(), target


def plot_trajectory(output: PipelineOutput, path) -> None:
    """Top view (x right, z forward) and side view (z forward, y down) of the camera paths."""
    estimated, target = trajectory_points(output)
    term = output.result.terms.get("trajectory")
    moves = target is not None and float(np.abs(np.diff(target, axis=0)).sum()) > 1e-12
    plot_camera_paths(estimated, target, path, score=None if term is None else term.score,
                      scale_note="estimate scaled to the requested length" if moves
                      else "estimate in the geometry's units")  # fmt: skip


def plot_camera_paths(
    estimated: np.ndarray,  # [T,3] camera centres, first camera's frame
    target: np.ndarray | None,  # [T,3] requested centres, same frame, or None
    path,  # a file path or a binary file object (PNG)
    *,
    score: float | None = None,
    scale_note: str = "estimate scaled to the requested length",
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure = plt.figure(figsize=(12, 3.8), dpi=100)
    axes = [figure.add_subplot(1, 3, 1), figure.add_subplot(1, 3, 2)]
    for ax, (i, j, xlabel, ylabel) in zip(
        axes, [(0, 2, "x (right)", "z (forward)"), (2, 1, "z (forward)", "y (down)")]
    ):
        ax.plot(estimated[:, i], estimated[:, j], "o-", color="tab:blue", ms=3, label="estimated")
        if target is not None:
            ax.plot(target[:, i], target[:, j], "s--", color="tab:orange", ms=3, label="requested")
        ax.plot([0], [0], "k*", ms=9, label="first frame")
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.set_aspect("equal", adjustable="datalim")
        ax.grid(alpha=0.3)
        if j == 1:
            ax.invert_yaxis()
    # A perspective view: x right, z forward (depth axis), y down drawn as up = -y.
    view = figure.add_subplot(1, 3, 3, projection="3d")
    view.plot(estimated[:, 0], estimated[:, 2], -estimated[:, 1], "o-", color="tab:blue", ms=3)
    if target is not None:
        view.plot(target[:, 0], target[:, 2], -target[:, 1], "s--", color="tab:orange", ms=3)
    view.plot([0], [0], [0], "k*", ms=9)
    shown = np.concatenate([estimated, target if target is not None else estimated, np.zeros((1, 3))])
    shown = shown[:, [0, 2, 1]] * np.array([1, 1, -1])  # plotted axes: x, z, -y
    middle = (shown.max(0) + shown.min(0)) / 2
    radius = max(float((shown.max(0) - shown.min(0)).max()) / 2, 1e-6)
    for set_limits, centre in zip((view.set_xlim, view.set_ylim, view.set_zlim), middle):
        set_limits(centre - radius, centre + radius)  # equal scales: a true 3D picture
    view.set_xlabel("x (right)")
    view.set_ylabel("z (forward)")
    view.set_zlabel("-y (up)")
    view.tick_params(labelsize=7)
    axes[0].legend(fontsize=8, loc="best")
    title = f"camera path (first camera's frame; {scale_note})"
    if score is not None:
        title += f"  trajectory score {score:.3f}"
    figure.suptitle(title, fontsize=9)
    figure.tight_layout()
    figure.savefig(path, format="png")
    plt.close(figure)

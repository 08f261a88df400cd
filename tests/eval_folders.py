"""Folders of small synthetic clips for the evaluation tests: a clean folder and a corrupted
twin (same names: the validation harness's corruptions, cycling over families that break 3D
consistency even with exact geometry), each clip with its exact geometry in NAME.geometry.npz
(oracle backend)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from service.synthetic import make_clip
from service.validation.corruptions import corrupt

FAMILIES = ("popping", "elastic", "flicker")  # each changes pixels, not the frame count

# (motion, field of view): distinct clips of the textured room.
CLIPS = [("orbit", 60.0), ("push_in", 60.0), ("move_right", 60.0), ("orbit", 45.0),
         ("push_in", 50.0), ("move_right", 70.0)]  # fmt: skip
PROMPTS = {"orbit": "Camera orbit right around the boxes.", "push_in": "Camera push in.",
           "move_right": "The camera moves right."}  # fmt: skip


def write_folders(root: Path, count: int = len(CLIPS), frames: int = 6) -> tuple[Path, Path]:
    clean, broken = root / "clean", root / "broken"
    clean.mkdir(parents=True, exist_ok=True)
    broken.mkdir(parents=True, exist_ok=True)
    for i, (motion, fov) in enumerate(CLIPS[:count]):
        clip = make_clip(motion, frames, 54, 96, fov_deg=fov, detail=0.5)
        name = f"{motion}_{i}"
        np.save(clean / f"{name}.npy", clip.frames)
        np.save(broken / f"{name}.npy", corrupt(clip.frames, FAMILIES[i % len(FAMILIES)], 2, seed=i))
        for folder in (clean, broken):
            np.savez(folder / f"{name}.geometry.npz", **clip.geometry_arrays())
    return clean, broken


def write_prompts(path: Path, count: int = len(CLIPS)) -> Path:
    import json

    lines = [json.dumps({"name": f"{motion}_{i}", "prompt": PROMPTS[motion]})
             for i, (motion, _) in enumerate(CLIPS[:count])]  # fmt: skip
    path.write_text("\n".join(lines) + "\n")
    return path

"""Camera words in a prompt -> a target camera path (docs/conventions.md, "Camera words").

Only sentences that mention the camera (or "the shot") are read, so "a bird moves left"
in a scene description is not taken as a camera instruction. Motions are found in order of
appearance; the clip's time is split evenly across them; each motion is applied in the
camera's current frame. No camera words -> ``None`` (the trajectory term is then
``not_applicable``, never 0).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import torch
from torch import Tensor

from service.pipeline.transforms import make_rigid, rotation_about_x, rotation_about_y

PAN_DEG = 14.0
TILT_DEG = 10.0
ORBIT_DEG = 24.0
ORBIT_RADIUS = 2.0
STEP = 1.0  # translation per segment, arbitrary units

# Each pattern maps to a motion name. Verb forms: "push in", "pushes in", "pushing in"...
_PATTERNS: list[tuple[str, str]] = [
    (r"\b(?:push(?:es|ing)?|dolly(?:ing)?|dollies|mov(?:e|es|ing)|track(?:s|ing)?)\s+(?:in(?!\s+(?:a|an|the|on|to|from|with|slow|circle|circles|place)\b)|forward|forwards|closer)\b", "push_in"),  # noqa: E501
    (r"\b(?:pull(?:s|ing)?\s+(?:out|back|away)|(?:dolly(?:ing)?|dollies)\s+(?:out|back)|mov(?:e|es|ing)\s+(?:back|backward|backwards|away))\b", "pull_out"),  # noqa: E501
    (r"\b(?:orbit(?:s|ing)?|arc(?:s|ing)?|circl(?:e|es|ing))\s+(?:to\s+the\s+|around\s+to\s+the\s+)?left\b", "orbit_left"),  # noqa: E501
    (r"\b(?:orbit(?:s|ing)?|arc(?:s|ing)?|circl(?:e|es|ing))\s+(?:to\s+the\s+|around\s+to\s+the\s+)?right\b", "orbit_right"),  # noqa: E501
    (r"\bpan(?:s|ning)?\s+(?:to\s+the\s+)?left\b", "pan_left"),
    (r"\bpan(?:s|ning)?\s+(?:to\s+the\s+)?right\b", "pan_right"),
    (r"\btilt(?:s|ing)?\s+up(?:ward|wards)?\b", "tilt_up"),
    (r"\btilt(?:s|ing)?\s+down(?:ward|wards)?\b", "tilt_down"),
    (r"\b(?:mov(?:e|es|ing)|truck(?:s|ing)?|track(?:s|ing)?|slid(?:e|es|ing)|strafe(?:s)?)\s+(?:to\s+the\s+)?left\b", "move_left"),  # noqa: E501
    (r"\b(?:mov(?:e|es|ing)|truck(?:s|ing)?|track(?:s|ing)?|slid(?:e|es|ing)|strafe(?:s)?)\s+(?:to\s+the\s+)?right\b", "move_right"),  # noqa: E501
    (r"\b(?:mov(?:e|es|ing)|pedestal(?:s|ing)?|crane(?:s|ing)?|ris(?:e|es|ing)|boom(?:s|ing)?)\s+up(?:ward|wards)?\b", "move_up"),  # noqa: E501
    (r"\b(?:mov(?:e|es|ing)|pedestal(?:s|ing)?|crane(?:s|ing)?|descend(?:s|ing)?|boom(?:s|ing)?)\s+down(?:ward|wards)?\b", "move_down"),  # noqa: E501
]
_FIXED = re.compile(r"\b(?:fixed|static|still|locked(?:[\s-]off)?|stationary|motionless)\b")
_CAMERA_SENTENCE = re.compile(r"\b(?:camera|the\s+shot)\b")

MOTIONS = (
    "push_in", "pull_out", "move_left", "move_right", "move_up", "move_down",
    "pan_left", "pan_right", "tilt_up", "tilt_down", "orbit_left", "orbit_right", "fixed",
)  # fmt: skip


@dataclass(frozen=True)
class CameraPlan:
    motions: list[str]  # in temporal order, names from MOTIONS
    text: str  # the sentences they were read from

    @property
    def has_translation(self) -> bool:
        return any(m.startswith(("push", "pull", "move", "orbit")) for m in self.motions)

    @property
    def has_rotation(self) -> bool:
        return any(m.startswith(("pan", "tilt", "orbit")) for m in self.motions)


def parse_camera_words(prompt: str | None) -> CameraPlan | None:
    """Motions requested by a prompt, or None when it names no camera motion."""
    if not prompt:
        return None
    sentences = [s for s in re.split(r"(?<=[.!?;])\s+|\n+", prompt.lower()) if s.strip()]
    camera_sentences = [s for s in sentences if _CAMERA_SENTENCE.search(s)]
    found: list[tuple[int, int, str]] = []  # (sentence index, position, motion)
    for number, sentence in enumerate(camera_sentences):
        taken: list[tuple[int, int]] = []
        for pattern, motion in _PATTERNS:
            for match in re.finditer(pattern, sentence):
                span = match.span()
                if any(span[0] < end and start < span[1] for start, end in taken):
                    continue  # an earlier, more specific pattern claimed these words
                taken.append(span)
                found.append((number, span[0], motion))
    if found:
        found.sort()
        return CameraPlan([m for _, _, m in found], " ".join(camera_sentences))
    if any(_FIXED.search(s) for s in camera_sentences):
        return CameraPlan(["fixed"], " ".join(camera_sentences))
    return None


def segment_transform(motion: str, progress: float) -> Tensor:
    """Camera motion within one segment: [4,4] pose of the camera at ``progress`` in [0,1]
    expressed in the segment's starting camera frame (camera_to_start, OpenCV axes)."""
    eye = torch.eye(3, dtype=torch.float64)
    zero = torch.zeros(3, dtype=torch.float64)
    axis = {
        "push_in": (0, 0, 1), "pull_out": (0, 0, -1),
        "move_left": (-1, 0, 0), "move_right": (1, 0, 0),
        "move_up": (0, -1, 0), "move_down": (0, 1, 0),
    }  # fmt: skip
    if motion in axis:
        return make_rigid(eye, torch.tensor(axis[motion], dtype=torch.float64) * STEP * progress)
    if motion in ("pan_left", "pan_right"):
        sign = -1.0 if motion == "pan_left" else 1.0  # +y rotation turns the view towards +x
        return make_rigid(rotation_about_y(math.radians(sign * PAN_DEG * progress)), zero)
    if motion in ("tilt_up", "tilt_down"):
        sign = 1.0 if motion == "tilt_up" else -1.0  # +x rotation turns the view towards -y (up)
        return make_rigid(rotation_about_x(math.radians(sign * TILT_DEG * progress)), zero)
    if motion in ("orbit_left", "orbit_right"):
        # Move along a circle around the point ORBIT_RADIUS ahead, turning to keep it centred:
        # orbiting left moves the camera towards -x and turns it towards +x.
        angle = math.radians((1.0 if motion == "orbit_left" else -1.0) * ORBIT_DEG * progress)
        centre = torch.tensor(
            [-ORBIT_RADIUS * math.sin(angle), 0.0, ORBIT_RADIUS * (1 - math.cos(angle))],
            dtype=torch.float64,
        )
        return make_rigid(rotation_about_y(angle), centre)
    if motion == "fixed":
        return make_rigid(eye, zero)
    raise ValueError(f"unknown camera motion {motion!r}")


def plan_to_path(plan: CameraPlan, times: Tensor) -> Tensor:
    """Target camera_to_world [T,4,4] at normalised times [T] in [0,1] (first camera = identity
    at time 0). Segments share the time evenly and chain in the camera's current frame."""
    count = len(plan.motions)
    starts = [torch.eye(4, dtype=torch.float64)]
    for motion in plan.motions:
        starts.append(starts[-1] @ segment_transform(motion, 1.0))
    poses = []
    for time in times.tolist():
        position = min(max(time, 0.0), 1.0) * count
        index = min(int(position), count - 1)
        progress = position - index
        poses.append(starts[index] @ segment_transform(plan.motions[index], progress))
    return torch.stack(poses)

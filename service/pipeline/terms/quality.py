"""Term `quality`: visual quality of the frames themselves (the trainer's dynamic phase, where
the 3D terms are off and only this one keeps the generator honest).

Pluggable, chosen by ``quality_backend`` (settings):

- ``vlm`` (default): the VLM already loaded for plausibility judges QUALITY_FRAMES frames
  spread over the clip with the `quality` rubric (rubrics.yaml); no second large model in GPU
  memory. The prompt, when given, is shown to the judge.
- ``preference``: an HPS-style image-preference model, i.e. a CLIP dual encoder fine-tuned on
  human preferences, in the transformers ``CLIPModel`` layout (hub id or local directory in
  ``quality_model``: config.json, model.safetensors, tokenizer and preprocessor config; see
  docs/models.md). Score = cosine(image, prompt) mapped linearly from
  [PREFERENCE_COS_LOW, PREFERENCE_COS_HIGH] to [0,1] (HPS v2 scores of real images fall in
  about 0.2-0.3). Needs the prompt: without one the term is `not_applicable`.
- ``brightness``: TEST ONLY, never a measure of quality. The mean brightness of the sampled
  frames, in [0,1]. It exists so that the trainer can be checked end to end against the real
  service with a reward that a few RL steps can visibly move (tests, bench/trainer_*.py).

A new backend is a class with ``name``, ``score(frames, prompt) -> TermResult`` and
``versions()``, added to :func:`get_quality_scorer`.
"""

from __future__ import annotations

import threading
from typing import Any, Protocol

import torch
import torch.nn.functional as F
from torch import Tensor

from service.pipeline.terms.vlm_judge import JudgeError, load_rubrics
from service.pipeline.types import Video
from service.schemas import TermResult, TermStatus

QUALITY_FRAMES = 3
PREFERENCE_COS_LOW = 0.15
PREFERENCE_COS_HIGH = 0.35


class QualityScorer(Protocol):
    name: str

    def score(self, frames: list[Tensor], prompt: str | None) -> TermResult: ...

    def versions(self) -> dict[str, str]: ...


def sample_frame_indices(num_frames: int, count: int = QUALITY_FRAMES) -> list[int]:
    """``count`` indices spread evenly over the clip, ends included, no repeats."""
    if num_frames <= count:
        return list(range(num_frames))
    return sorted({round(i * (num_frames - 1) / (count - 1)) for i in range(count)})


def quality_term(pipeline, clip: Video, *, prompt: str | None, extras: dict[str, Any]) -> TermResult:
    indices = sample_frame_indices(clip.num_frames)
    frames = [clip.frames[i] for i in indices]
    try:
        scorer = get_quality_scorer(pipeline)
        result = scorer.score(frames, prompt)
    except (JudgeError, QualityModelError) as exc:
        return TermResult(status=TermStatus.FAILED, reason=f"quality model unusable: {exc}")
    result.metrics["frames"] = [float(i) for i in indices]
    result.metrics["backend"] = scorer.name
    return result


def get_quality_scorer(pipeline) -> QualityScorer:
    settings = pipeline.settings
    if settings.quality_backend == "vlm":
        return VLMQuality(pipeline)
    if settings.quality_backend == "brightness":
        return BrightnessQuality()
    if settings.quality_backend == "preference":
        if not settings.quality_model:
            raise QualityModelError(
                "quality_backend 'preference' needs REWARD3D_QUALITY_MODEL (a CLIP-layout "
                "preference model: hub id or local directory, see docs/models.md)"
            )
        return PreferenceQuality.load(settings.quality_model, device=pipeline.device)
    raise QualityModelError(f"unknown quality backend {settings.quality_backend!r}")


class QualityModelError(RuntimeError):
    """The image-preference model cannot be loaded."""


class BrightnessQuality:
    """TEST ONLY: mean brightness of the frames (see the module docstring)."""

    name = "brightness"

    def versions(self) -> dict[str, str]:
        return {"quality": "brightness-test-only"}

    def score(self, frames: list[Tensor], prompt: str | None) -> TermResult:
        values = [float(frame.mean()) for frame in frames]
        return TermResult(
            score=min(1.0, max(0.0, sum(values) / len(values))),
            status=TermStatus.OK,
            reason="test-only brightness backend: not a quality measure",
            metrics={"frame_scores": [round(v, 6) for v in values]},
        )


class VLMQuality:
    name = "vlm"

    def __init__(self, pipeline) -> None:
        self.pipeline = pipeline

    def versions(self) -> dict[str, str]:
        return {"quality": f"vlm:{load_rubrics()['quality'].tag}"}

    def score(self, frames: list[Tensor], prompt: str | None) -> TermResult:
        rubric = load_rubrics()["quality"]
        judged = self.pipeline.judge().score(
            frames, rubric, prompts=[prompt] * len(frames),
            batch_size=self.pipeline.settings.vlm_batch_size,
        )  # fmt: skip
        score = sum(judged.scores) / len(judged.scores)
        return TermResult(
            score=min(1.0, max(0.0, score)),
            status=TermStatus.OK,
            metrics={
                "rubric": rubric.tag,
                "frame_scores": [round(s, 6) for s in judged.scores],
                "label_mass": sum(judged.label_mass) / len(judged.label_mass),
            },
        )


class PreferenceQuality:
    """A CLIP-layout image-preference model (HPS v2, PickScore... converted to transformers)."""

    name = "preference"

    def __init__(self, model, tokenizer, image_processor, *, source: str) -> None:
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.image_processor = image_processor
        self.source = source
        self.device = next(model.parameters()).device

    @classmethod
    def load(cls, source: str, *, device: torch.device) -> "PreferenceQuality":
        key = (str(source), str(device))
        with _LOCK:
            if key not in _LOADED:
                _LOADED[key] = cls._load(source, device)
            return _LOADED[key]

    @classmethod
    def _load(cls, source: str, device: torch.device) -> "PreferenceQuality":
        from transformers import AutoTokenizer, CLIPModel
        from transformers.models.clip import CLIPImageProcessorPil

        dtype = torch.float16 if device.type == "cuda" else torch.float32
        try:
            tokenizer = AutoTokenizer.from_pretrained(source)
            image_processor = CLIPImageProcessorPil.from_pretrained(source)
            model = CLIPModel.from_pretrained(source, dtype=dtype)
        except (OSError, ValueError) as exc:
            raise QualityModelError(f"cannot load the preference model {source!r}: {exc}") from None
        model.requires_grad_(False)
        return cls(model.to(device), tokenizer, image_processor, source=str(source))

    def versions(self) -> dict[str, str]:
        return {"quality": f"preference:{self.source}"}

    @torch.inference_mode()
    def score(self, frames: list[Tensor], prompt: str | None) -> TermResult:
        if not prompt:
            return TermResult(
                status=TermStatus.NOT_APPLICABLE,
                reason="the preference model scores image-prompt pairs; the request has no prompt",
            )
        cosines = self.cosines(frames, prompt)
        mapped = [(c - PREFERENCE_COS_LOW) / (PREFERENCE_COS_HIGH - PREFERENCE_COS_LOW) for c in cosines]
        score = sum(min(1.0, max(0.0, m)) for m in mapped) / len(mapped)
        return TermResult(
            score=score,
            status=TermStatus.OK,
            metrics={"cosine": sum(cosines) / len(cosines),
                     "frame_cosines": [round(c, 6) for c in cosines]},  # fmt: skip
        )

    def cosines(self, frames: list[Tensor], prompt: str) -> list[float]:
        """cosine(image embedding, prompt embedding) for each frame [H,W,3] in [0,1]."""
        arrays = [frame.detach().float().clamp(0, 1).cpu().numpy() for frame in frames]
        pixels = self.image_processor(images=arrays, return_tensors="pt", do_rescale=False)
        text = self.tokenizer([prompt], return_tensors="pt", padding=True, truncation=True,
                              max_length=getattr(self.model.config.text_config,
                                                 "max_position_embeddings", 77))  # fmt: skip
        image_embeds = self.model.get_image_features(
            pixel_values=pixels["pixel_values"].to(self.device, self.model.dtype)
        )
        text_embeds = self.model.get_text_features(
            input_ids=text["input_ids"].to(self.device),
            attention_mask=text["attention_mask"].to(self.device),
        )
        image_embeds = _as_tensor(image_embeds)
        text_embeds = _as_tensor(text_embeds)
        cos = F.normalize(image_embeds.float(), dim=-1) @ F.normalize(text_embeds.float(), dim=-1).T
        return cos[:, 0].tolist()


def _as_tensor(output) -> Tensor:
    """get_*_features returns a tensor in older transformers, an output object in newer ones."""
    if isinstance(output, Tensor):
        return output
    for name in ("pooler_output", "image_embeds", "text_embeds"):
        value = getattr(output, name, None)
        if isinstance(value, Tensor):
            return value
    raise QualityModelError("unexpected output from the preference model's feature functions")


_LOADED: dict[tuple[str, str], PreferenceQuality] = {}
_LOCK = threading.Lock()

"""The VLM judge (Qwen3-VL) shared by the plausibility and quality terms.

One image per question, many questions per forward pass. For each image:

1. the rubric's question in Qwen's chat format (rubrics.yaml), the image placeholder expanded
   to as many ``<|image_pad|>`` tokens as the vision encoder will emit for that image;
2. ONE forward pass over the batch (left-padded so every sequence ends at the same position),
   keeping only the last position's logits: the distribution of the answer's first token;
3. softmax over the label tokens only (``"0".."9"`` or ``"Yes"/"No"``, ids looked up from the
   tokenizer; a label that is not exactly one token is an error, never a guess);
   score = expected label value / largest value, in [0,1]. ``label_mass`` (how much of the full
   softmax the labels hold) is reported: a judge that does not answer with a label at all
   shows up there.

No text is generated, nothing is parsed. Batched and single scores agree (left padding plus an
attention mask; the multimodal rotary positions follow the mask).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

RUBRIC_FILE = Path(__file__).with_name("rubrics.yaml")
IMAGE_PLACEHOLDER = "<|image_pad|>"
DIGIT_LABELS = tuple(str(d) for d in range(10))
YES_NO_LABELS = ("No", "Yes")


class JudgeError(RuntimeError):
    """The VLM cannot be loaded or is not usable as a judge (e.g. labels are not single tokens)."""


@dataclass(frozen=True)
class Rubric:
    name: str
    version: int
    labels: tuple[str, ...]  # label strings, each must be one token
    values: tuple[float, ...]  # value of each label
    system: str
    question: str
    answer_prefix: str
    prompt_clause: str  # inserted for "{prompt_clause}" when a prompt is given ("" otherwise)
    chat_template: str

    @property
    def tag(self) -> str:
        return f"{self.name}@{self.version}"

    def text(self, prompt: str | None = None) -> str:
        """The full chat text with one image placeholder. User text goes in by plain
        replacement (no str.format on it), stripped of chat control markers."""
        clause = ""
        if prompt and self.prompt_clause:
            clause = self.prompt_clause.replace("{prompt}", _sanitize(prompt))
        question = self.question.replace("{prompt_clause}", clause)
        return (
            self.chat_template.replace("{system}", self.system)
            .replace("{question}", question)
            .replace("{answer_prefix}", self.answer_prefix)
        )


def _sanitize(text: str, max_chars: int = 1000) -> str:
    """A prompt must not open or close chat turns or smuggle image tokens."""
    return text.replace("<|", "< |").replace("|>", "| >").replace("\n", " ")[:max_chars]


@lru_cache(maxsize=4)
def load_rubrics(path: str | Path = RUBRIC_FILE) -> dict[str, Rubric]:
    import yaml

    data = yaml.safe_load(Path(path).read_text())
    rubrics = {}
    for name, entry in data["rubrics"].items():
        if entry["labels"] == "digits":
            labels, values = DIGIT_LABELS, tuple(float(d) for d in range(10))
        elif entry["labels"] == "yes_no":
            labels, values = YES_NO_LABELS, (0.0, 1.0)
        else:
            raise ValueError(f"rubric {name}: unknown labels {entry['labels']!r}")
        rubrics[name] = Rubric(
            name=name,
            version=int(entry["version"]),
            labels=labels,
            values=values,
            system=entry["system"].strip(),
            question=" ".join(entry["question"].split()),
            answer_prefix=entry.get("answer_prefix", ""),
            prompt_clause=entry.get("prompt_clause", ""),
            chat_template=data["chat_template"],
        )
    return rubrics


def label_token_ids(tokenizer, labels: tuple[str, ...]) -> list[int]:
    """The token id of each label, from the tokenizer; each label must be exactly one token."""
    ids = []
    for label in labels:
        encoded = tokenizer.encode(label, add_special_tokens=False)
        if len(encoded) != 1:
            raise JudgeError(f"label {label!r} is {len(encoded)} tokens for this tokenizer, not 1")
        ids.append(int(encoded[0]))
    if len(set(ids)) != len(ids):
        raise JudgeError(f"labels {labels} do not map to distinct tokens")
    return ids


def expected_label_score(
    logits: Tensor,  # [B,V] next-token logits
    label_ids: list[int],  # [K]
    values: tuple[float, ...],  # [K]
) -> tuple[Tensor, Tensor]:
    """(score [B] in [0,1], label_mass [B]): the expectation of the label values under the
    softmax restricted to the labels, over the largest value; and the labels' share of the
    full softmax."""
    logits = logits.float()
    label_logits = logits[:, label_ids]  # [B,K]
    probabilities = torch.softmax(label_logits, dim=-1)
    value = torch.tensor(values, dtype=probabilities.dtype, device=probabilities.device)
    score = (probabilities * value).sum(-1) / value.max()
    label_mass = torch.exp(torch.logsumexp(label_logits, -1) - torch.logsumexp(logits, -1))
    return score, label_mass


@dataclass(frozen=True)
class JudgeScores:
    scores: list[float]  # one per image, in [0,1]
    label_mass: list[float]  # one per image, in [0,1]


class VLMJudge:
    """A loaded Qwen3-VL (model, tokenizer, image processor) on one device."""

    def __init__(self, model, tokenizer, image_processor, *, source: str) -> None:
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.image_processor = image_processor
        self.source = source
        self.device = next(model.parameters()).device
        self.tokenizer.padding_side = "left"  # every sequence ends at the last position
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.image_token_id = int(model.config.image_token_id)
        pad_id = tokenizer.convert_tokens_to_ids(IMAGE_PLACEHOLDER)
        if pad_id != self.image_token_id:
            raise JudgeError(
                f"tokenizer maps {IMAGE_PLACEHOLDER} to {pad_id}, the model expects "
                f"{self.image_token_id}: tokenizer and model do not belong together"
            )
        self.merge_size = int(getattr(image_processor, "merge_size", 2))
        self._label_ids: dict[tuple[str, ...], list[int]] = {}

    # -- loading ------------------------------------------------------------------------------
    @classmethod
    def load(cls, source: str, *, device: torch.device) -> "VLMJudge":
        """From a hub id or a local directory (model, tokenizer and preprocessor config), once
        per process and device. bf16 on CUDA, fp32 on CPU."""
        key = (str(source), str(device))
        with _LOCK:
            if key not in _JUDGES:
                _JUDGES[key] = cls._load(source, device)
            return _JUDGES[key]

    @classmethod
    def _load(cls, source: str, device: torch.device) -> "VLMJudge":
        try:
            from transformers import AutoTokenizer, Qwen3VLForConditionalGeneration
            from transformers.models.qwen2_vl import Qwen2VLImageProcessorPil
        except ImportError as exc:
            raise JudgeError(f"transformers with Qwen3-VL support is needed: {exc}") from None
        dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
        try:
            tokenizer = AutoTokenizer.from_pretrained(source)
            # The PIL image processor: same maths as the default one, without torchvision.
            image_processor = Qwen2VLImageProcessorPil.from_pretrained(source)
            model = Qwen3VLForConditionalGeneration.from_pretrained(source, dtype=dtype)
        except (OSError, ValueError) as exc:
            raise JudgeError(f"cannot load the VLM from {source!r}: {exc}") from None
        model.requires_grad_(False)
        return cls(model.to(device), tokenizer, image_processor, source=str(source))

    def versions(self) -> dict[str, str]:
        return {"vlm": self.source, "rubrics": f"file@{_file_version()}"}

    # -- scoring ------------------------------------------------------------------------------
    def label_ids(self, rubric: Rubric) -> list[int]:
        if rubric.labels not in self._label_ids:
            self._label_ids[rubric.labels] = label_token_ids(self.tokenizer, rubric.labels)
        return self._label_ids[rubric.labels]

    @torch.inference_mode()
    def score(
        self,
        images: list[Tensor],  # each [H,W,3] float in [0,1]
        rubric: Rubric,
        *,
        prompts: list[str | None] | None = None,  # per image, for rubrics that use the prompt
        batch_size: int = 8,
    ) -> JudgeScores:
        """Scores for each image, ``batch_size`` images per forward pass."""
        prompts = prompts or [None] * len(images)
        if len(prompts) != len(images):
            raise ValueError("one prompt (or None) per image")
        label_ids = self.label_ids(rubric)
        scores: list[float] = []
        masses: list[float] = []
        for start in range(0, len(images), batch_size):
            chunk = slice(start, start + batch_size)
            inputs = self.build_inputs(images[chunk], [rubric.text(p) for p in prompts[chunk]])
            logits = self.model(**inputs, logits_to_keep=1).logits[:, -1]  # [B,V]
            score, mass = expected_label_score(logits, label_ids, rubric.values)
            scores += score.tolist()
            masses += mass.tolist()
        return JudgeScores(scores, masses)

    def build_inputs(self, images: list[Tensor], texts: list[str]) -> dict[str, Tensor]:
        """Model inputs for one image per text: pixel patches, left-padded tokens with each
        image placeholder expanded to the number of merged patches of its image."""
        arrays = [image.detach().float().clamp(0, 1).cpu().numpy() for image in images]
        vision = self.image_processor(images=arrays, return_tensors="pt", do_rescale=False)
        grid = vision["image_grid_thw"]  # [B,3] (t, h, w) in patches
        tokens_per_image = (grid.prod(-1) // (self.merge_size**2)).tolist()
        expanded = []
        for text, count in zip(texts, tokens_per_image):
            if text.count(IMAGE_PLACEHOLDER) != 1:
                raise ValueError("each judge prompt holds exactly one image placeholder")
            expanded.append(text.replace(IMAGE_PLACEHOLDER, IMAGE_PLACEHOLDER * int(count)))
        encoded = self.tokenizer(expanded, return_tensors="pt", padding=True,
                                 add_special_tokens=False)  # fmt: skip
        input_ids = encoded["input_ids"]
        inputs: dict[str, Any] = {
            "input_ids": input_ids,
            "attention_mask": encoded["attention_mask"],
            # 1 marks image tokens: the model derives its 3D rotary positions from it.
            "mm_token_type_ids": (input_ids == self.image_token_id).long(),
            "pixel_values": vision["pixel_values"].to(self.model.dtype),
            "image_grid_thw": grid,
        }
        return {key: value.to(self.device) for key, value in inputs.items()}


def score_views_per_video(
    judge: VLMJudge,
    views_per_video: list[Tensor],  # B tensors [V_b,H,W,3]
    rubric: Rubric,
    *,
    prompts: list[str | None] | None = None,  # per video
    batch_size: int = 8,
) -> list[JudgeScores]:
    """Score every view of every video in shared batches (views and videos mixed), then
    regroup per video."""
    prompts = prompts or [None] * len(views_per_video)
    images = [view for views in views_per_video for view in views]
    image_prompts = [p for views, p in zip(views_per_video, prompts) for _ in range(len(views))]
    flat = judge.score(images, rubric, prompts=image_prompts, batch_size=batch_size)
    out, start = [], 0
    for views in views_per_video:
        stop = start + len(views)
        out.append(JudgeScores(flat.scores[start:stop], flat.label_mass[start:stop]))
        start = stop
    return out


def _file_version() -> int:
    import yaml

    return int(yaml.safe_load(RUBRIC_FILE.read_text())["file_version"])


_JUDGES: dict[tuple[str, str], VLMJudge] = {}
_LOCK = threading.Lock()

"""Prompt sets, which prompts each step trains on, and the main/dynamic phase schedule.

Everything is a pure function of (seed, step), so a resumed run draws exactly the prompts an
uninterrupted run would, and ranks of a distributed run agree without talking to each other.

Sharding (for data-parallel runs): a step draws ``prompts_per_rank * world_size`` prompts;
rank r takes the r-th consecutive slice and generates the whole group (``group_size`` videos)
of each of its prompts, so GRPO groups never straddle ranks and advantages need no gather.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Literal

import numpy as np

from trainer_client.trainer.config import DynamicPhaseConfig

__all__ = ["BUILTIN_PROMPTS", "load_prompt_set", "PromptSampler", "Phase", "phase_at", "derive_seed", "StepPrompts"]

BUILTIN_PROMPTS = Path(__file__).resolve().parents[1] / "prompts"
Phase = Literal["main", "dynamic"]


def derive_seed(*parts: object) -> int:
    """A 63-bit seed from any parts (stable across processes and Python versions)."""
    digest = hashlib.sha256(":".join(str(p) for p in parts).encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


def resolve_prompt_path(name_or_path: str, base_dir: Path = Path(".")) -> Path:
    """A built-in set name (``camera_train``) or a text file (relative to ``base_dir``)."""
    builtin = BUILTIN_PROMPTS / f"{name_or_path}.txt"
    if "/" not in name_or_path and not name_or_path.endswith(".txt") and builtin.is_file():
        return builtin
    path = Path(name_or_path)
    return path if path.is_absolute() else base_dir / path


@lru_cache(maxsize=16)
def _read(path: Path) -> tuple[str, ...]:
    return tuple(" ".join(line.split()) for line in path.read_text(encoding="utf-8").splitlines() if line.strip())


def load_prompt_set(name_or_path: str, base_dir: Path = Path(".")) -> list[str]:
    """One prompt per non-empty line. Raises FileNotFoundError / ValueError with the path."""
    path = resolve_prompt_path(name_or_path, base_dir)
    if not path.is_file():
        builtins = sorted(p.stem for p in BUILTIN_PROMPTS.glob("*.txt") if not p.stem.startswith("LICENSE"))
        raise FileNotFoundError(f"prompt set {name_or_path!r}: no file {path} (built-in sets: {', '.join(builtins)})")
    prompts = list(_read(path.resolve()))
    if not prompts:
        raise ValueError(f"prompt set {path} is empty")
    return prompts


def phase_at(step: int, dynamic: DynamicPhaseConfig) -> Phase:
    """Cycles of ``main_steps`` main steps then ``dynamic_steps`` dynamic steps (step 0 = main)."""
    if not dynamic.enabled:
        return "main"
    cycle = dynamic.main_steps + dynamic.dynamic_steps
    return "dynamic" if step % cycle >= dynamic.main_steps else "main"


@dataclass(frozen=True)
class StepPrompts:
    prompts: list[str]  # [N] one entry per sample, each prompt repeated group_size times in a row
    group_ids: list[int]  # [N] 0..G-1 within this rank
    sample_ids: list[int]  # [N] index of the sample in the whole step (all ranks): seeds its noise


class PromptSampler:
    """Draws prompts without replacement, reshuffling each pass over the set."""

    def __init__(self, prompts: list[str], *, seed: int, name: str) -> None:
        if not prompts:
            raise ValueError(f"prompt set {name!r} is empty")
        self.prompts = prompts
        self.seed = seed
        self.name = name

    def _order(self, epoch: int) -> np.ndarray:
        rng = np.random.default_rng(derive_seed(self.seed, self.name, "epoch", epoch))
        return rng.permutation(len(self.prompts))

    def draw(self, step: int, *, prompts_per_rank: int, group_size: int, rank: int = 0, world_size: int = 1) -> StepPrompts:
        per_step = prompts_per_rank * world_size
        first = step * per_step + rank * prompts_per_rank  # position in the endless shuffled stream
        chosen = []
        for position in range(first, first + prompts_per_rank):
            epoch, index = divmod(position, len(self.prompts))
            chosen.append(self.prompts[int(self._order(epoch)[index])])
        prompts, group_ids, sample_ids = [], [], []
        for g, prompt in enumerate(chosen):
            for j in range(group_size):
                prompts.append(prompt)
                group_ids.append(g)
                sample_ids.append(((rank * prompts_per_rank) + g) * group_size + j)
        return StepPrompts(prompts=prompts, group_ids=group_ids, sample_ids=sample_ids)

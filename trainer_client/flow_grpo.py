"""A drop-in reward function for flow_grpo-style trainers.

flow_grpo (and trainers derived from it) call ``reward_fn(videos, prompts, metadata,
only_strict)`` in a thread pool right after each rollout and read back ``(rewards, meta)``:
``rewards`` maps each reward name to one value per video, plus ``"avg"``, the number the
advantages are computed from.

    from trainer_client import RewardClient
    from trainer_client.flow_grpo import make_reward_fn

    client = RewardClient("http://rewards:8000", api_key=KEY, downsample=True)
    reward_fn = make_reward_fn(client, terms=["reconstruction", "trajectory"])
    rewards, meta = reward_fn(videos, prompts, metadata)   # videos: Wan's [B,C,T,H,W] in [0,1]

**Failed samples.** A video whose reward could not be computed (its item failed on the
service, or no term gave a total) gets ``NaN`` in ``"avg"`` and in every term list, and
``meta["ok"][i]`` is False (``meta["errors"][i]`` says why). NaN and not 0 because a made-up
0 is a real-looking reward: it would pull its prompt group's mean and standard deviation
down and hand the other samples of the group wrong advantages, silently. NaN cannot be
missed: mask it (``meta["ok"]``) before computing advantages, e.g. drop those samples from
the per-prompt statistics and give them advantage 0 so they take no part in the loss. If the
whole call misses its deadline, every sample of the batch is masked that way; a request the
service rejects (4xx: bad key, bad input) raises, since retrying cannot help.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from trainer_client.client import DeadlineExceeded, RewardClient, Scores

__all__ = ["make_reward_fn"]

_LAYOUTS = {  # the permutation that takes each layout to [B,T,C,H,W]
    "BCTHW": (0, 2, 1, 3, 4),  # diffusers WanPipeline(output_type="pt"), flow_grpo's Wan trainer
    "BTCHW": (0, 1, 2, 3, 4),
    "BTHWC": (0, 1, 4, 2, 3),
}


def make_reward_fn(
    client: RewardClient,
    *,
    terms: Sequence[str] | None = None,
    weights: Mapping[str, float] | None = None,
    layout: str = "BCTHW",
    options: Mapping[str, Any] | None = None,
    deadline_s: float | None = None,
) -> Callable[..., tuple[dict[str, list[float]], dict[str, Any]]]:
    """``reward_fn(videos, prompts, metadata=None, only_strict=True) -> (rewards, meta)``.

    ``videos``: float in [0,1] (or uint8) in ``layout`` (numpy or torch, any device).
    ``rewards``: ``{term: [B floats], ..., "avg": [B floats]}`` with NaN for failed samples;
    the term keys are ``terms`` (or the service's default terms) so they are the same in
    every call. ``"avg"`` is the service's weighted total (``RewardResult.total``).
    ``meta``: ``{"ok": [B bools], "errors": [B str|None], "job_id": str|None}``.
    ``metadata`` and ``only_strict`` are accepted for compatibility and not used.
    """
    if layout not in _LAYOUTS:
        raise ValueError(f"layout must be one of {sorted(_LAYOUTS)}, got {layout!r}")
    order = _LAYOUTS[layout]
    fixed_terms = list(terms) if terms is not None else None

    def term_names() -> list[str]:
        nonlocal fixed_terms
        if fixed_terms is None:  # the service's default set, asked once
            fixed_terms = list(client.info()["scoring"].get("terms") or [])
        return fixed_terms

    def reward_fn(videos: Any, prompts: Sequence[str], metadata: Any = None, only_strict: bool = True):
        frames = videos.permute(*order) if hasattr(videos, "permute") else videos.transpose(order)
        prompts = list(prompts)
        names = term_names()
        try:
            scores = client.score(frames, prompts=prompts, terms=terms, weights=weights, options=options,
                                  deadline_s=deadline_s)  # fmt: skip
        except DeadlineExceeded as exc:  # the whole batch is masked, the run goes on
            nan = [math.nan] * len(prompts)
            return ({name: list(nan) for name in names} | {"avg": nan},
                    {"ok": [False] * len(prompts), "errors": [str(exc)] * len(prompts), "job_id": exc.job_id})  # fmt: skip
        return _as_flow_grpo(scores, names)

    return reward_fn


def _as_flow_grpo(scores: Scores, names: list[str]) -> tuple[dict[str, list[float]], dict[str, Any]]:
    ok = scores.ok
    rewards = {name: np.where(ok, scores.term(name), math.nan).tolist() for name in names}
    rewards["avg"] = scores.totals.tolist()
    meta = {"ok": scores.ok.tolist(), "errors": scores.errors, "job_id": scores.job_id}
    return rewards, meta

"""GRPO maths: group-relative advantages with failure masks, the PPO-clip loss.

Pure functions on tensors (N samples, G groups). A sample whose reward failed is masked: it
takes no part in its group's mean and std, gets advantage 0, and is left out of the loss.
Its reward is never read as 0, which would skew every other advantage in its group.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = ["Advantages", "group_advantages", "ppo_clip_loss"]


@dataclass(frozen=True)
class Advantages:
    advantages: Tensor  # [N] float32, 0 where masked
    mask: Tensor  # [N] bool: the samples that enter the loss
    group_std: Tensor  # [G] std of the ok rewards per group (NaN for groups left out)
    num_groups_used: int


def group_advantages(
    rewards: Tensor,  # [N] float, NaN or anything where not ok
    ok: Tensor,  # [N] bool
    group_ids: Tensor,  # [N] int in [0, G)
    *,
    std_eps: float = 1e-4,
    clip: float = 5.0,
    min_ok_per_group: int = 2,
) -> Advantages:
    """(r - mean_g) / (std_g + std_eps), clipped to +-clip, per group g over its ok samples.

    std is the population standard deviation (ddof=0). Groups with fewer than
    ``min_ok_per_group`` ok samples have no baseline: all their samples are masked.
    """
    if not (rewards.shape == ok.shape == group_ids.shape and rewards.ndim == 1):
        raise ValueError("rewards, ok and group_ids must all be [N]")
    rewards = rewards.double()
    ok = ok.bool() & torch.isfinite(rewards)
    num_groups = int(group_ids.max().item()) + 1 if group_ids.numel() else 0
    advantages = torch.zeros_like(rewards)
    mask = torch.zeros_like(ok)
    group_std = torch.full((num_groups,), float("nan"), dtype=torch.float64)
    used = 0
    for g in range(num_groups):
        members = (group_ids == g) & ok
        if int(members.sum()) < min_ok_per_group:
            continue
        values = rewards[members]
        mean = values.mean()
        std = values.std(unbiased=False)
        advantages[members] = ((values - mean) / (std + std_eps)).clamp(-clip, clip)
        mask |= members
        group_std[g] = std
        used += 1
    return Advantages(advantages=advantages.float(), mask=mask, group_std=group_std, num_groups_used=used)


def ppo_clip_loss(
    log_prob: Tensor,  # [B] under the current policy (with grad)
    old_log_prob: Tensor,  # [B] recorded during the rollout
    advantages: Tensor,  # [B]
    *,
    clip_range: float,
) -> tuple[Tensor, Tensor]:  # per-sample loss [B], ratio [B]
    """max(-A * ratio, -A * clip(ratio, 1 - eps, 1 + eps)), per sample (to be minimised)."""
    ratio = torch.exp(log_prob - old_log_prob)
    unclipped = -advantages * ratio
    clipped = -advantages * torch.clamp(ratio, 1.0 - clip_range, 1.0 + clip_range)
    return torch.maximum(unclipped, clipped), ratio

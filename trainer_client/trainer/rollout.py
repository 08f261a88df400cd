"""Rollouts: generate videos with the SDE sampler and record what the update needs.

For each video: start from Gaussian noise, take ``S`` steps over the schedule's sigmas; steps
0..S-2 are stochastic (``sde_step_with_log_prob``), the last one is the deterministic Euler
step to sigma = 0 (its likelihood is degenerate, so it is never trained). At the steps chosen
for training we keep the latent before the step, the latent after it and its log-prob.

Each video has its own ``torch.Generator`` (seeded from run seed, step and sample index), so
its noise does not depend on batch size, batch order or how samples are split across ranks.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from trainer_client.trainer.sde import SdeStep, euler_step, sde_step_with_log_prob
from trainer_client.trainer.wan import Schedule, WanPolicy

__all__ = ["RolloutBatch", "generate", "step_log_prob", "choose_train_steps"]


@dataclass
class RolloutBatch:
    prompts: list[str]  # [B]
    sample_ids: list[int]  # [B] index within the step (seeds the noise)
    prompt_embeds: Tensor  # [B,L,D]
    train_steps: list[int]  # [K] schedule indices trained on
    latents: Tensor  # [B,K,C,T',h,w] fp32: x before each trained step
    next_latents: Tensor  # [B,K,C,T',h,w] fp32: x after it (sampled)
    log_probs: Tensor  # [B,K] fp32: log-prob of next_latents under the rollout policy
    videos: Tensor  # [B,T,3,H,W] float in [0,1], on CPU


def choose_train_steps(num_steps: int, count: int, *, selection: str, generator: torch.Generator | None = None) -> list[int]:
    """Which schedule indices to train on (never the last, deterministic step)."""
    stochastic = num_steps - 1
    if not 1 <= count <= stochastic:
        raise ValueError(f"can train on 1..{stochastic} of {num_steps} steps, not {count}")
    if selection == "first":
        return list(range(count))
    if selection == "random":
        return sorted(torch.randperm(stochastic, generator=generator)[:count].tolist())
    raise ValueError(f"unknown timestep selection {selection!r}")


@torch.no_grad()
def generate(
    policy: WanPolicy,
    *,
    prompts: Sequence[str],
    sample_ids: Sequence[int],
    prompt_embeds: Tensor,  # [B,L,D]
    negative_embeds: Tensor | None,  # [B,L,D]
    schedule: Schedule,
    train_steps: Sequence[int],
    generators: Sequence[torch.Generator],  # one per video
    latent_shape: tuple[int, int, int, int],  # [C,T',h,w]
    guidance_scale: float,
    noise_level: float,
    storage_device: torch.device | str | None = None,
) -> RolloutBatch:
    batch = len(prompts)
    if not (len(sample_ids) == len(generators) == prompt_embeds.shape[0] == batch):
        raise ValueError("prompts, sample_ids, generators and prompt_embeds must have one entry per video")
    storage = torch.device(storage_device) if storage_device is not None else policy.device
    device = policy.device
    x = torch.stack([torch.randn(latent_shape, generator=g, device=device, dtype=torch.float32) for g in generators])
    trained = {step: k for k, step in enumerate(train_steps)}
    before = torch.empty((batch, len(train_steps), *latent_shape), dtype=torch.float32, device=storage)
    after = torch.empty_like(before)
    log_probs = torch.empty((batch, len(train_steps)), dtype=torch.float32, device=storage)
    sigma_cap = schedule.sigma_cap
    last = schedule.num_steps - 1
    for i in range(schedule.num_steps):
        timestep = schedule.timesteps[i].expand(batch).to(device)
        velocity = policy.velocity(x, timestep, prompt_embeds, negative_embeds, guidance_scale)
        sigma, sigma_next = schedule.sigmas[i], schedule.sigmas[i + 1]
        if i == last:
            x = euler_step(velocity, x, sigma, sigma_next)
            break
        step = sde_step_with_log_prob(
            velocity, x, sigma, sigma_next, noise_level=noise_level, sigma_cap=sigma_cap, generator=list(generators)
        )
        if i in trained:
            k = trained[i]
            before[:, k] = x.to(storage)
            after[:, k] = step.next_sample.to(storage)
            log_probs[:, k] = step.log_prob.to(storage)
        x = step.next_sample
    videos = policy.decode(x).cpu()
    return RolloutBatch(
        prompts=list(prompts),
        sample_ids=list(sample_ids),
        prompt_embeds=prompt_embeds.to(storage),
        train_steps=list(train_steps),
        latents=before,
        next_latents=after,
        log_probs=log_probs,
        videos=videos,
    )


def step_log_prob(
    policy: WanPolicy,
    *,
    latents: Tensor,  # [B,C,T',h,w] x before the step
    next_latents: Tensor,  # [B,C,T',h,w] x after it
    step_index: int,  # schedule index of the step
    prompt_embeds: Tensor,  # [B,L,D]
    negative_embeds: Tensor | None,
    schedule: Schedule,
    guidance_scale: float,
    noise_level: float,
) -> SdeStep:
    """Re-evaluate one recorded step under the current weights (with grad unless disabled)."""
    device = policy.device
    x = latents.to(device)
    timestep = schedule.timesteps[step_index].expand(x.shape[0]).to(device)
    velocity = policy.velocity(x, timestep, prompt_embeds.to(device), negative_embeds, guidance_scale)
    return sde_step_with_log_prob(
        velocity,
        x,
        schedule.sigmas[step_index],
        schedule.sigmas[step_index + 1],
        noise_level=noise_level,
        sigma_cap=schedule.sigma_cap,
        next_sample=next_latents.to(device),
    )

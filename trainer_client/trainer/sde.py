"""The stochastic sampling step of Flow-GRPO, with the log-probability of its output.

Pure functions on tensors. Conventions: flow matching with sigma in [0, 1] (1 = pure noise);
the model predicts the velocity v = noise - x0; a step goes from ``sigma`` to a smaller
``sigma_next`` (dt = sigma_next - sigma < 0). The deterministic (ODE) Euler step is
x_next = x + v * dt; the SDE with the same marginals (noise level a) is

    std_t  = a * sqrt(sigma / (1 - sigma))
    mean   = x * (1 + std_t**2 / (2 sigma) * dt) + v * (1 + std_t**2 * (1 - sigma) / (2 sigma)) * dt
    x_next = mean + std_t * sqrt(-dt) * eps,   eps ~ N(0, I)

so x_next | x is Gaussian with that mean and standard deviation ``std_t * sqrt(-dt)``.
Log-probs are averaged over the non-batch dimensions (one number per sample) and always
computed in float32. At sigma = 1 the std formula divides by zero: 1 - sigma is floored at
1 - ``sigma_cap``, where the trainer passes the schedule's second sigma (so only the first
step, which starts at sigma = 1 or 0.999999 for UniPC, is affected).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = ["SdeStep", "sde_step_with_log_prob", "euler_step", "gaussian_kl_same_std", "sde_std"]

_LOG_SQRT_2PI = 0.5 * math.log(2 * math.pi)


@dataclass(frozen=True)
class SdeStep:
    next_sample: Tensor  # [B,...] x at sigma_next (sampled, or the one given)
    log_prob: Tensor  # [B] mean log-density of next_sample over non-batch dims, fp32
    mean: Tensor  # [B,...] Gaussian mean of x_next | x, fp32
    std: Tensor  # [B,1,...] standard deviation std_t * sqrt(-dt), fp32


def _per_sample(value: Tensor | float, like: Tensor) -> Tensor:
    """A scalar or [B] value as [B,1,...,1] fp32 on ``like``'s device."""
    value = torch.as_tensor(value, dtype=torch.float32, device=like.device)
    if value.ndim == 0:
        value = value.expand(like.shape[0])
    if value.shape != (like.shape[0],):
        raise ValueError(f"sigma must be a scalar or [B]={like.shape[0]}; got shape {tuple(value.shape)}")
    return value.view(-1, *([1] * (like.ndim - 1)))


def sde_std(sigma: Tensor, *, noise_level: float, sigma_cap: float) -> Tensor:
    """std_t = a * sqrt(sigma / (1 - sigma)), with 1 - sigma floored at 1 - sigma_cap."""
    one_minus = torch.clamp(1.0 - sigma, min=1.0 - sigma_cap)
    return noise_level * torch.sqrt(sigma / one_minus)


def sde_step_with_log_prob(
    velocity: Tensor,  # [B,C,T,H,W] model output at (sample, sigma)
    sample: Tensor,  # [B,C,T,H,W] x at sigma
    sigma: Tensor | float,  # [B] or scalar, in (0, 1]
    sigma_next: Tensor | float,  # [B] or scalar, < sigma and > 0 (the last step is not stochastic)
    *,
    noise_level: float,
    sigma_cap: float,
    next_sample: Tensor | None = None,  # given: score it (training); None: draw it (rollout)
    generator: torch.Generator | list[torch.Generator] | None = None,
) -> SdeStep:
    """One SDE step from sigma to sigma_next and the log-prob of where it lands.

    With ``next_sample`` None a new sample is drawn (one generator per sample keeps each
    sample's noise independent of how samples are batched). Gradients flow to ``velocity``
    through ``mean``; ``next_sample`` is treated as data.
    """
    if velocity.shape != sample.shape:
        raise ValueError(f"velocity {tuple(velocity.shape)} and sample {tuple(sample.shape)} differ")
    x = sample.float()
    v = velocity.float()
    sigma_t = _per_sample(sigma, x)
    dt = _per_sample(sigma_next, x) - sigma_t
    if bool((dt >= 0).any()):
        raise ValueError("sigma_next must be smaller than sigma (sigmas decrease during sampling)")

    std_t = sde_std(sigma_t, noise_level=noise_level, sigma_cap=sigma_cap)
    mean = x * (1 + std_t**2 / (2 * sigma_t) * dt) + v * (1 + std_t**2 * (1 - sigma_t) / (2 * sigma_t)) * dt
    std = std_t * torch.sqrt(-dt)

    if next_sample is None:
        noise = _standard_normal(x, generator)
        next_sample = mean + std * noise
    target = next_sample.detach().float()
    log_density = -((target - mean) ** 2) / (2 * std**2) - torch.log(std) - _LOG_SQRT_2PI
    log_prob = log_density.mean(dim=tuple(range(1, x.ndim)))
    return SdeStep(next_sample=next_sample, log_prob=log_prob, mean=mean, std=std)


def _standard_normal(like: Tensor, generator: torch.Generator | list[torch.Generator] | None) -> Tensor:
    if isinstance(generator, (list, tuple)):
        if len(generator) != like.shape[0]:
            raise ValueError(f"{len(generator)} generators for a batch of {like.shape[0]}")
        return torch.stack(
            [torch.randn(like.shape[1:], generator=g, dtype=like.dtype, device=like.device) for g in generator]
        )
    return torch.randn(like.shape, generator=generator, dtype=like.dtype, device=like.device)


def euler_step(
    velocity: Tensor,  # [B,...]
    sample: Tensor,  # [B,...]
    sigma: Tensor | float,
    sigma_next: Tensor | float,
) -> Tensor:
    """The deterministic flow step x + v * (sigma_next - sigma), in fp32. Used for the last
    step (to sigma = 0), where the SDE likelihood is meaningless."""
    x = sample.float()
    dt = _per_sample(sigma_next, x) - _per_sample(sigma, x)
    return x + velocity.float() * dt


def gaussian_kl_same_std(
    mean: Tensor,  # [B,...] policy mean
    mean_reference: Tensor,  # [B,...] reference mean
    std: Tensor,  # broadcastable to mean; shared by both Gaussians
) -> Tensor:  # [B]
    """KL(N(mean, std^2) || N(mean_reference, std^2)) per element, averaged over non-batch
    dims (the same averaging as the log-probs)."""
    kl = (mean.float() - mean_reference.float()) ** 2 / (2 * std.float() ** 2)
    return kl.mean(dim=tuple(range(1, mean.ndim)))

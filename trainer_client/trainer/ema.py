"""Exponential moving average of the LoRA weights (the weights to export and evaluate).

Every ``update_interval`` optimizer updates: ema <- decay * ema + (1 - decay) * weights.
The average starts at the initial weights and lives in fp32 on the weights' device.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch
from torch import Tensor

__all__ = ["LoraEma"]


class LoraEma:
    def __init__(self, named_parameters: Sequence[tuple[str, torch.nn.Parameter]], *, decay: float, update_interval: int) -> None:
        if not 0 <= decay < 1:
            raise ValueError("decay must be in [0, 1)")
        if update_interval < 1:
            raise ValueError("update_interval must be >= 1")
        self.parameters = list(named_parameters)
        self.decay = decay
        self.update_interval = update_interval
        # with FSDP the parameters (and so the shadows) are DTensors: each rank averages its shard
        self.shadow: dict[str, Tensor] = {n: p.detach().float().clone() for n, p in self.parameters}
        self.num_updates = 0

    @torch.no_grad()
    def after_optimizer_update(self, optimizer_updates: int) -> bool:
        """Call after each optimizer update with the running count (1, 2, ...); True if averaged."""
        if optimizer_updates % self.update_interval:
            return False
        for name, parameter in self.parameters:
            self.shadow[name].mul_(self.decay).add_(parameter.detach().float(), alpha=1.0 - self.decay)
        self.num_updates += 1
        return True

    @contextmanager
    @torch.no_grad()
    def applied(self) -> Iterator[None]:
        """Temporarily put the averaged weights into the model (evaluation, export)."""
        backup = {n: p.detach().clone() for n, p in self.parameters}
        for name, parameter in self.parameters:
            parameter.copy_(self.shadow[name].to(parameter.dtype))
        try:
            yield
        finally:
            for name, parameter in self.parameters:
                parameter.copy_(backup[name])

    def state_dict(self) -> dict[str, Tensor]:
        """Whole tensors (gathered when sharded: every rank must call it)."""
        from trainer_client.trainer.distributed import full_tensor

        return {name: full_tensor(value).clone() for name, value in self.shadow.items()}

    def load_state_dict(self, state: dict[str, Tensor], *, num_updates: int) -> None:
        from trainer_client.trainer.distributed import copy_full_into

        if set(state) != set(self.shadow):
            raise ValueError("EMA state does not match the LoRA parameters")
        for name, value in state.items():
            copy_full_into(self.shadow[name], value)
        self.num_updates = num_updates

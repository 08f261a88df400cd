"""Data-parallel Flow-GRPO over ``torch.distributed``: one process per device, launched by
``torchrun`` (which sets RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR/PORT).

How a step is split (docs/trainer.md, "Distributed"):

- **Sharding by whole groups.** The global batch is ``world_size x grpo.prompts_per_step``
  prompt groups; rank r takes the r-th consecutive slice (``PromptSampler.draw``), so a GRPO
  group never straddles ranks and advantages need no gather.
- **Noise by global sample index.** Every video's noise comes from a generator seeded by
  (run seed, step, global sample index), never by rank: N ranks produce exactly the videos one
  process with the same global batch would.
- **The global mean.** The loss is averaged over the *global* number of ok samples x trained
  steps: each rank scales its summed loss by ``world_size / global_count`` and DDP (or FSDP's
  reduce-scatter) averages over ranks, which gives the single-process gradient.
- **Masks without stalls.** Each rank waits for its own rewards under its own deadlines; a
  masked sample is still run through forward/backward with weight 0, so every rank executes
  the same forwards and collectives whatever was masked where (FSDP needs that; DDP needs one
  synchronised backward per update on every rank). The only collective that depends on rewards
  is one all-reduce of the ok counts, reached when a rank's rewards are in or past deadline.

Everything here is a thin layer over torch: process group setup, wrapping the transformer
(DDP or FSDP2 ``fully_shard``), gathering sharded tensors, and small collectives.
"""

from __future__ import annotations

import hashlib
import os
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Iterator

import torch
import torch.distributed as dist
from torch import Tensor

from trainer_client.trainer.config import DistributedConfig

__all__ = [
    "DistContext",
    "env_world_size",
    "init_from_env",
    "wrap_denoiser",
    "full_tensor",
    "copy_full_into",
    "lora_digest",
    "all_reduce_sum",
    "all_gather_objects",
    "gradient_sync",
    "CommTimer",
    "local_parameter_fraction",
]


def env_world_size() -> int:
    """WORLD_SIZE as set by torchrun (1 when not launched by it)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


@dataclass
class CommTimer:
    """Wall-clock intervals of DDP's gradient all-reduces (bucket launched -> reduced), on the
    trainer's clock (``time.perf_counter``). Reset at each step by the trainer."""

    intervals: list[tuple[float, float]] = field(default_factory=list)

    def reset(self) -> None:
        self.intervals.clear()


@dataclass
class DistContext:
    rank: int
    world_size: int
    local_rank: int
    backend: str
    strategy: str  # 'ddp' | 'fsdp'
    comm_timer: CommTimer = field(default_factory=CommTimer)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        dist.barrier()

    def close(self) -> None:
        if dist.is_initialized():
            dist.destroy_process_group()


def init_from_env(settings: DistributedConfig, device_name: str) -> tuple[DistContext, torch.device]:
    """Join the process group torchrun described in the environment; pick this rank's device
    (``cuda:LOCAL_RANK`` when the run's device is CUDA)."""
    rank, world, local = (int(os.environ[k]) for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK"))
    wants_cuda = device_name.startswith("cuda") or (device_name == "auto" and torch.cuda.is_available())
    if wants_cuda:
        if not torch.cuda.is_available():
            raise RuntimeError(f"run.device is {device_name!r} but CUDA is not available on this machine")
        device = torch.device("cuda", local)
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
    backend = settings.backend if settings.backend != "auto" else ("nccl" if device.type == "cuda" else "gloo")
    if not dist.is_initialized():
        timeout = timedelta(seconds=settings.timeout_s)
        dist.init_process_group(backend, store=_round_store(rank, world, timeout), rank=rank, world_size=world, timeout=timeout)
    return DistContext(rank, world, local, backend, settings.strategy), device


def _round_store(rank: int, world: int, timeout: timedelta) -> dist.Store:
    """The rendezvous store torchrun set up (MASTER_ADDR/PORT), under a prefix per restart
    round. When torchrun restarts workers (--max-restarts) the store keeps the previous round's
    keys, and gloo's connection setup then read the dead processes' addresses (seen with torch
    2.13: "connectFullMesh failed ... Connection refused"); a fresh prefix per round avoids it."""
    agent_hosts_it = os.environ.get("TORCHELASTIC_USE_AGENT_STORE", "").lower() == "true"
    store = dist.TCPStore(
        os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]), world,
        is_master=not agent_hosts_it and rank == 0, timeout=timeout,
    )  # fmt: skip
    return dist.PrefixStore(f"reward3d/round{os.environ.get('TORCHELASTIC_RESTART_COUNT', '0')}", store)


# --- wrapping the transformer ------------------------------------------------------------------


def wrap_denoiser(transformer: torch.nn.Module, context: DistContext, *, device: torch.device, dtype: torch.dtype,
                  reshard_after_forward: bool = True) -> torch.nn.Module:  # fmt: skip
    """What the policy's forwards call. DDP: a wrapper (the inner module keeps the names the
    LoRA code uses). FSDP: the transformer itself, sharded in place (each block, then the
    root); its parameters become DTensors, so callers must re-read them afterwards."""
    if context.strategy == "ddp":
        from torch.nn.parallel import DistributedDataParallel

        import inspect

        # buffers (rotary tables) are the same on every rank: synced once at init, not per forward
        no_buffer_sync = (
            {"forward_sync_buffers": False}
            if "forward_sync_buffers" in inspect.signature(DistributedDataParallel).parameters
            else {"broadcast_buffers": False}
        )
        wrapped = DistributedDataParallel(
            transformer, device_ids=[device.index] if device.type == "cuda" else None, **no_buffer_sync
        )
        wrapped.register_comm_hook(context.comm_timer, _timed_allreduce_hook)
        return wrapped
    import warnings

    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    # diffusers returns its output through a reshape (a view); we never modify it in place
    warnings.filterwarnings("ignore", message=r"FSDP2-wrapped module .* returned a view tensor")

    # bf16 base weights + fp32 LoRA in one block: compute in the model dtype, reduce in fp32
    policy = MixedPrecisionPolicy(param_dtype=dtype, reduce_dtype=torch.float32) if dtype != torch.float32 else MixedPrecisionPolicy()
    for block in transformer.blocks:
        fully_shard(block, mp_policy=policy, reshard_after_forward=reshard_after_forward)
    fully_shard(transformer, mp_policy=policy, reshard_after_forward=reshard_after_forward)
    return transformer


def local_parameter_fraction(module: torch.nn.Module) -> float:
    """Share of the module's parameter elements stored on this rank (1 unsharded, ~1/N with FSDP)."""
    from torch.distributed.tensor import DTensor

    local = sum((p.to_local() if isinstance(p, DTensor) else p).numel() for p in module.parameters())
    return local / max(1, sum(p.numel() for p in module.parameters()))


def _timed_allreduce_hook(timer: CommTimer, bucket):  # -> torch.futures.Future[Tensor] (DDP rejects a string annotation)
    """DDP's default all-reduce (sum, then divide by world size), with its duration recorded."""
    start = time.perf_counter()
    tensor = bucket.buffer().div_(dist.get_world_size())
    future = dist.all_reduce(tensor, async_op=True).get_future()

    def done(fut):
        timer.intervals.append((start, time.perf_counter()))
        return fut.value()[0]

    return future.then(done)


@contextmanager
def gradient_sync(denoiser: torch.nn.Module, enabled: bool) -> Iterator[None]:
    """Backward passes inside skip the gradient reduction (accumulate locally) unless
    ``enabled``: DDP's ``no_sync``, FSDP2's ``set_requires_gradient_sync``."""
    if enabled:
        yield
        return
    if hasattr(denoiser, "no_sync"):
        with denoiser.no_sync():
            yield
        return
    if hasattr(denoiser, "set_requires_gradient_sync"):
        denoiser.set_requires_gradient_sync(False)
        try:
            yield
        finally:
            denoiser.set_requires_gradient_sync(True)
        return
    yield


# --- sharded tensors ---------------------------------------------------------------------------


def full_tensor(value: Tensor) -> Tensor:
    """The whole tensor: gathered from the ranks for an FSDP DTensor (a collective: every rank
    must call it, in the same order), the tensor itself otherwise."""
    from torch.distributed.tensor import DTensor

    return value.full_tensor() if isinstance(value, DTensor) else value


def copy_full_into(target: Tensor, full: Tensor) -> None:
    """Write a whole tensor into ``target``, keeping only this rank's shard for a DTensor."""
    from torch.distributed.tensor import DTensor, distribute_tensor

    with torch.no_grad():
        if isinstance(target, DTensor):
            target.copy_(distribute_tensor(full.to(target.device, target.dtype), target.device_mesh, target.placements))
        else:
            target.copy_(full.to(target.device, target.dtype))


def lora_digest(named_tensors: list[tuple[str, Tensor]]) -> str:
    """sha256 (first 16 hex digits) of the whole LoRA weights, names and bytes, in order."""
    digest = hashlib.sha256()
    for name, value in named_tensors:
        data = full_tensor(value.detach()).float().cpu().contiguous()
        digest.update(name.encode())
        digest.update(data.numpy().tobytes())
    return digest.hexdigest()[:16]


# --- small collectives -------------------------------------------------------------------------


def all_reduce_sum(values: list[float], device: torch.device) -> list[float]:
    """Element-wise sum over ranks (float64 on the wire; gloo on CPU, nccl on CUDA)."""
    tensor = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor.tolist()


def all_gather_objects(value: Any) -> list[Any]:
    """One picklable object from every rank, in rank order, on every rank."""
    gathered: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, value)
    return gathered

"""Client side of reward3d: an SDK to call the service, and a Flow-GRPO trainer built on it.

Nothing here imports ``service``: trainers talk to reward3d over HTTP only.

- ``trainer_client.client``: the HTTP SDK, ``RewardClient`` (futures) and
  ``AsyncRewardClient`` (asyncio): binary uploads, retries under a deadline, per-video
  failure masks (docs/sdk.md). httpx, numpy and pydantic only; torch only if given tensors.
- ``trainer_client.flow_grpo``: ``reward_fn(videos, prompts, metadata)`` for flow_grpo-style
  trainers.
- ``trainer_client.rewards``: the ``RewardSource`` seam a trainer scores videos through
  (submit right after a rollout, collect a future; per-sample ``ok`` masks), an in-process
  adapter, and the test-only brightness reward. numpy only.
- ``trainer_client.trainer``: the Flow-GRPO trainer for Wan 2.1 (torch, diffusers, peft).
- ``trainer_client.cli``: ``reward3d train CONFIG``.
"""

from trainer_client.client import (
    AsyncRewardClient,
    DeadlineExceeded,
    ItemFailure,
    RequestRejected,
    RetryPolicy,
    RewardClient,
    RewardServiceError,
    Scores,
)
from trainer_client.flow_grpo import make_reward_fn
from trainer_client.rewards import RewardBatch, RewardSource, SampleReward
from trainer_client.schemas import RewardResult, TermResult

__all__ = [
    "AsyncRewardClient",
    "DeadlineExceeded",
    "ItemFailure",
    "RequestRejected",
    "RetryPolicy",
    "RewardBatch",
    "RewardClient",
    "RewardResult",
    "RewardServiceError",
    "RewardSource",
    "SampleReward",
    "Scores",
    "TermResult",
    "make_reward_fn",
]

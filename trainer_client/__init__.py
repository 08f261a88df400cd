"""Client side of reward3d: an SDK to call the service, and a Flow-GRPO trainer built on it.

Nothing here imports ``service``: trainers talk to reward3d over HTTP only.

- ``trainer_client.rewards``: the ``RewardSource`` seam a trainer scores videos through
  (submit right after a rollout, collect a future; per-sample ``ok`` masks), an in-process
  adapter, and the test-only brightness reward. numpy only.
- ``trainer_client.trainer``: the Flow-GRPO trainer for Wan 2.1 (torch, diffusers, peft).
- ``trainer_client.cli``: ``reward3d train CONFIG``.
"""

from trainer_client.rewards import RewardBatch, RewardSource, SampleReward

__all__ = ["RewardBatch", "RewardSource", "SampleReward"]

"""Flow-GRPO fine-tuning of Wan 2.1 against reward3d (or any RewardSource).

Where things are:

- ``config.py``      TrainConfig (one YAML file; defaults = the reference method, documented)
- ``loop.py``        Trainer: the step (rollouts -> rewards -> advantages -> update), run, checkpoints
- ``rollout.py``     SDE sampling with log-probs; re-evaluating a recorded step
- ``sde.py``         the SDE step, its log-prob, the KL (pure maths)
- ``grpo.py``        group-relative advantages with failure masks, PPO-clip loss (pure maths)
- ``wan.py``         loading Wan 2.1 (hub id / local dir), the tiny random build, LoRA, encode/velocity/decode
- ``prompts.py``     prompt sets, per-step sampling, the main/dynamic phase schedule
- ``ema.py``, ``checkpoint.py``, ``tracking.py``, ``timing.py``

Rewards come through ``trainer_client.rewards.RewardSource``; nothing here imports ``service``.
Heavy modules (torch, diffusers) load only when these submodules are imported.
"""

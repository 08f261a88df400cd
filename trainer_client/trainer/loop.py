"""The Flow-GRPO training loop for Wan 2.1.

One step (``Trainer.step``) reads top to bottom:

1. choose the phase (main / dynamic) and draw this step's prompts (each repeated group_size times);
2. roll out batch after batch, requesting each batch's rewards the moment it is decoded, so
   reward compute overlaps the next batch's generation (timestamps are recorded);
3. wait for the rewards (each batch under a deadline; failures are masked, never read as 0);
4. group-relative advantages per prompt;
5. the update: PPO-clip loss + beta * KL to the reference (the same transformer with the LoRA
   adapter disabled), gradients accumulated over micro-batches and training timesteps;
6. EMA of the LoRA weights, metrics, checkpoint.

``Trainer.train`` runs steps until ``run.max_steps``, saving every ``run.save_every`` steps.
Designed for data parallelism later (issue 8): ``rank``/``world_size`` shard the prompts by
whole groups, noise is seeded per sample, only rank 0 logs and writes checkpoints.
"""

from __future__ import annotations

import concurrent.futures
import importlib
import logging
import math
import os
import time
from collections.abc import Iterator
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from trainer_client.rewards import (
    InProcessRewardSource,
    RewardBatch,
    RewardSource,
    ResultsRewardSource,
    brightness_reward,
    failed_batch,
)
from trainer_client.trainer.checkpoint import (
    CheckpointData,
    capture_rng,
    find_latest,
    load_checkpoint,
    prune_checkpoints,
    restore_rng,
    save_checkpoint,
)
from trainer_client.trainer.config import RewardConfig, TrainConfig
from trainer_client.trainer.ema import LoraEma
from trainer_client.trainer.grpo import Advantages, group_advantages, ppo_clip_loss
from trainer_client.trainer.prompts import Phase, PromptSampler, derive_seed, load_prompt_set, phase_at
from trainer_client.trainer.rollout import RolloutBatch, choose_train_steps, generate, step_log_prob
from trainer_client.trainer.sde import gaussian_kl_same_std
from trainer_client.trainer.timing import summarise_overlap
from trainer_client.trainer.tracking import MetricsLogger
from trainer_client.trainer.wan import (
    DTYPES,
    LinearLatentDecoder,
    WanComponents,
    WanPolicy,
    load_components,
    make_schedule,
)

__all__ = ["Trainer", "StepReport", "BatchTiming", "build_reward_source"]

log = logging.getLogger("reward3d.trainer")
now = time.perf_counter


@dataclass
class BatchTiming:
    """One rollout batch on the trainer's clock (seconds, ``time.perf_counter``)."""

    rollout_start: float
    rollout_end: float
    submitted: float
    completed: float | None = None  # when its reward future finished (None: never, e.g. timed out)


@dataclass
class StepReport:
    step: int  # the step index (0-based) that was run
    phase: Phase
    metrics: dict[str, float]
    timings: list[BatchTiming]
    rewards: np.ndarray  # [N] float64, NaN where failed
    ok: np.ndarray  # [N] bool
    advantages: np.ndarray  # [N]
    mask: np.ndarray  # [N] bool: samples that entered the loss
    errors: list[str] = field(default_factory=list)  # distinct reward errors this step
    grad_nonzero: dict[str, bool] = field(default_factory=dict)  # per LoRA tensor, first update


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"run.device is {name!r} but CUDA is not available on this machine")
    return device


def build_reward_source(config: RewardConfig) -> RewardSource:
    """The reward source a config names (see RewardConfig.source)."""
    if config.source == "brightness":
        return InProcessRewardSource(brightness_reward, max_workers=config.max_workers, latency_s=config.latency_s)
    if config.source == "python":
        module_name, _, attribute = (config.function or "").partition(":")
        if not module_name or not attribute:
            raise ValueError(f"reward.function must be 'package.module:function', got {config.function!r}")
        try:
            function = getattr(importlib.import_module(module_name), attribute)
        except (ImportError, AttributeError) as exc:
            raise ValueError(f"reward.function {config.function!r} cannot be imported: {exc}") from None
        return InProcessRewardSource(function, max_workers=config.max_workers, latency_s=config.latency_s)
    from trainer_client.client import RequestRejected, RewardClient  # the HTTP SDK

    api_key = config.api_key or os.environ.get("REWARD3D_API_KEY")
    client = RewardClient(
        config.url, api_key=api_key, deadline_s=config.timeout_s, downsample=config.downsample,
        options=config.options, max_in_flight=config.max_workers,
    )  # fmt: skip
    # One request now, so a wrong key or URL path stops the run before the model loads. A
    # service that is not up yet is not an error: its batches are masked until it answers.
    try:
        client.info(deadline_s=10.0, retry=False)
    except RequestRejected as exc:
        client.close()
        raise ValueError(f"the reward service at {config.url} refused the trainer: {exc}") from None
    except Exception as exc:
        log.warning("reward service at %s not reachable yet (%s: %s); batches are masked until it answers",
                    config.url, type(exc).__name__, exc)  # fmt: skip
    return ResultsRewardSource(client)


def _chunks(items: list, size: int) -> Iterator[list]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _split_evenly(items: list, parts: int) -> list[list]:
    parts = max(1, min(parts, len(items)))
    bounds = np.linspace(0, len(items), parts + 1).round().astype(int)
    return [items[a:b] for a, b in zip(bounds[:-1], bounds[1:]) if b > a]


class Trainer:
    def __init__(
        self,
        config: TrainConfig,
        *,
        reward_source: RewardSource | None = None,
        components: WanComponents | None = None,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        self.config = config
        self.rank = rank
        self.world_size = world_size
        self.is_main_process = rank == 0
        self.device = resolve_device(config.run.device)
        if self.device.type == "cpu":
            torch.set_num_threads(config.run.num_threads)
        torch.manual_seed(config.run.seed)
        # the reward source first: a misconfigured one fails before minutes of model loading
        self.reward_source = reward_source if reward_source is not None else build_reward_source(config.reward)

        # prompts (the tiny model's tokenizer is built from them)
        base = config.base_dir
        self.samplers: dict[Phase, PromptSampler] = {
            "main": PromptSampler(load_prompt_set(config.prompts.train, base), seed=config.run.seed, name="main")
        }
        if config.dynamic.enabled:
            dynamic = load_prompt_set(config.prompts.dynamic, base)
            self.samplers["dynamic"] = PromptSampler(dynamic, seed=config.run.seed, name="dynamic")
        corpus = [p for sampler in self.samplers.values() for p in sampler.prompts]

        # model + LoRA
        if components is None:
            components = load_components(config.model, prompt_corpus=corpus)
        tiny = config.model.tiny
        pixel_decoder = (
            LinearLatentDecoder(int(components.transformer.config.in_channels), seed=tiny.seed + 1)
            if tiny is not None and tiny.pixel_decoder == "linear"
            else None
        )
        self.policy = WanPolicy(components, device=self.device, dtype=DTYPES[config.model.dtype], pixel_decoder=pixel_decoder)
        self.policy.add_lora(config.lora)
        if config.model.gradient_checkpointing:
            self.policy.transformer.enable_gradient_checkpointing()
        self.schedule = make_schedule(self.policy.scheduler, config.sampling.num_steps, self.device)
        sampling = config.sampling
        self.latent_shape = self.policy.latent_shape(sampling.num_frames, sampling.height, sampling.width)
        self.negative_embeds = (
            self.policy.encode_prompts([sampling.negative_prompt], max_length=config.model.text_max_length)
            if sampling.guidance_scale != 1.0
            else None
        )  # [1,L,D]

        # optimisation
        optim = config.optim
        self.optimizer = torch.optim.AdamW(
            self.policy.lora_parameters(),
            lr=optim.learning_rate,
            betas=(optim.adam_beta1, optim.adam_beta2),
            weight_decay=optim.weight_decay,
            eps=optim.adam_eps,
        )
        self.ema = (
            LoraEma(self.policy.lora_named_parameters(), decay=config.ema.decay, update_interval=config.ema.update_interval)
            if config.ema.enabled
            else None
        )
        self.step_count = 0  # steps completed
        self.optimizer_updates = 0
        self._failed_steps_in_a_row = 0

        self.output_dir = Path(config.run.output_dir)
        self.checkpoint_dir = self.output_dir / "checkpoints"
        self.logger = MetricsLogger(
            self.output_dir,
            tensorboard=config.logging.tensorboard,
            wandb=config.logging.wandb,
            wandb_project=config.logging.wandb_project,
            run_config=config.model_dump(mode="json"),
            enabled=self.is_main_process,
        )
        if config.run.resume:
            self._resume(config.run.resume)

    # --- one step ---------------------------------------------------------------------------

    def step(self) -> StepReport:
        config, step = self.config, self.step_count
        grpo, sampling = config.grpo, config.sampling
        started = now()

        # 1. phase and prompts
        phase = phase_at(step, config.dynamic)
        drawn = self.samplers[phase].draw(
            step, prompts_per_rank=grpo.prompts_per_step, group_size=grpo.group_size, rank=self.rank, world_size=self.world_size
        )
        terms = config.dynamic.terms if phase == "dynamic" else config.reward.terms
        # the dynamic phase's terms count with weight 1 (the service's default weight for
        # `quality` is 0: with weights=None its total would be null and every sample masked)
        weights = {name: 1.0 for name in terms} if phase == "dynamic" else config.reward.weights
        selector = torch.Generator().manual_seed(derive_seed(config.run.seed, "train-steps", step))
        train_steps = choose_train_steps(
            self.schedule.num_steps, config.num_train_timesteps, selection=grpo.timestep_selection, generator=selector
        )

        # 2. rollouts; each batch's rewards are requested as soon as its videos exist
        self.policy.transformer.eval()
        batches: list[RolloutBatch] = []
        futures: list[concurrent.futures.Future[RewardBatch]] = []
        timings: list[BatchTiming] = []
        indices = list(range(len(drawn.prompts)))
        chunks = list(_chunks(indices, grpo.rollout_batch_size))
        for chunk in self._progress(chunks, desc=f"step {step} rollouts", leave=False):
            rollout_start = now()
            prompts = [drawn.prompts[i] for i in chunk]
            sample_ids = [drawn.sample_ids[i] for i in chunk]
            embeds = self.policy.encode_prompts(prompts, max_length=config.model.text_max_length)
            generators = [
                torch.Generator(device=self.device).manual_seed(derive_seed(config.run.seed, "noise", step, sid))
                for sid in sample_ids
            ]
            batch = generate(
                self.policy,
                prompts=prompts,
                sample_ids=sample_ids,
                prompt_embeds=embeds,
                negative_embeds=self._negative(len(chunk)),
                schedule=self.schedule,
                train_steps=train_steps,
                generators=generators,
                latent_shape=self.latent_shape,
                guidance_scale=sampling.guidance_scale,
                noise_level=sampling.noise_level,
                storage_device="cpu" if grpo.rollout_storage == "cpu" else None,
            )
            rollout_end = now()
            timing = BatchTiming(rollout_start, rollout_end, submitted=now())
            futures.append(self._submit(batch, terms, weights))
            futures[-1].add_done_callback(lambda _f, t=timing: setattr(t, "completed", now()))
            timings.append(timing)
            batch.videos = None  # the reward side has its own copy
            batches.append(batch)
        rollouts_done = now()

        # 3. rewards (each batch under its own deadline)
        results = [self._collect(future, timing, size=len(b.prompts)) for future, timing, b in zip(futures, timings, batches)]
        rewards_done = now()
        totals = np.concatenate([r.totals for r in results])
        ok = np.concatenate([r.ok for r in results])
        errors = sorted({s.error for r in results for s in r.samples if s.error})

        # 4. advantages within each prompt's group
        advantages = group_advantages(
            torch.from_numpy(np.nan_to_num(totals, nan=0.0)),
            torch.from_numpy(ok),
            torch.tensor(drawn.group_ids),
            std_eps=grpo.std_eps,
            clip=grpo.adv_clip_max,
            min_ok_per_group=grpo.min_ok_per_group,
        )

        # 5. update
        self._check_failures(ok, errors)
        update_metrics, grad_nonzero = self._update(batches, advantages, train_steps)
        updated = now()
        self.step_count += 1

        # 6. metrics (EMA is updated inside _update, checkpoints in train())
        metrics = {
            "phase/dynamic": float(phase == "dynamic"),
            **self._reward_metrics(results, totals, ok, advantages),
            **update_metrics,
            "time/rollout_s": sum(t.rollout_end - t.rollout_start for t in timings),
            "time/reward_wait_s": rewards_done - rollouts_done,
            "time/update_s": updated - rewards_done,
            "time/step_s": updated - started,
            **summarise_overlap(
                [(t.submitted, t.completed if t.completed is not None else rewards_done) for t in timings],
                [(t.rollout_start, t.rollout_end) for t in timings],
            ).as_metrics(),
        }
        self.logger.log(step, metrics)
        return StepReport(
            step=step,
            phase=phase,
            metrics=metrics,
            timings=timings,
            rewards=totals,
            ok=ok,
            advantages=advantages.advantages.numpy(),
            mask=advantages.mask.numpy(),
            errors=errors,
            grad_nonzero=grad_nonzero,
        )

    def _negative(self, batch: int) -> torch.Tensor | None:
        return None if self.negative_embeds is None else self.negative_embeds.expand(batch, -1, -1)

    def _submit(self, batch: RolloutBatch, terms, weights) -> concurrent.futures.Future[RewardBatch]:
        try:
            return self.reward_source.submit(batch.videos, batch.prompts, terms=terms, weights=weights)
        except Exception as exc:  # e.g. a refused request: mask this batch, keep training
            future: concurrent.futures.Future[RewardBatch] = concurrent.futures.Future()
            future.set_result(failed_batch(len(batch.prompts), f"submit failed: {type(exc).__name__}: {exc}"))
            return future

    def _collect(self, future, timing: BatchTiming, *, size: int) -> RewardBatch:
        deadline = timing.submitted + self.config.reward.timeout_s
        try:
            batch = future.result(timeout=max(0.0, deadline - now()))
        except concurrent.futures.TimeoutError:
            future.cancel()
            return failed_batch(size, f"reward timed out after {self.config.reward.timeout_s:g} s")
        except Exception as exc:
            return failed_batch(size, f"{type(exc).__name__}: {exc}")
        if len(batch) != size:
            return failed_batch(size, f"reward source returned {len(batch)} results for {size} videos")
        return batch

    def _check_failures(self, ok: np.ndarray, errors: list[str]) -> None:
        if ok.any():
            self._failed_steps_in_a_row = 0
            if errors:
                log.warning("step %d: %d of %d rewards failed: %s", self.step_count, int((~ok).sum()), ok.size, "; ".join(errors[:3]))
            return
        self._failed_steps_in_a_row += 1
        log.warning("step %d: every reward failed: %s", self.step_count, "; ".join(errors[:3]))
        if self._failed_steps_in_a_row >= self.config.reward.max_failed_steps:
            raise RuntimeError(
                f"every reward failed in {self._failed_steps_in_a_row} consecutive steps; last errors: {'; '.join(errors[:3])}"
            )

    def _reward_metrics(self, results: list[RewardBatch], totals, ok, advantages: Advantages) -> dict[str, float]:
        metrics = {
            "reward/mean": float(totals[ok].mean()) if ok.any() else math.nan,
            "reward/std": float(totals[ok].std()) if ok.any() else math.nan,
            "reward/ok_fraction": float(ok.mean()) if ok.size else math.nan,
            "advantage/abs_mean": float(advantages.advantages[advantages.mask].abs().mean()) if advantages.mask.any() else 0.0,
            "advantage/groups_used": float(advantages.num_groups_used),
            "advantage/zero_std_groups": float((advantages.group_std == 0).sum()),
        }
        merged = RewardBatch([s for r in results for s in r.samples]).term_scores()
        for name, values in merged.items():
            finite = values[np.isfinite(values)]
            if finite.size:
                metrics[f"reward/term/{name}"] = float(finite.mean())
        return metrics

    # --- the update -----------------------------------------------------------------------------

    def _update(self, batches: list[RolloutBatch], advantages: Advantages, train_steps: list[int]):
        """One or more optimizer updates over the samples that have an advantage."""
        config = self.config
        grpo, sampling = config.grpo, config.sampling
        rows = [(b, r) for b, batch in enumerate(batches) for r in range(len(batch.prompts))]
        used = [row for row, keep in zip(rows, advantages.mask.tolist()) if keep]
        sample_advantages = advantages.advantages.tolist()
        position = {row: i for i, row in enumerate(rows)}
        stats: dict[str, list[float]] = {k: [] for k in ("policy_loss", "kl", "ratio", "clipfrac", "approx_kl")}
        grad_norms: list[float] = []
        first_grad_nonzero: dict[str, bool] = {}
        if not used:
            return {"update/skipped": 1.0}, first_grad_nonzero

        self.policy.transformer.train()
        parameters = self.policy.lora_parameters()
        for share in _split_evenly(used, grpo.updates_per_step):
            denominator = self._loss_denominator(len(share)) * len(train_steps)
            for micro in _chunks(share, grpo.train_micro_batch_size):
                latents = torch.stack([batches[b].latents[r] for b, r in micro])  # [m,K,C,T',h,w]
                next_latents = torch.stack([batches[b].next_latents[r] for b, r in micro])
                old_log_probs = torch.stack([batches[b].log_probs[r] for b, r in micro]).to(self.device)  # [m,K]
                embeds = torch.stack([batches[b].prompt_embeds[r] for b, r in micro]).to(self.device)
                adv = torch.tensor([sample_advantages[position[row]] for row in micro], device=self.device)
                negative = self._negative(len(micro))
                for k, step_index in enumerate(train_steps):
                    common = dict(
                        latents=latents[:, k],
                        next_latents=next_latents[:, k],
                        step_index=step_index,
                        prompt_embeds=embeds,
                        negative_embeds=negative,
                        schedule=self.schedule,
                        guidance_scale=sampling.guidance_scale,
                        noise_level=sampling.noise_level,
                    )
                    reference = None
                    if grpo.kl_beta > 0:  # the reference first: toggling adapters must not touch a live graph
                        with torch.no_grad(), self.policy.adapters_disabled():
                            reference = step_log_prob(self.policy, **common)
                    current = step_log_prob(self.policy, **common)
                    policy_loss, ratio = ppo_clip_loss(current.log_prob, old_log_probs[:, k], adv, clip_range=grpo.clip_range)
                    kl = (
                        gaussian_kl_same_std(current.mean, reference.mean, current.std)
                        if reference is not None
                        else torch.zeros_like(policy_loss)
                    )
                    loss = (policy_loss + grpo.kl_beta * kl).sum() / denominator
                    loss.backward()
                    with torch.no_grad():
                        log_ratio = current.log_prob - old_log_probs[:, k]
                        stats["policy_loss"] += policy_loss.tolist()
                        stats["kl"] += kl.tolist()
                        stats["ratio"] += ratio.tolist()
                        stats["clipfrac"] += ((ratio - 1).abs() > grpo.clip_range).float().tolist()
                        stats["approx_kl"] += (0.5 * log_ratio**2).tolist()
            if not first_grad_nonzero:
                first_grad_nonzero = self._grad_nonzero()
            grad_norms.append(float(torch.nn.utils.clip_grad_norm_(parameters, config.optim.max_grad_norm)))
            self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)
            self.optimizer_updates += 1
            if self.ema is not None:
                self.ema.after_optimizer_update(self.optimizer_updates)
        self.policy.transformer.eval()

        ratios = np.array(stats["ratio"])
        metrics = {f"loss/{k}": float(np.mean(v)) for k, v in stats.items() if k in ("policy_loss", "kl")}
        metrics.update(
            {
                "update/ratio_mean": float(ratios.mean()),
                "update/ratio_max_dev": float(np.abs(ratios - 1).max()),
                "update/clipfrac": float(np.mean(stats["clipfrac"])),
                "update/approx_kl": float(np.mean(stats["approx_kl"])),
                "update/grad_norm": float(np.mean(grad_norms)),
                "update/lora_tensors_with_grad": float(np.mean(list(first_grad_nonzero.values()))),
                "update/samples": float(len(used)),
                "update/optimizer_updates": float(self.optimizer_updates),
            }
        )
        return metrics, first_grad_nonzero

    def _loss_denominator(self, local_samples: int) -> int:
        """Samples the loss of one update is averaged over. Single process: this process's.
        A data-parallel run overrides it with the all-reduced count (and divides by the world
        size's gradient averaging accordingly), so every sample weighs the same on every rank."""
        return local_samples

    def _grad_nonzero(self) -> dict[str, bool]:
        """Per LoRA tensor: did a finite, non-zero gradient reach it?"""
        names, grads = zip(*[(n, p.grad) for n, p in self.policy.lora_named_parameters()])
        norms = torch.stack([g.float().norm() if g is not None else torch.tensor(0.0, device=self.device) for g in grads])
        return {name: bool(v > 0 and math.isfinite(v)) for name, v in zip(names, norms.tolist())}

    # --- the run ----------------------------------------------------------------------------

    def train(self, max_steps: int | None = None) -> list[StepReport]:
        """Run until ``max_steps`` steps are completed (default ``run.max_steps``)."""
        target = max_steps if max_steps is not None else self.config.run.max_steps
        reports = []
        bar = self._progress(range(self.step_count, target), desc="training", initial=self.step_count, total=target)
        for _ in bar:
            report = self.step()
            reports.append(report)
            if hasattr(bar, "set_postfix"):
                bar.set_postfix(
                    reward=f"{report.metrics['reward/mean']:.4f}",
                    kl=f"{report.metrics.get('loss/kl', 0.0):.2e}",
                    phase=report.phase,
                    refresh=False,
                )
            if self.step_count % self.config.run.save_every == 0 or self.step_count == target:
                self.save_checkpoint()
        return reports

    def _progress(self, iterable, **kwargs):
        if not (self.config.logging.progress and self.is_main_process):
            return iterable
        from tqdm.auto import tqdm

        return tqdm(iterable, dynamic_ncols=True, **kwargs)

    # --- checkpoints ------------------------------------------------------------------------

    def save_checkpoint(self) -> Path | None:
        if not self.is_main_process:
            return None
        data = CheckpointData(
            step=self.step_count,
            optimizer_updates=self.optimizer_updates,
            ema_updates=self.ema.num_updates if self.ema is not None else 0,
            lora=self.policy.lora_state_dict(),
            lora_ema=self.ema.state_dict() if self.ema is not None else None,
            optimizer=self.optimizer.state_dict(),
            rng=capture_rng(),
            config=self.config.model_dump(mode="json"),
        )
        path = save_checkpoint(self.checkpoint_dir, data)
        prune_checkpoints(self.checkpoint_dir, self.config.run.keep_checkpoints)
        return path

    def _resume(self, where: str) -> None:
        path = find_latest(self.checkpoint_dir) if where == "latest" else Path(where)
        if path is None:
            log.info("resume: latest requested but %s holds no checkpoint; starting fresh", self.checkpoint_dir)
            return
        data = load_checkpoint(path, map_location=self.device)
        self.policy.load_lora_state_dict(data.lora)
        self.optimizer.load_state_dict(data.optimizer)
        if self.ema is not None:
            if data.lora_ema is None:
                raise ValueError(f"{path} has no EMA weights but ema.enabled is true")
            self.ema.load_state_dict({k: v.to(self.device) for k, v in data.lora_ema.items()}, num_updates=data.ema_updates)
        restore_rng(data.rng)
        self.step_count = data.step
        self.optimizer_updates = data.optimizer_updates
        log.info("resumed from %s at step %d", path, data.step)

    def export_lora(self, directory: str | Path, *, use_ema: bool = True) -> Path:
        """Write the LoRA (EMA weights by default) in the diffusers format that
        ``WanPipeline.load_lora_weights`` reads."""
        from diffusers.utils import logging as diffusers_logging

        directory = Path(directory)
        context = self.ema.applied() if (use_ema and self.ema is not None) else nullcontext()
        verbosity = diffusers_logging.get_verbosity()
        diffusers_logging.set_verbosity_error()  # save_lora_adapter calls .to(dtype=None), which warns
        try:
            with context:
                self.policy.transformer.save_lora_adapter(str(directory))
        finally:
            diffusers_logging.set_verbosity(verbosity)
        return directory

    def close(self) -> None:
        self.reward_source.close()
        self.logger.close()

    def __enter__(self) -> "Trainer":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

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
Under ``torchrun`` (WORLD_SIZE > 1) the same code runs data-parallel (``distributed.py``):
whole prompt groups per rank, noise seeded per global sample, the loss averaged over the global
batch, gradients reduced by DDP or FSDP, metrics gathered; only rank 0 logs and writes files.
"""

from __future__ import annotations

import concurrent.futures
import importlib
import inspect
import json
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
    optimizer_state_to_ids,
    optimizer_state_to_names,
    prune_checkpoints,
    restore_rng,
    save_checkpoint,
    save_lora_file,
)
from trainer_client.trainer.config import RewardConfig, TrainConfig
from trainer_client.trainer.distributed import (
    DistContext,
    all_gather_objects,
    all_reduce_sum,
    env_world_size,
    full_tensor,
    gradient_sync,
    init_from_env,
    local_parameter_fraction,
    lora_digest,
    wrap_denoiser,
)
from trainer_client.trainer.ema import LoraEma
from trainer_client.trainer.grpo import Advantages, group_advantages, ppo_clip_loss
from trainer_client.trainer.prompts import Phase, PromptSampler, derive_seed, load_prompt_set, phase_at
from trainer_client.trainer.rollout import RolloutBatch, choose_train_steps, generate, step_log_prob
from trainer_client.trainer.sde import gaussian_kl_same_std
from trainer_client.trainer.throughput import ThroughputRow, append_csv, write_summary
from trainer_client.trainer.timing import summarise_overlap, union_length
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
    """One step as this rank saw it; ``metrics`` are global (every rank's samples)."""

    step: int  # the step index (0-based) that was run
    phase: Phase
    metrics: dict[str, float]
    timings: list[BatchTiming]
    rewards: np.ndarray  # [N] float64, NaN where failed (this rank's samples)
    ok: np.ndarray  # [N] bool
    advantages: np.ndarray  # [N]
    mask: np.ndarray  # [N] bool: samples that entered the loss
    errors: list[str] = field(default_factory=list)  # distinct reward errors this step
    grad_nonzero: dict[str, bool] = field(default_factory=dict)  # per LoRA tensor, first update
    throughput: list[ThroughputRow] = field(default_factory=list)  # one row per rank
    lora_digests: list[str] | None = None  # per rank, when checked this step


@dataclass
class _RankStep:
    """What each rank contributes to a step's global metrics and logs (gathered to all)."""

    results: list[RewardBatch]
    advantages: Advantages
    stats: dict[str, list[float]]
    grad_norms: list[float]
    first_grad_nonzero: dict[str, bool]
    timings: list[BatchTiming]
    throughput: ThroughputRow
    samples: list[dict]
    digest: str | None


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


def _sample_records(batch: RolloutBatch, item_ids: list[str], *, rank: int, step: int) -> list[dict]:
    """The sample log's view of a decoded batch: ids and per-frame means of the uint8 frames
    the reward source receives (so a reward can be checked against its own video)."""
    frames = (batch.videos.float().clamp(0, 1) * 255).round() / 255  # [B,T,3,H,W] as uint8 / 255
    means = frames.mean(dim=(2, 3, 4))  # [B,T]
    return [
        {"id": item_id, "rank": rank, "step": step, "sample_id": sid, "prompt": prompt,
         "frame_means": [round(v, 7) for v in row]}
        for item_id, sid, prompt, row in zip(item_ids, batch.sample_ids, batch.prompts, means.tolist())
    ]  # fmt: skip


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
    ) -> None:
        self.config = config
        # under torchrun: join the process group first (it also picks this rank's device)
        self.dist: DistContext | None = None
        if env_world_size() > 1:
            self.dist, self.device = init_from_env(config.distributed, config.run.device)
        else:
            self.device = resolve_device(config.run.device)
        self.rank = self.dist.rank if self.dist else 0
        self.world_size = self.dist.world_size if self.dist else 1
        self.is_main_process = self.rank == 0
        if self.device.type == "cpu":
            torch.set_num_threads(config.run.num_threads)
        torch.manual_seed(config.run.seed)
        # the reward source first: a misconfigured one fails before minutes of model loading
        self.reward_source = reward_source if reward_source is not None else build_reward_source(config.reward)
        self._source_takes_ids = "ids" in inspect.signature(self.reward_source.submit).parameters

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
        self.policy = WanPolicy(
            components, device=self.device, dtype=DTYPES[config.model.dtype], pixel_decoder=pixel_decoder,
            offload_text_encoder=config.model.offload_text_encoder,
        )  # fmt: skip
        self.policy.add_lora(config.lora)
        if config.model.gradient_checkpointing:
            self.policy.transformer.enable_gradient_checkpointing()
        if self.dist is not None:  # before the optimizer and EMA: FSDP replaces the parameters
            self.policy.denoiser = wrap_denoiser(
                self.policy.transformer, self.dist, device=self.device, dtype=DTYPES[config.model.dtype],
                reshard_after_forward=config.distributed.reshard_after_forward,
            )  # fmt: skip
            self.policy.collect_lora()
            self._local_fraction = local_parameter_fraction(self.policy.transformer)
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
        self._throughput_rows: list[ThroughputRow] = []  # rank 0: this process's steps, for the summary

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
        if self.dist is not None:
            self.dist.comm_timer.reset()

        # 1. phase and prompts (this rank's whole groups of the global batch)
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
        samples: list[dict] = []  # the sample log (logging.sample_log)
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
            item_ids = [f"r{self.rank}-s{step}-i{sid}" for sid in sample_ids]  # unique in the run
            timing = BatchTiming(rollout_start, rollout_end, submitted=now())
            futures.append(self._submit(batch, terms, weights, item_ids))
            futures[-1].add_done_callback(lambda _f, t=timing: setattr(t, "completed", now()))
            timings.append(timing)
            if config.logging.sample_log:
                samples += _sample_records(batch, item_ids, rank=self.rank, step=step)
            batch.videos = None  # the reward side has its own copy
            batches.append(batch)
        rollouts_done = now()

        # 3. rewards (each batch under its own deadline, on this rank only)
        results = [self._collect(future, timing, size=len(b.prompts)) for future, timing, b in zip(futures, timings, batches)]
        rewards_done = now()
        totals = np.concatenate([r.totals for r in results])
        ok = np.concatenate([r.ok for r in results])
        errors = sorted({s.error for r in results for s in r.samples if s.error})

        # 4. advantages within each prompt's group (a group is whole on this rank)
        advantages = group_advantages(
            torch.from_numpy(np.nan_to_num(totals, nan=0.0)),
            torch.from_numpy(ok),
            torch.tensor(drawn.group_ids),
            std_eps=grpo.std_eps,
            clip=grpo.adv_clip_max,
            min_ok_per_group=grpo.min_ok_per_group,
        )

        # 5. update. The ok count over all ranks is the one collective that waits for rewards:
        # every rank reaches it when its own rewards are in or past their deadline.
        ok_count = float(ok.sum())
        if self.dist is not None:
            (ok_count,) = all_reduce_sum([ok_count], self.device)
        synced = now()
        self._check_failures(ok_count > 0, ok, errors)
        stats, grad_norms, grad_nonzero = self._update(batches, advantages, train_steps)
        updated = now()
        self.step_count += 1

        # 6. metrics over every rank's samples (EMA is updated inside _update, checkpoints in train())
        check = self.dist is not None and config.distributed.check_sync_every > 0 and step % config.distributed.check_sync_every == 0
        mine = _RankStep(
            results=results,
            advantages=advantages,
            stats=stats,
            grad_norms=grad_norms,
            first_grad_nonzero=grad_nonzero,
            timings=timings,
            throughput=ThroughputRow(
                step=step,
                rank=self.rank,
                samples=len(drawn.prompts),
                rollout_s=sum(t.rollout_end - t.rollout_start for t in timings),
                reward_wait_s=rewards_done - rollouts_done,
                sync_wait_s=synced - rewards_done,
                update_s=updated - synced,
                allreduce_s=union_length(self.dist.comm_timer.intervals) if self.dist is not None else 0.0,
                step_s=updated - started,
                reward_hidden_share=summarise_overlap(
                    [(t.submitted, t.completed if t.completed is not None else rewards_done) for t in timings],
                    [(t.rollout_start, t.rollout_end) for t in timings],
                ).hidden_share,
            ),
            samples=samples,
            digest=lora_digest(self.policy.lora_named_parameters()) if check else None,
        )
        ranks: list[_RankStep] = all_gather_objects(mine) if self.dist is not None else [mine]
        digests = [r.digest for r in ranks] if check else None
        if digests is not None and len(set(digests)) != 1:
            raise RuntimeError(f"step {step}: LoRA weights differ between ranks (digests {digests})")

        merged = Advantages(
            advantages=torch.cat([r.advantages.advantages for r in ranks]),
            mask=torch.cat([r.advantages.mask for r in ranks]),
            group_std=torch.cat([r.advantages.group_std for r in ranks]),
            num_groups_used=sum(r.advantages.num_groups_used for r in ranks),
        )
        all_results = [b for r in ranks for b in r.results]
        all_totals = np.concatenate([b.totals for b in all_results])
        all_ok = np.concatenate([b.ok for b in all_results])
        slowest = {name: max(getattr(r.throughput, name) for r in ranks)
                   for name in ("rollout_s", "reward_wait_s", "sync_wait_s", "update_s", "allreduce_s", "step_s")}  # fmt: skip
        metrics = {
            "phase/dynamic": float(phase == "dynamic"),
            **self._reward_metrics(all_results, all_totals, all_ok, merged),
            **self._update_metrics(
                {k: [v for r in ranks for v in r.stats[k]] for k in stats},
                grad_norms,
                grad_nonzero,
                samples=int(merged.mask.sum()),
            ),
            # times: the slowest rank's (the step waits for it); per rank in throughput.csv
            "time/rollout_s": slowest["rollout_s"],
            "time/reward_wait_s": slowest["reward_wait_s"],
            "time/update_s": slowest["update_s"] + slowest["sync_wait_s"] if self.dist is None else slowest["update_s"],
            "time/step_s": slowest["step_s"],
            **summarise_overlap(
                [(t.submitted, t.completed if t.completed is not None else rewards_done) for t in timings],
                [(t.rollout_start, t.rollout_end) for t in timings],
            ).as_metrics(),
        }
        if self.dist is not None:
            metrics["time/sync_wait_s"] = slowest["sync_wait_s"]
            metrics["time/allreduce_s"] = slowest["allreduce_s"]
            metrics["dist/world_size"] = float(self.world_size)
            metrics["dist/local_param_fraction"] = self._local_fraction  # FSDP: ~1/world of the transformer
        if self.is_main_process:
            self._write_step_files(step, ranks, digests)
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
            throughput=[r.throughput for r in ranks],
            lora_digests=digests,
        )

    def _write_step_files(self, step: int, ranks: list[_RankStep], digests: list[str] | None) -> None:
        """Rank 0: per-rank timings (throughput.csv), rollout/reward timestamps (timeline.jsonl),
        LoRA digests and the sample log."""
        out = self.output_dir
        out.mkdir(parents=True, exist_ok=True)
        if self.config.logging.throughput:
            append_csv(out / "throughput.csv", [r.throughput for r in ranks])
            self._throughput_rows.extend(r.throughput for r in ranks)
        with open(out / "timeline.jsonl", "a", encoding="utf-8") as handle:
            for r in ranks:
                batches = [dict(rollout_start=t.rollout_start, rollout_end=t.rollout_end, submitted=t.submitted,
                                completed=t.completed) for t in r.timings]  # fmt: skip
                handle.write(json.dumps({"step": step, "rank": r.throughput.rank, "batches": batches}) + "\n")
        if digests is not None:
            with open(out / "lora_digests.jsonl", "a", encoding="utf-8") as handle:
                handle.write(json.dumps({"step": step, "digests": digests}) + "\n")
        if self.config.logging.sample_log:
            by_id = {}
            for r in ranks:  # attach each sample's reward, in the order it was generated
                flat = [s for b in r.results for s in b.samples]
                for record, reward in zip(r.samples, flat):
                    by_id[record["id"]] = {**record, "ok": reward.ok, "total": reward.total, "terms": reward.terms,
                                           "error": reward.error}  # fmt: skip
            with open(out / "samples.jsonl", "a", encoding="utf-8") as handle:
                for record in by_id.values():
                    handle.write(json.dumps(record) + "\n")

    def _negative(self, batch: int) -> torch.Tensor | None:
        return None if self.negative_embeds is None else self.negative_embeds.expand(batch, -1, -1)

    def _submit(self, batch: RolloutBatch, terms, weights, item_ids: list[str]) -> concurrent.futures.Future[RewardBatch]:
        extra = {"ids": item_ids} if self._source_takes_ids else {}
        try:
            return self.reward_source.submit(batch.videos, batch.prompts, terms=terms, weights=weights, **extra)
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

    def _check_failures(self, any_ok: bool, ok: np.ndarray, errors: list[str]) -> None:
        """``any_ok``: some sample of the step (on any rank) was scored, so every rank takes the
        same decision; ``ok``/``errors`` are this rank's, for the message."""
        if any_ok:
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

    def _update_plan(self, mask: list[bool]) -> list[tuple[list[int], float]]:
        """The optimizer updates of this step: (sample rows, loss denominator in samples) each.

        Single process: the ok samples, split into ``updates_per_step`` shares, each averaged
        over its own size. Data parallel: every row (masked ones are run with weight 0, so all
        ranks execute the same forwards and collectives; all ranks have the same row count), and
        each share's denominator is its *global* ok count divided by the world size, which the
        gradient averaging across ranks multiplies back: every sample weighs 1 / global count."""
        updates = self.config.grpo.updates_per_step
        if self.dist is None:
            used = [i for i, keep in enumerate(mask) if keep]
            return [(share, float(len(share))) for share in _split_evenly(used, updates)]
        shares = _split_evenly(list(range(len(mask))), updates)
        counts = all_reduce_sum([float(sum(mask[i] for i in share)) for share in shares], self.device)
        return [(share, count / self.world_size) for share, count in zip(shares, counts) if count > 0]

    def _update(self, batches: list[RolloutBatch], advantages: Advantages, train_steps: list[int]):
        """One or more optimizer updates. Returns per-sample statistics (ok samples only), the
        gradient norm of each update and, for the first, which LoRA tensors got a gradient."""
        config = self.config
        grpo, sampling = config.grpo, config.sampling
        rows = [(b, r) for b, batch in enumerate(batches) for r in range(len(batch.prompts))]
        mask = advantages.mask.tolist()
        sample_advantages = advantages.advantages.tolist()
        stats: dict[str, list[float]] = {k: [] for k in ("policy_loss", "kl", "ratio", "clipfrac", "approx_kl")}
        grad_norms: list[float] = []
        first_grad_nonzero: dict[str, bool] = {}
        plan = self._update_plan(mask)
        if not plan:
            return stats, grad_norms, first_grad_nonzero

        self.policy.transformer.train()
        parameters = self.policy.lora_parameters()
        for share, samples in plan:
            denominator = samples * len(train_steps)
            micros = list(_chunks(share, grpo.train_micro_batch_size))
            backwards, done = len(micros) * len(train_steps), 0
            for micro in micros:
                picked = [rows[i] for i in micro]
                latents = torch.stack([batches[b].latents[r] for b, r in picked])  # [m,K,C,T',h,w]
                next_latents = torch.stack([batches[b].next_latents[r] for b, r in picked])
                old_log_probs = torch.stack([batches[b].log_probs[r] for b, r in picked]).to(self.device)  # [m,K]
                embeds = torch.stack([batches[b].prompt_embeds[r] for b, r in picked]).to(self.device)
                adv = torch.tensor([sample_advantages[i] for i in micro], device=self.device)
                keep = torch.tensor([mask[i] for i in micro], device=self.device)  # [m] bool
                weight = keep.float()  # masked rows (data-parallel only) contribute exactly 0
                negative = self._negative(len(micro))
                for k, step_index in enumerate(train_steps):
                    done += 1
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
                    # gradients are reduced across ranks only in the update's last backward
                    with gradient_sync(self.policy.denoiser, enabled=self.dist is None or done == backwards):
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
                        loss = ((policy_loss + grpo.kl_beta * kl) * weight).sum() / denominator
                        loss.backward()
                    with torch.no_grad():
                        log_ratio = (current.log_prob - old_log_probs[:, k])[keep]
                        ratio, policy_loss, kl = ratio[keep], policy_loss[keep], kl[keep]
                        stats["policy_loss"] += policy_loss.tolist()
                        stats["kl"] += kl.tolist()
                        stats["ratio"] += ratio.tolist()
                        stats["clipfrac"] += ((ratio - 1).abs() > grpo.clip_range).float().tolist()
                        stats["approx_kl"] += (0.5 * log_ratio**2).tolist()
            if not first_grad_nonzero:
                first_grad_nonzero = self._grad_nonzero()
            norm = torch.nn.utils.clip_grad_norm_(parameters, config.optim.max_grad_norm)
            grad_norms.append(float(full_tensor(norm)))
            self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)
            self.optimizer_updates += 1
            if self.ema is not None:
                self.ema.after_optimizer_update(self.optimizer_updates)
        self.policy.transformer.eval()
        return stats, grad_norms, first_grad_nonzero

    def _update_metrics(self, stats: dict[str, list[float]], grad_norms: list[float], grad_nonzero: dict[str, bool],
                        *, samples: int) -> dict[str, float]:  # fmt: skip
        if not grad_norms:
            return {"update/skipped": 1.0}
        ratios = np.array(stats["ratio"])
        metrics = {f"loss/{k}": float(np.mean(v)) for k, v in stats.items() if k in ("policy_loss", "kl")}
        metrics.update(
            {
                "update/ratio_mean": float(ratios.mean()),
                "update/ratio_max_dev": float(np.abs(ratios - 1).max()),
                "update/clipfrac": float(np.mean(stats["clipfrac"])),
                "update/approx_kl": float(np.mean(stats["approx_kl"])),
                "update/grad_norm": float(np.mean(grad_norms)),
                "update/lora_tensors_with_grad": float(np.mean(list(grad_nonzero.values()))),
                "update/samples": float(samples),
                "update/optimizer_updates": float(self.optimizer_updates),
            }
        )
        return metrics

    def _grad_nonzero(self) -> dict[str, bool]:
        """Per LoRA tensor: did a finite, non-zero gradient reach it?"""
        names, grads = zip(*[(n, p.grad) for n, p in self.policy.lora_named_parameters()])
        norms = [float(full_tensor(g.float().norm())) if g is not None else 0.0 for g in grads]
        return {name: bool(v > 0 and math.isfinite(v)) for name, v in zip(names, norms)}

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
        """Write a checkpoint (rank 0). In a distributed run every rank must call it: sharded
        LoRA/EMA/optimizer state is gathered whole, every rank's RNG state is kept, and ranks
        wait at a barrier until the checkpoint is complete."""
        if self.dist is None:
            if not self.is_main_process:
                return None
            optimizer = self.optimizer.state_dict()
            rng = capture_rng()
        else:
            optimizer = self._optimizer_state_by_name()
            rng = {**capture_rng(), "per_rank": all_gather_objects(capture_rng())}
        lora = self.policy.lora_state_dict()  # whole tensors (a collective under FSDP)
        lora_ema = self.ema.state_dict() if self.ema is not None else None
        path = None
        if self.is_main_process:
            data = CheckpointData(
                step=self.step_count,
                optimizer_updates=self.optimizer_updates,
                ema_updates=self.ema.num_updates if self.ema is not None else 0,
                lora=lora,
                lora_ema=lora_ema,
                optimizer=optimizer,
                rng=rng,
                config=self.config.model_dump(mode="json"),
            )
            path = save_checkpoint(self.checkpoint_dir, data)
            prune_checkpoints(self.checkpoint_dir, self.config.run.keep_checkpoints)
            self.write_throughput_summary()
        if self.dist is not None:
            self.dist.barrier()  # nobody runs ahead (or exits) before the checkpoint exists
        return path

    def _optimizer_state_by_name(self) -> dict:
        """AdamW state keyed by LoRA parameter name, whole tensors (on rank 0; others may get {})."""
        if self.dist is not None and self.dist.strategy == "fsdp":
            from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict

            return get_optimizer_state_dict(
                self.policy.transformer, self.optimizer, options=StateDictOptions(full_state_dict=True, cpu_offload=True)
            )
        return optimizer_state_to_names(self.optimizer.state_dict(), self._lora_names())

    def _lora_names(self) -> list[str]:
        return [name for name, _ in self.policy.lora_named_parameters()]

    def write_throughput_summary(self) -> None:
        """Rank 0: throughput.md (per-rank means) and throughput.png from this process's steps."""
        if self.is_main_process and self.config.logging.throughput and self._throughput_rows:
            write_summary(self._throughput_rows, self.output_dir)

    def _resume(self, where: str) -> None:
        path = find_latest(self.checkpoint_dir) if where == "latest" else Path(where)
        if path is None:
            log.info("resume: latest requested but %s holds no checkpoint; starting fresh", self.checkpoint_dir)
            return
        # every rank reads the same files (a shared filesystem across nodes)
        data = load_checkpoint(path, map_location="cpu" if self.dist is not None else self.device)
        self.policy.load_lora_state_dict(data.lora)
        self._load_optimizer_state(data.optimizer)
        if self.ema is not None:
            if data.lora_ema is None:
                raise ValueError(f"{path} has no EMA weights but ema.enabled is true")
            self.ema.load_state_dict({k: v.to(self.device) for k, v in data.lora_ema.items()}, num_updates=data.ema_updates)
        per_rank = data.rng.get("per_rank") or []
        restore_rng(per_rank[self.rank] if self.rank < len(per_rank) else data.rng)
        self.step_count = data.step
        self.optimizer_updates = data.optimizer_updates
        log.info("resumed from %s at step %d", path, data.step)

    def _load_optimizer_state(self, state: dict) -> None:
        """Either format (parameter indices: single process; names: distributed), any world size."""
        names = self._lora_names()
        if self.dist is not None and self.dist.strategy == "fsdp":
            from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

            set_optimizer_state_dict(
                self.policy.transformer, self.optimizer, optim_state_dict=optimizer_state_to_names(state, names),
                options=StateDictOptions(full_state_dict=True),
            )  # fmt: skip
            return
        self.optimizer.load_state_dict(optimizer_state_to_ids(state, names))

    def export_lora(self, directory: str | Path, *, use_ema: bool = True) -> Path:
        """Write the LoRA (EMA weights by default) in the diffusers format that
        ``WanPipeline.load_lora_weights`` reads. Distributed: every rank calls it, rank 0 writes."""
        from diffusers.utils import logging as diffusers_logging

        directory = Path(directory)
        if self.dist is not None and self.dist.strategy == "fsdp":  # sharded: gather, then write
            state = self.ema.state_dict() if (use_ema and self.ema is not None) else self.policy.lora_state_dict()
            if self.is_main_process:
                save_lora_file(self.policy.transformer, state, directory)
            self.dist.barrier()
            return directory
        if self.is_main_process:
            context = self.ema.applied() if (use_ema and self.ema is not None) else nullcontext()
            verbosity = diffusers_logging.get_verbosity()
            diffusers_logging.set_verbosity_error()  # save_lora_adapter calls .to(dtype=None), which warns
            try:
                with context:
                    self.policy.transformer.save_lora_adapter(str(directory))
            finally:
                diffusers_logging.set_verbosity(verbosity)
        if self.dist is not None:
            self.dist.barrier()
        return directory

    def close(self) -> None:
        self.write_throughput_summary()
        self.reward_source.close()
        self.logger.close()
        if self.dist is not None:
            self.dist.close()

    def __enter__(self) -> "Trainer":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

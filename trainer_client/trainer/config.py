"""One training configuration: pydantic models, loaded from a YAML file.

Defaults are the reference method's (World-R1 on Wan 2.1 1.3B, which builds on Flow-GRPO);
where the World-R1 paper and its public code disagree, the choice is written next to the
field and collected in docs/trainer.md. Every section forbids unknown keys, so a typo in a
YAML file is an error, not a silently ignored setting.

    config = load_config("configs/tiny_cpu.yaml", overrides=["run.max_steps=3"])
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

__all__ = ["TrainConfig", "ConfigError", "load_config"]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class TinyWanConfig(_Section):
    """A tiny randomly initialised Wan 2.1 built from configs (tests, CPU smoke runs).

    Same classes as the real model (WanTransformer3DModel, AutoencoderKLWan, UMT5 encoder),
    a few thousand parameters, and a word-level tokenizer built locally from the prompt sets.
    """

    num_layers: int = Field(2, ge=1, description="Transformer blocks.")
    num_attention_heads: int = Field(2, ge=1)
    attention_head_dim: int = Field(12, ge=6, description="Per head; split over 3 rotary axes (multiple of 6).")
    ffn_dim: int = Field(32, ge=1)
    text_dim: int = Field(32, ge=8, description="UMT5 width = transformer text_dim.")
    text_layers: int = Field(2, ge=1)
    vae_base_dim: int = Field(3, ge=1, description="AutoencoderKLWan base_dim (real: 96).")
    vocab_size: int = Field(2000, ge=16, description="Word-level tokenizer size (most frequent words).")
    seed: int = Field(0, description="Seed for the random weights.")
    pixel_decoder: Literal["vae", "linear"] = Field(
        "vae",
        description="How latents become frames. 'vae': the tiny random AutoencoderKLWan. 'linear': a fixed "
        "random linear map of the 16 latent channels to RGB (nearest-upsampled 4x in time, 8x in space), "
        "for RL sanity runs: a random VAE's output barely depends on its input (gradient ascent on the "
        "latents moves its mean brightness by < 0.003), so no pixel reward is learnable through it.",
    )

    @field_validator("attention_head_dim")
    @classmethod
    def _rotary_split(cls, value: int) -> int:
        if value % 6:
            raise ValueError("attention_head_dim must be a multiple of 6 (rotary embedding over t, h, w)")
        return value


class ModelConfig(_Section):
    pretrained: str = Field(
        "Wan-AI/Wan2.1-T2V-1.3B-Diffusers",
        description="Hub id or local directory of a diffusers-format Wan 2.1 T2V checkpoint "
        "(1.3B or 14B). Ignored when `tiny` is set.",
    )
    revision: str | None = Field(None, description="Hub revision (branch, tag or commit).")
    tiny: TinyWanConfig | None = Field(None, description="Build a tiny random model instead of loading one.")
    scheduler: Literal["checkpoint", "unipc", "flow_match_euler"] = Field(
        "checkpoint",
        description="Where the sigma schedule comes from. 'checkpoint': the scheduler saved with the "
        "model (UniPC with flow sigmas for Wan 2.1). Only its sigmas/timesteps are used: the step "
        "itself is our SDE step.",
    )
    flow_shift: float | None = Field(
        None, gt=0, description="Override the schedule's shift (Wan 2.1: 3.0 at 480p, 5.0 at 720p)."
    )
    text_max_length: int = Field(512, ge=8, description="UMT5 tokens per prompt (World-R1 code: 512).")
    dtype: Literal["float32", "bfloat16", "float16"] = Field(
        "bfloat16",
        description="Dtype of the frozen transformer and text encoder weights (reference: bf16). LoRA "
        "weights stay fp32; the VAE runs in fp32; log-probs are always fp32.",
    )
    gradient_checkpointing: bool = Field(True, description="Recompute activations in backward (saves memory).")
    offload_text_encoder: bool = Field(
        False,
        description="Keep the frozen UMT5 text encoder (5.7B parameters, 11 GB in bf16 for Wan 2.1) in CPU "
        "memory and move it to the accelerator only while it encodes a step's prompts.",
    )


class LoraSettings(_Section):
    rank: int = Field(32, ge=1, description="LoRA rank r (reference: 32).")
    alpha: float = Field(64.0, gt=0, description="LoRA alpha (reference: 64; scale alpha/r = 2).")
    target_modules: list[str] = Field(
        ["to_q", "to_k", "to_v", "to_out.0"],
        description="Attention projections of self- and cross-attention. (World-R1 also lists "
        "add_k_proj/add_q_proj/add_v_proj/to_add_out, which Wan 2.1 T2V does not have.)",
    )
    init: Literal["gaussian", "default"] = Field(
        "gaussian", description="peft init: A Gaussian, B zero, so the policy starts as the reference."
    )


class SamplingConfig(_Section):
    height: int = Field(480, ge=16, description="Pixels; multiple of 16.")
    width: int = Field(832, ge=16, description="Pixels; multiple of 16.")
    num_frames: int = Field(81, ge=1, description="4k+1 frames (the VAE compresses time by 4).")
    num_steps: int = Field(50, ge=2, description="Denoising steps per rollout (World-R1: 50).")
    guidance_scale: float = Field(5.0, ge=1.0, description="Classifier-free guidance (World-R1: 5.0; 1 = off).")
    noise_level: float = Field(0.7, gt=0, description="SDE noise level a in std_t = a*sqrt(sigma/(1-sigma)).")
    negative_prompt: str = Field("", description="Unconditional prompt for CFG (World-R1: empty).")

    @model_validator(mode="after")
    def _shapes(self) -> "SamplingConfig":
        if self.height % 16 or self.width % 16:
            raise ValueError(f"height and width must be multiples of 16, got {self.height}x{self.width}")
        if (self.num_frames - 1) % 4:
            raise ValueError(f"num_frames must be 4k+1 (e.g. 9, 81), got {self.num_frames}")
        return self


class GrpoConfig(_Section):
    group_size: int = Field(
        8, ge=2,
        description="Videos per prompt (one GRPO group). Paper: 8; public code: 2. We take 8 "
        "(Flow-GRPO reports >= 8 is more stable).",
    )  # fmt: skip
    prompts_per_step: int = Field(
        3, ge=1,
        description="Prompts per step on this process; samples per step = prompts_per_step * group_size "
        "(3 * 8 = 24, the per-GPU sample count of the World-R1 code).",
    )  # fmt: skip
    rollout_batch_size: int = Field(1, ge=1, description="Videos generated per forward during rollouts.")
    train_micro_batch_size: int = Field(1, ge=1, description="Samples per forward/backward in the update.")
    updates_per_step: int = Field(
        1, ge=1,
        description="Optimizer updates per step. Each update accumulates gradients over its share of the "
        "samples and all training timesteps (gradient accumulation). 1 = one update per step, as the "
        "reference configuration.",
    )  # fmt: skip
    timestep_fraction: float = Field(
        0.49, gt=0, le=1,
        description="Fraction of the denoising steps trained on (World-R1 code: 0.49, i.e. 24 of 50). "
        "The last step is never trained (it is deterministic).",
    )  # fmt: skip
    timestep_selection: Literal["first", "random"] = Field(
        "first",
        description="'first': the earliest (noisiest) steps, as the reference code; 'random': a fresh random "
        "subset each step.",
    )
    clip_range: float = Field(1e-3, gt=0, description="PPO clip range (Wan: 1e-3; SD3 used 1e-4).")
    adv_clip_max: float = Field(5.0, gt=0, description="Advantages are clipped to +-this.")
    std_eps: float = Field(1e-4, gt=0, description="Advantage = (r - mean) / (std + std_eps) within a group.")
    kl_beta: float = Field(0.004, ge=0, description="Weight of the KL to the reference (LoRA disabled).")
    rollout_storage: Literal["device", "cpu"] = Field(
        "device",
        description="Where recorded latents wait for the update. 'cpu' saves accelerator memory "
        "(24 samples x 24 steps x 2 latents of 81x480x832 video = ~10 GB in fp32) at some transfer cost.",
    )
    min_ok_per_group: int = Field(
        2, ge=2,
        description="A group needs this many successfully scored samples to contribute; otherwise all its "
        "samples are masked (no baseline to compare against).",
    )  # fmt: skip


class OptimConfig(_Section):
    learning_rate: float = Field(1e-4, gt=0, description="AdamW learning rate (World-R1: 1e-4).")
    adam_beta1: float = Field(0.9, ge=0, lt=1)
    adam_beta2: float = Field(0.999, ge=0, lt=1)
    weight_decay: float = Field(1e-4, ge=0)
    adam_eps: float = Field(1e-8, gt=0)
    max_grad_norm: float = Field(1.0, gt=0, description="Gradient clipping over the LoRA weights.")


class EmaConfig(_Section):
    enabled: bool = Field(True, description="Keep an exponential moving average of the LoRA weights.")
    decay: float = Field(0.9, ge=0, lt=1, description="EMA decay per EMA update (World-R1: 0.9).")
    update_interval: int = Field(8, ge=1, description="Optimizer updates between EMA updates (World-R1: 8).")


class PromptsConfig(_Section):
    """A prompt set is a built-in name (files in trainer_client/prompts/) or a path to a text
    file with one prompt per line; relative paths are read from the config file's folder."""

    train: str = Field("camera_train", description="Prompts of the main phase (camera motions).")
    dynamic: str = Field("dynamic", description="Prompts of the dynamic phase (people, animals moving).")
    test: str = Field("camera_test", description="Held-out prompts for evaluation.")


class DynamicPhaseConfig(_Section):
    enabled: bool = Field(True, description="Alternate main and dynamic phases.")
    main_steps: int = Field(100, ge=1, description="Steps with the full reward on `prompts.train`.")
    dynamic_steps: int = Field(50, ge=1, description="Then steps on `prompts.dynamic` with only `terms`.")
    terms: list[str] = Field(["quality"], description="Reward terms in the dynamic phase (3D terms off).")


class RewardConfig(_Section):
    source: Literal["http", "python", "brightness"] = Field(
        "http",
        description="'http': the reward3d service via trainer_client.RewardClient; 'python': call "
        "`function` in-process; 'brightness': the TEST-ONLY mean-brightness reward.",
    )
    url: str = Field("http://127.0.0.1:8000", description="Service URL (source 'http').")
    api_key: str | None = Field(None, description="Service API key; default: $REWARD3D_API_KEY.")
    function: str | None = Field(None, description="'package.module:function' (source 'python').")
    terms: list[str] | None = Field(None, description="Terms in the main phase; None = the source's default (all).")
    weights: dict[str, float] | None = Field(None, description="Term weights for the total; None = defaults.")
    timeout_s: float = Field(1800.0, gt=0, description="Deadline per batch; a late batch is masked, not waited on.")
    max_workers: int = Field(
        8, ge=1, description="Batches scored at once (in-process sources) or in flight to the service (http)."
    )
    downsample: bool = Field(
        True,
        description="http: sample the service's max_frames and shrink to its long_side before "
        "uploading (what the service would do; ~17x fewer bytes for 81 frames at 480x832).",
    )
    options: dict[str, int] | None = Field(
        None,
        description="http: ScoreOptions sent with every request, e.g. {long_side: 448, max_frames: 16, "
        "frame_stride: 1}; unset = the service's settings.",
    )
    latency_s: float = Field(0.0, ge=0, description="Simulated compute time per batch (in-process, benchmarks).")
    max_failed_steps: int = Field(
        5, ge=1, description="Stop with an error after this many consecutive steps where every reward failed."
    )

    @model_validator(mode="after")
    def _function_for_python(self) -> "RewardConfig":
        if self.source == "python" and not self.function:
            raise ValueError("reward.source 'python' needs reward.function: 'package.module:function'")
        return self


class DistributedConfig(_Section):
    """Data parallelism under ``torchrun`` (read only when WORLD_SIZE > 1; see docs/trainer.md,
    "Distributed"). ``grpo.prompts_per_step`` stays per rank: the global batch is
    world_size x prompts_per_step prompt groups, each group whole on one rank."""

    strategy: Literal["ddp", "fsdp"] = Field(
        "ddp",
        description="'ddp': every rank holds the whole transformer, LoRA gradients are all-reduced "
        "(DistributedDataParallel); 'fsdp': the transformer is sharded per block across ranks "
        "(FSDP2 fully_shard), for Wan 2.1 14B.",
    )
    backend: Literal["auto", "nccl", "gloo"] = Field("auto", description="'auto': nccl on CUDA, gloo on CPU.")
    timeout_s: float = Field(
        3600.0, gt=0,
        description="Collective timeout. A rank waits in a collective while another still waits for its "
        "rewards, so this must exceed reward.timeout_s plus a step's compute.",
    )  # fmt: skip
    reshard_after_forward: bool = Field(
        True, description="fsdp: free the gathered block weights after each forward (less memory, more traffic)."
    )
    check_sync_every: int = Field(
        10, ge=0,
        description="Every N steps, hash the LoRA weights on every rank and stop with an error if they differ "
        "(0 = never). Rank 0 writes the hashes to lora_digests.jsonl.",
    )  # fmt: skip


class LoggingConfig(_Section):
    tensorboard: bool = Field(True, description="Write TensorBoard scalars under <output_dir>/tensorboard.")
    wandb: bool = Field(False, description="Also log to Weights & Biases (imported only when enabled).")
    wandb_project: str = Field("reward3d")
    progress: bool = Field(True, description="Progress bars on stderr.")
    throughput: bool = Field(
        True,
        description="Rank 0 writes per-step, per-rank timings (rollout, reward wait, sync wait, update, "
        "all-reduce) to throughput.csv, and throughput.md + throughput.png at each checkpoint.",
    )
    sample_log: bool = Field(
        False,
        description="Rank 0 writes samples.jsonl: per sample its rank, step, reward item id, reward, "
        "error and the mean of each video frame (audits that rewards belong to their videos).",
    )


class RunConfig(_Section):
    output_dir: Path = Field(Path("runs/wan_grpo"), description="Checkpoints, metrics.jsonl, TensorBoard.")
    seed: int = Field(42, description="Seeds prompts, initial noise and SDE noise (per step and sample).")
    max_steps: int = Field(10_000, ge=1, description="Steps to train (one step = rollouts + update).")
    save_every: int = Field(60, ge=1, description="Checkpoint every N steps (World-R1: 60); also at the end.")
    keep_checkpoints: int = Field(5, ge=1, description="Older checkpoints are deleted.")
    resume: str | None = Field(None, description="Checkpoint directory, or 'latest' in output_dir.")
    device: str = Field("auto", description="'auto' (CUDA if available), 'cpu', 'cuda', 'cuda:N'.")
    num_threads: int = Field(1, ge=1, description="torch CPU threads.")


class TrainConfig(_Section):
    run: RunConfig = Field(default_factory=RunConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    lora: LoraSettings = Field(default_factory=LoraSettings)
    sampling: SamplingConfig = Field(default_factory=SamplingConfig)
    grpo: GrpoConfig = Field(default_factory=GrpoConfig)
    optim: OptimConfig = Field(default_factory=OptimConfig)
    ema: EmaConfig = Field(default_factory=EmaConfig)
    prompts: PromptsConfig = Field(default_factory=PromptsConfig)
    dynamic: DynamicPhaseConfig = Field(default_factory=DynamicPhaseConfig)
    reward: RewardConfig = Field(default_factory=RewardConfig)
    logging: LoggingConfig = Field(default_factory=LoggingConfig)
    distributed: DistributedConfig = Field(default_factory=DistributedConfig)
    base_dir: Path = Field(Path("."), exclude=True, description="Folder relative prompt paths are read from.")

    @model_validator(mode="after")
    def _collective_outlives_rewards(self) -> "TrainConfig":
        if self.distributed.timeout_s <= self.reward.timeout_s:
            raise ValueError(
                f"distributed.timeout_s ({self.distributed.timeout_s:g}) must exceed reward.timeout_s "
                f"({self.reward.timeout_s:g}): ranks wait in collectives while one waits for rewards"
            )
        return self

    @property
    def samples_per_step(self) -> int:
        return self.grpo.prompts_per_step * self.grpo.group_size

    @property
    def num_train_timesteps(self) -> int:
        """Denoising steps trained per sample: a fraction of the stochastic steps (all but the last)."""
        stochastic = self.sampling.num_steps - 1
        return max(1, min(stochastic, int(self.sampling.num_steps * self.grpo.timestep_fraction)))


class ConfigError(ValueError):
    """A configuration file that cannot be used; the message says what and where."""


def _set_dotted(data: dict[str, Any], dotted: str, value: Any) -> None:
    keys = dotted.split(".")
    node = data
    for key in keys[:-1]:
        node = node.setdefault(key, {})
        if not isinstance(node, dict):
            raise ConfigError(f"override {dotted!r}: {key!r} is not a section")
    node[keys[-1]] = value


def load_config(path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()) -> TrainConfig:
    """Read a YAML file (None: all defaults) and apply ``section.key=value`` overrides
    (values parsed as YAML, so ``grpo.group_size=4`` is an int). Raises ConfigError."""
    import yaml

    data: dict[str, Any] = {}
    base_dir = Path(".")
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file not found: {path}")
        try:
            loaded = yaml.safe_load(path.read_text())
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path}: not valid YAML ({exc})") from None
        if loaded is not None and not isinstance(loaded, dict):
            raise ConfigError(f"{path}: expected a mapping of sections at the top level")
        data = loaded or {}
        base_dir = path.resolve().parent
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} must look like section.key=value")
        key, raw = item.split("=", 1)
        _set_dotted(data, key.strip(), yaml.safe_load(raw))
    try:
        config = TrainConfig.model_validate(data)
    except ValidationError as exc:
        error = exc.errors()[0]
        where = ".".join(str(p) for p in error["loc"]) or "(top level)"
        raise ConfigError(f"{path or 'config'}: {where}: {error['msg']}") from None
    config.base_dir = base_dir
    return config

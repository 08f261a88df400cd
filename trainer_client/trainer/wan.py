"""Wan 2.1 text-to-video as a trainable policy: loading, a tiny random build, LoRA, and the
three calls the trainer makes (encode prompts, predict velocity with CFG, decode latents).

Components are the diffusers / transformers classes of the real checkpoints
(``Wan-AI/Wan2.1-T2V-1.3B-Diffusers`` and ``-14B-Diffusers`` layout: ``tokenizer/``,
``text_encoder/``, ``vae/``, ``transformer/``, ``scheduler/``):

- ``WanTransformer3DModel``: the denoiser; LoRA adapters go on its attention projections.
- ``AutoencoderKLWan``: latents [B,16,T',H/8,W/8] <-> frames, T = 4 (T'-1) + 1.
- ``UMT5EncoderModel`` + its tokenizer: prompt embeddings [B,L,D].
- a flow scheduler (UniPC with flow sigmas for Wan 2.1): only its sigma/timestep schedule is used.

Shapes: B videos, C latent channels, T' latent frames, h/w latent height/width, L tokens.
"""

from __future__ import annotations

import collections
import re
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from trainer_client.trainer.config import LoraSettings, ModelConfig, TinyWanConfig

__all__ = [
    "WanComponents",
    "WanPolicy",
    "Schedule",
    "load_wan_components",
    "build_tiny_wan",
    "build_word_tokenizer",
    "make_schedule",
    "LinearLatentDecoder",
]

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass
class WanComponents:
    tokenizer: Any
    text_encoder: Any  # UMT5EncoderModel
    vae: Any  # AutoencoderKLWan
    transformer: Any  # WanTransformer3DModel
    scheduler: Any  # a diffusers flow scheduler

    def save_pretrained(self, directory: str | Path) -> None:
        """The diffusers Wan layout (model_index.json + one folder per component)."""
        from diffusers import WanPipeline

        WanPipeline(
            tokenizer=self.tokenizer,
            text_encoder=self.text_encoder,
            vae=self.vae,
            transformer=self.transformer,
            scheduler=self.scheduler,
        ).save_pretrained(str(directory))


# --- loading ---------------------------------------------------------------------------------


def load_wan_components(
    pretrained: str,
    *,
    revision: str | None = None,
    dtype: torch.dtype = torch.bfloat16,
    scheduler: str = "checkpoint",
    flow_shift: float | None = None,
) -> WanComponents:
    """Load a diffusers-format Wan 2.1 T2V checkpoint from a hub id or a local directory.

    The VAE is kept in fp32 (decoding quality; it is not trained). Honours HF_HUB_OFFLINE.
    """
    from diffusers import AutoencoderKLWan, WanTransformer3DModel
    from transformers import AutoTokenizer, UMT5EncoderModel

    looks_local = pretrained.startswith((".", "/", "~")) or Path(pretrained).expanduser().exists()
    if looks_local:
        folder = Path(pretrained).expanduser()
        if not (folder / "transformer").is_dir():
            raise FileNotFoundError(f"no diffusers-format Wan checkpoint at {folder} (expected transformer/, vae/, ...)")
        pretrained = str(folder)
    try:
        tokenizer = AutoTokenizer.from_pretrained(pretrained, subfolder="tokenizer", revision=revision)
        text_encoder = UMT5EncoderModel.from_pretrained(
            pretrained, subfolder="text_encoder", revision=revision, dtype=dtype
        )
        vae = AutoencoderKLWan.from_pretrained(pretrained, subfolder="vae", revision=revision, torch_dtype=torch.float32)
        transformer = WanTransformer3DModel.from_pretrained(
            pretrained, subfolder="transformer", revision=revision, torch_dtype=dtype
        )
        sched = _load_scheduler(pretrained, revision=revision, kind=scheduler, flow_shift=flow_shift)
    except OSError as exc:  # not on the hub / no network / offline without a cache
        raise OSError(f"cannot load Wan 2.1 from {pretrained!r}: {str(exc).splitlines()[0]}") from exc
    return WanComponents(tokenizer, text_encoder, vae, transformer, sched)


def _load_scheduler(pretrained: str, *, revision: str | None, kind: str, flow_shift: float | None):
    import diffusers

    config = diffusers.UniPCMultistepScheduler.load_config(pretrained, subfolder="scheduler", revision=revision)
    return _scheduler_from_config(config, kind=kind, flow_shift=flow_shift)


def _scheduler_from_config(config: dict, *, kind: str, flow_shift: float | None):
    import diffusers

    shift = flow_shift if flow_shift is not None else config.get("flow_shift", config.get("shift", 3.0))
    if kind == "checkpoint":
        class_name = config.get("_class_name", "UniPCMultistepScheduler")
        cls = getattr(diffusers, class_name, None)
        if cls is None:
            raise ValueError(f"unknown scheduler class {class_name!r} in the checkpoint")
        overrides = {}
        if flow_shift is not None:
            overrides["flow_shift" if "flow_shift" in config else "shift"] = flow_shift
        return cls.from_config(config, **overrides)
    if kind == "unipc":
        return diffusers.UniPCMultistepScheduler(
            prediction_type="flow_prediction", use_flow_sigmas=True, num_train_timesteps=1000, flow_shift=shift
        )
    if kind == "flow_match_euler":
        return diffusers.FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=shift)
    raise ValueError(f"unknown scheduler kind {kind!r}")


def load_components(model: ModelConfig, *, prompt_corpus: Iterable[str] = ()) -> WanComponents:
    """The components a ModelConfig names: a tiny random build, or a checkpoint."""
    if model.tiny is not None:
        components = build_tiny_wan(model.tiny, corpus=prompt_corpus)
        if model.scheduler != "checkpoint" or model.flow_shift is not None:
            components.scheduler = _scheduler_from_config(
                dict(components.scheduler.config), kind=model.scheduler, flow_shift=model.flow_shift
            )
        return components
    return load_wan_components(
        model.pretrained,
        revision=model.revision,
        dtype=DTYPES[model.dtype],
        scheduler=model.scheduler,
        flow_shift=model.flow_shift,
    )


# --- tiny random model (tests, CPU) ----------------------------------------------------------

_WORD = re.compile(r"\w+|[^\w\s]")


def build_word_tokenizer(corpus: Iterable[str], *, vocab_size: int = 2000):
    """A word-level tokenizer built locally (no download): the ``vocab_size - 3`` most frequent
    lower-cased words and punctuation marks of ``corpus`` (ties broken alphabetically, so it is
    deterministic), plus ``<pad>`` = 0, ``</s>`` = 1, ``<unk>`` = 2, with ``</s>`` appended to
    every text like the T5 tokenizers. Returned as a transformers fast tokenizer."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    counts = collections.Counter(token for text in corpus for token in _WORD.findall(text.lower()))
    specials = ["<pad>", "</s>", "<unk>"]
    words = [w for w, _ in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])) if w not in specials]
    vocab = {token: i for i, token in enumerate(specials + words[: max(0, vocab_size - len(specials))])}
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tokenizer.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Lowercase()])
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, pad_token="<pad>", eos_token="</s>", unk_token="<unk>", model_max_length=4096
    )


def build_tiny_wan(spec: TinyWanConfig, *, corpus: Iterable[str] = ()) -> WanComponents:
    """A randomly initialised Wan 2.1 with the real classes and tiny sizes (deterministic in
    ``spec.seed``). The tokenizer is built from ``corpus`` (e.g. the prompt sets)."""
    from diffusers import AutoencoderKLWan, UniPCMultistepScheduler, WanTransformer3DModel
    from transformers import UMT5Config, UMT5EncoderModel

    tokenizer = build_word_tokenizer(list(corpus) or ["a camera moves"], vocab_size=spec.vocab_size)
    with _seeded(spec.seed):
        text_encoder = UMT5EncoderModel(
            UMT5Config(
                vocab_size=len(tokenizer),
                d_model=spec.text_dim,
                d_kv=max(4, spec.text_dim // 4),
                d_ff=2 * spec.text_dim,
                num_layers=spec.text_layers,
                num_heads=4,
                relative_attention_num_buckets=8,
                relative_attention_max_distance=32,
                dropout_rate=0.0,
                pad_token_id=0,
                eos_token_id=1,
                decoder_start_token_id=0,
            )
        ).eval()
        vae = AutoencoderKLWan(
            base_dim=spec.vae_base_dim,
            z_dim=16,
            dim_mult=[1, 1, 1, 1],
            num_res_blocks=1,
            temperal_downsample=[False, True, True],
        ).eval()
        transformer = WanTransformer3DModel(
            patch_size=(1, 2, 2),
            num_attention_heads=spec.num_attention_heads,
            attention_head_dim=spec.attention_head_dim,
            in_channels=16,
            out_channels=16,
            text_dim=spec.text_dim,
            freq_dim=256,
            ffn_dim=spec.ffn_dim,
            num_layers=spec.num_layers,
            cross_attn_norm=True,
            qk_norm="rms_norm_across_heads",
            rope_max_seq_len=32,
        )
    # The schedule Wan 2.1's diffusers checkpoints ship with (480p shift).
    scheduler = UniPCMultistepScheduler(
        prediction_type="flow_prediction", use_flow_sigmas=True, num_train_timesteps=1000, flow_shift=3.0
    )
    return WanComponents(tokenizer, text_encoder, vae, transformer, scheduler)


@contextmanager
def _seeded(seed: int) -> Iterator[None]:
    """Initialise weights from ``seed`` without disturbing the caller's global RNG."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


class LinearLatentDecoder(torch.nn.Module):
    """Frames as a fixed linear function of the latents (tiny models only; see
    TinyWanConfig.pixel_decoder): rgb = 0.5 + 0.5 tanh(W z + b) per latent pixel, with W, b
    random from ``seed``, then nearest upsampling: latent frame 0 -> video frame 0, each
    later latent frame -> 4 frames; each latent pixel -> ``spatial_factor``^2 pixels."""

    def __init__(self, channels: int, *, seed: int, temporal_factor: int = 4, spatial_factor: int = 8) -> None:
        super().__init__()
        generator = torch.Generator().manual_seed(seed)
        self.register_buffer("weight", torch.randn(3, channels, generator=generator) / channels**0.5)
        self.register_buffer("bias", 0.1 * torch.randn(3, generator=generator))
        self.temporal_factor = temporal_factor
        self.spatial_factor = spatial_factor

    def forward(self, latents: Tensor) -> Tensor:  # [B,C,T',h,w] -> [B,T,3,H,W] in [0,1]
        rgb = 0.5 + 0.5 * torch.tanh(torch.einsum("oc,bcthw->bthwo", self.weight, latents.float()) + self.bias)
        rgb = rgb.permute(0, 1, 4, 2, 3)  # [B,T',3,h,w]
        frames = torch.cat([rgb[:, :1], rgb[:, 1:].repeat_interleave(self.temporal_factor, dim=1)], dim=1)
        return frames.repeat_interleave(self.spatial_factor, dim=3).repeat_interleave(self.spatial_factor, dim=4)


# --- the sigma schedule ----------------------------------------------------------------------


@dataclass(frozen=True)
class Schedule:
    sigmas: Tensor  # [S+1] fp32, decreasing from ~1 to 0
    timesteps: Tensor  # [S] what the transformer is conditioned on at each step

    @property
    def num_steps(self) -> int:
        return int(self.timesteps.shape[0])

    @property
    def sigma_cap(self) -> float:
        """The second sigma: it stands in for the first in the SDE std's 1 - sigma, because the
        first sigma is 1 (or, for UniPC, 0.999999), where sigma / (1 - sigma) blows up."""
        return float(self.sigmas[1])


def make_schedule(scheduler, num_steps: int, device: torch.device | str = "cpu") -> Schedule:
    """Sigmas and timesteps of ``scheduler`` for ``num_steps`` steps (we never call its step)."""
    scheduler.set_timesteps(num_steps, device="cpu")
    sigmas = torch.as_tensor(scheduler.sigmas, dtype=torch.float32).flatten()
    timesteps = torch.as_tensor(scheduler.timesteps).flatten().float()
    if sigmas.shape[0] != num_steps + 1 or timesteps.shape[0] != num_steps:
        raise ValueError(
            f"scheduler gave {sigmas.shape[0]} sigmas and {timesteps.shape[0]} timesteps for {num_steps} steps"
        )
    if not bool((sigmas[1:] < sigmas[:-1]).all()) or float(sigmas[-1]) != 0.0:
        raise ValueError("expected sigmas strictly decreasing to 0 (a flow-matching scheduler)")
    return Schedule(sigmas=sigmas.to(device), timesteps=timesteps.to(device))


# --- the policy ------------------------------------------------------------------------------


def _to(module: torch.nn.Module, device: torch.device, dtype: torch.dtype) -> torch.nn.Module:
    """Move, and cast only if some weight has another dtype (diffusers warns on needless casts
    because some modules are meant to stay fp32)."""
    module = module.to(device)
    if any(p.dtype != dtype for p in module.parameters() if p.is_floating_point()):
        module = module.to(dtype)
    return module


class WanPolicy:
    """Wan 2.1 components on one device, with LoRA on the transformer.

    The transformer and text encoder run in ``dtype``; LoRA weights are fp32; latents and
    velocities handed back are fp32.
    """

    def __init__(
        self,
        components: WanComponents,
        *,
        device: torch.device,
        dtype: torch.dtype,
        pixel_decoder: LinearLatentDecoder | None = None,  # tiny models only: replaces the VAE decode
        offload_text_encoder: bool = False,  # keep UMT5 on the CPU between encodes
    ) -> None:
        self.components = components
        self.device = device
        self.dtype = dtype
        self.tokenizer = components.tokenizer
        self.offload_text_encoder = offload_text_encoder and device.type != "cpu"
        home = torch.device("cpu") if self.offload_text_encoder else device
        self.text_encoder = _to(components.text_encoder, home, dtype).eval().requires_grad_(False)
        self.vae = _to(components.vae, device, torch.float32).eval().requires_grad_(False)
        self.transformer = _to(components.transformer, device, dtype).requires_grad_(False)
        # What velocity() calls: the transformer itself, or a wrapper around it (DDP/FSDP for
        # data-parallel runs) while LoRA switches and checkpoints keep using self.transformer.
        self.denoiser: torch.nn.Module = self.transformer
        self.scheduler = components.scheduler
        vae_config = self.vae.config
        self.temporal_factor = int(getattr(vae_config, "scale_factor_temporal", 4))
        self.spatial_factor = int(getattr(vae_config, "scale_factor_spatial", 8))
        self.pixel_decoder = pixel_decoder.to(device) if pixel_decoder is not None else None
        self._lora: list[tuple[str, torch.nn.Parameter]] = []

    # LoRA ----------------------------------------------------------------------------------

    def add_lora(self, settings: LoraSettings) -> None:
        from peft import LoraConfig

        self.transformer.add_adapter(
            LoraConfig(
                r=settings.rank,
                lora_alpha=settings.alpha,
                init_lora_weights=True if settings.init == "default" else "gaussian",
                target_modules=list(settings.target_modules),
            )
        )
        self.collect_lora()
        if not self._lora:
            raise ValueError(f"no LoRA layer was created: no module matches {settings.target_modules}")
        for _, parameter in self._lora:
            parameter.data = parameter.data.float()  # trainable weights in fp32 whatever the base dtype
            parameter.requires_grad_(True)

    def collect_lora(self) -> None:
        """(Re)read the LoRA parameters: FSDP replaces them with sharded ones when it wraps."""
        self._lora = [(n, p) for n, p in self.transformer.named_parameters() if "lora_" in n]

    def lora_named_parameters(self) -> list[tuple[str, torch.nn.Parameter]]:
        return list(self._lora)

    def lora_parameters(self) -> list[torch.nn.Parameter]:
        return [p for _, p in self._lora]

    def lora_state_dict(self) -> dict[str, Tensor]:
        """Whole LoRA tensors (gathered from the ranks when sharded: every rank must call it)."""
        from trainer_client.trainer.distributed import full_tensor

        return {name: full_tensor(p.detach()).clone() for name, p in self._lora}

    def load_lora_state_dict(self, state: dict[str, Tensor]) -> None:
        names = {name for name, _ in self._lora}
        if set(state) != names:
            missing, unexpected = sorted(names - set(state)), sorted(set(state) - names)
            raise ValueError(f"LoRA state does not match the model (missing {missing[:3]}, unexpected {unexpected[:3]})")
        from trainer_client.trainer.distributed import copy_full_into

        for name, parameter in self._lora:
            copy_full_into(parameter, state[name])

    @contextmanager
    def adapters_disabled(self) -> Iterator[None]:
        """The reference policy: the same transformer with LoRA switched off."""
        self.transformer.disable_adapters()
        try:
            yield
        finally:
            self.transformer.enable_adapters()
            for _, parameter in self._lora:  # re-enabling must leave them trainable
                parameter.requires_grad_(True)

    # the three calls ------------------------------------------------------------------------

    def latent_shape(self, num_frames: int, height: int, width: int) -> tuple[int, int, int, int]:
        """[C, T', h, w] of one video's latents."""
        channels = int(self.transformer.config.in_channels)
        return (
            channels,
            (num_frames - 1) // self.temporal_factor + 1,
            height // self.spatial_factor,
            width // self.spatial_factor,
        )

    @torch.no_grad()
    def encode_prompts(self, prompts: Sequence[str], *, max_length: int) -> Tensor:  # [B,L,D]
        """UMT5 embeddings, zero after each prompt's last token (as the Wan pipeline pads)."""
        cleaned = [" ".join(p.split()) for p in prompts]
        tokens = self.tokenizer(
            cleaned,
            padding="max_length",
            max_length=max_length,
            truncation=True,
            add_special_tokens=True,
            return_attention_mask=True,
            return_tensors="pt",
        )
        ids = tokens.input_ids.to(self.device)
        mask = tokens.attention_mask.to(self.device)
        if self.offload_text_encoder:
            self.text_encoder.to(self.device)
        try:
            hidden = self.text_encoder(ids, mask).last_hidden_state
        finally:
            if self.offload_text_encoder:
                self.text_encoder.to("cpu")
        return (hidden * mask.unsqueeze(-1).to(hidden.dtype)).to(self.dtype)

    def velocity(
        self,
        latents: Tensor,  # [B,C,T',h,w] fp32
        timestep: Tensor,  # [B]
        prompt_embeds: Tensor,  # [B,L,D]
        negative_embeds: Tensor | None,  # [B,L,D], None = no CFG
        guidance_scale: float,
    ) -> Tensor:  # [B,C,T',h,w] fp32
        """The guided velocity uncond + g (cond - uncond); cond and uncond in one forward."""
        use_cfg = negative_embeds is not None and guidance_scale != 1.0
        x = latents.to(self.dtype)
        if use_cfg:
            out = self.denoiser(
                hidden_states=torch.cat([x, x]),
                timestep=torch.cat([timestep, timestep]),
                encoder_hidden_states=torch.cat([prompt_embeds, negative_embeds]),
                return_dict=False,
            )[0].float()
            cond, uncond = out.chunk(2)
            return uncond + guidance_scale * (cond - uncond)
        return self.denoiser(
            hidden_states=x, timestep=timestep, encoder_hidden_states=prompt_embeds, return_dict=False
        )[0].float()

    @torch.no_grad()
    def decode(self, latents: Tensor) -> Tensor:  # [B,C,T',h,w] -> [B,T,3,H,W] float in [0,1]
        if self.pixel_decoder is not None:
            return self.pixel_decoder(latents)
        config = self.vae.config
        mean = torch.tensor(config.latents_mean, dtype=torch.float32, device=self.device).view(1, -1, 1, 1, 1)
        std = torch.tensor(config.latents_std, dtype=torch.float32, device=self.device).view(1, -1, 1, 1, 1)
        video = self.vae.decode(latents.float() * std + mean, return_dict=False)[0]  # [B,3,T,H,W] in [-1,1]
        return ((video.float() + 1.0) / 2.0).clamp(0.0, 1.0).permute(0, 2, 1, 3, 4)

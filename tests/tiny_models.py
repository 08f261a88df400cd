"""Tiny, randomly initialised models built from real configs and saved in the published layouts
(no downloads): DA3 small, a Qwen3-VL judge with a tokenizer built here, a CLIP preference
model, LPIPS weights in torchvision's / lpips' layouts."""

from __future__ import annotations

from pathlib import Path

import torch

# Vocabulary of the test tokenizer. Digits are deliberately NOT at ids 0-9, and the order is
# shuffled, so a judge that hard-coded token ids would read the wrong logits.
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>",
                  "<|vision_end|>", "<|image_pad|>", "<|video_pad|>"]  # fmt: skip
WORDS = ("this image was rendered from a 3d reconstruction of video you are careful judge "
         "rate the coherence quality frame yes no answer with single digit").split()
DIGITS = ["7", "3", "0", "9", "1", "5", "8", "2", "6", "4"]


def save_da3_small(directory: Path, seed: int = 0) -> Path:
    """DA3 small from the package's shipped config, fixed seed, saved with save_pretrained."""
    from service.pipeline.geometry.da3_checkpoint import DA3Checkpoint

    torch.manual_seed(seed)
    checkpoint = DA3Checkpoint.from_preset("da3-small")
    checkpoint.save_pretrained(directory)
    return directory


def tiny_da3_config(model_name: str) -> dict:
    """The package's shipped config for ``model_name`` with every backbone swapped for the
    smallest one (ViT-S: the same classes, fewer dims) and the heads sized to match. Heads,
    Gaussian adapter (degree-2 SH, depth offsets), camera encoder/decoder and, for nested
    models, the metric branch keep the preset's classes and options."""
    from service.pipeline.geometry.da3_checkpoint import shipped_config

    small = shipped_config("da3-small")

    def shrink(branch: dict) -> dict:
        branch = {**branch, "net": dict(small["net"])}
        for name in ("head", "gs_head"):
            if name in branch:
                branch[name] = {**branch[name], **{key: small["head"][key] for key in
                                                   ("dim_in", "features", "out_channels")}}  # fmt: skip
        if "cam_enc" in branch:
            branch["cam_enc"] = {**branch["cam_enc"], "dim_out": small["cam_enc"]["dim_out"]}
            branch["cam_dec"] = {**branch["cam_dec"], "dim_in": small["cam_dec"]["dim_in"]}
        return branch

    config = shipped_config(model_name)
    if "anyview" in config:  # nested: an any-view branch and a metric branch
        return {**config, "anyview": shrink(config["anyview"]), "metric": shrink(config["metric"])}
    return shrink(config)


def save_tiny_da3(directory: Path, model_name: str = "da3-giant", seed: int = 0) -> Path:
    """A tiny random network of ``model_name``'s classes (tiny_da3_config), saved with
    save_pretrained under that preset name."""
    from service.pipeline.geometry.da3_checkpoint import DA3Checkpoint

    torch.manual_seed(seed)
    DA3Checkpoint(model_name=model_name, config=tiny_da3_config(model_name)).save_pretrained(directory)
    return directory


def build_tokenizer(words=WORDS, digits=DIGITS):
    from tokenizers import AddedToken, Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    tokens = list(SPECIAL_TOKENS) + list(words) + list(digits) + ["Yes", "No", "[UNK]"]
    punctuation = list(".,:;!?\"'()-")
    vocab = {token: index for index, token in enumerate(dict.fromkeys(tokens + punctuation))}
    tokenizer = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Punctuation(),
         pre_tokenizers.Digits(individual_digits=True)]  # fmt: skip
    )
    tokenizer.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in SPECIAL_TOKENS])
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, unk_token="[UNK]",
                                   pad_token="<|endoftext|>", eos_token="<|im_end|>")  # fmt: skip


def save_tiny_qwen3_vl(directory: Path, seed: int = 0, tokenizer=None) -> Path:
    """A 2-layer Qwen3-VL (random init from a transformers config), its tokenizer and image
    processor, saved as a Qwen3-VL checkpoint directory."""
    from transformers import Qwen3VLConfig, Qwen3VLForConditionalGeneration
    from transformers.models.qwen2_vl import Qwen2VLImageProcessorPil

    tokenizer = tokenizer or build_tokenizer()
    ids = {token: tokenizer.convert_tokens_to_ids(token) for token in SPECIAL_TOKENS}
    config = Qwen3VLConfig(
        text_config=dict(
            vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
            num_attention_heads=4, num_key_value_heads=2, head_dim=16, max_position_embeddings=2048,
            rope_scaling={"rope_type": "default", "mrope_section": [2, 3, 3], "mrope_interleaved": True},
        ),
        vision_config=dict(
            depth=2, hidden_size=32, intermediate_size=64, num_heads=2, patch_size=16,
            spatial_merge_size=2, temporal_patch_size=2, out_hidden_size=64,
            num_position_embeddings=64, deepstack_visual_indexes=[0],
        ),
        image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"], vision_end_token_id=ids["<|vision_end|>"],
    )  # fmt: skip
    torch.manual_seed(seed)
    model = Qwen3VLForConditionalGeneration(config).eval()
    image_processor = Qwen2VLImageProcessorPil(
        patch_size=16, merge_size=2, temporal_patch_size=2, image_mean=[0.5] * 3,
        image_std=[0.5] * 3, min_pixels=32 * 32, max_pixels=96 * 96,
    )  # fmt: skip
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    image_processor.save_pretrained(directory)
    return directory


def save_tiny_clip(directory: Path, seed: int = 0) -> Path:
    """A tiny CLIP dual encoder in the transformers layout (the preference-model plug point)."""
    from transformers import CLIPConfig, CLIPModel
    from transformers.models.clip import CLIPImageProcessorPil

    tokenizer = build_tokenizer()
    config = CLIPConfig(
        text_config=dict(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64,
                         num_hidden_layers=1, num_attention_heads=2, max_position_embeddings=64,
                         pad_token_id=0, bos_token_id=1, eos_token_id=2),
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                           num_attention_heads=2, image_size=32, patch_size=8),
        projection_dim=16,
    )  # fmt: skip
    torch.manual_seed(seed)
    CLIPModel(config).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    CLIPImageProcessorPil(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(directory)
    return directory


def lpips_state_dicts(seed: int = 0) -> tuple[dict, dict]:
    """Random AlexNet weights in torchvision's layout (with its classifier) and LPIPS linear
    layers in the lpips package's layout (non-negative, as trained ones are)."""
    generator = torch.Generator().manual_seed(seed)
    convs = ((0, 3, 64, 11), (3, 64, 192, 5), (6, 192, 384, 3), (8, 384, 256, 3), (10, 256, 256, 3))
    backbone = {}
    for index, cin, cout, kernel in convs:
        fan_in = cin * kernel * kernel
        backbone[f"features.{index}.weight"] = torch.randn(cout, cin, kernel, kernel, generator=generator) / fan_in**0.5
        backbone[f"features.{index}.bias"] = torch.randn(cout, generator=generator) * 0.01
    backbone["classifier.1.weight"] = torch.randn(8, 4, generator=generator)  # ignored
    lins = {f"lin{i}.model.1.weight": torch.rand(1, cout, 1, 1, generator=generator)
            for i, (_, _, cout, _) in enumerate(convs)}  # fmt: skip
    return backbone, lins

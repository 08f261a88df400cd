"""The production Wan 2.1 loader (hub id or local folder in the diffusers layout), exercised by
saving the tiny random model with save_pretrained and loading it back offline; the locally
built tokenizer."""

import pytest
import torch

from trainer_client.trainer.config import ModelConfig, TinyWanConfig, load_config
from trainer_client.trainer.loop import Trainer
from trainer_client.trainer.wan import build_tiny_wan, build_word_tokenizer, load_components, load_wan_components, make_schedule

CORPUS = ["Camera push in. A lion roars in the wind.", "Camera orbit left, then pull out. A quiet lake."]


def test_word_tokenizer_is_deterministic_and_t5_like():
    tokenizer = build_word_tokenizer(CORPUS * 3 + ["zebra"], vocab_size=12)
    again = build_word_tokenizer(CORPUS * 3 + ["zebra"], vocab_size=12)
    assert tokenizer.get_vocab() == again.get_vocab() and len(tokenizer) == 12
    ids = tokenizer("Camera push in, zebra!").input_ids
    assert ids[-1] == tokenizer.eos_token_id == 1
    assert tokenizer.unk_token_id in ids  # "zebra" is rare: cut by the vocabulary size
    padded = tokenizer(["camera"], padding="max_length", max_length=6, return_tensors="pt")
    assert padded.input_ids[0, 2:].eq(tokenizer.pad_token_id).all()
    assert padded.attention_mask[0].tolist() == [1, 1, 0, 0, 0, 0]


def test_save_pretrained_then_load_offline_through_the_production_loader(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    built = build_tiny_wan(TinyWanConfig(vocab_size=64), corpus=CORPUS)
    built.save_pretrained(tmp_path / "wan")
    assert {p.name for p in (tmp_path / "wan").iterdir()} >= {
        "model_index.json", "tokenizer", "text_encoder", "vae", "transformer", "scheduler"
    }  # fmt: skip
    loaded = load_wan_components(str(tmp_path / "wan"), dtype=torch.float32)

    for name in ("transformer", "vae", "text_encoder"):
        expected, got = getattr(built, name).state_dict(), getattr(loaded, name).state_dict()
        assert expected.keys() == got.keys(), name
        for key in expected:
            assert torch.equal(expected[key], got[key]), f"{name}.{key}"
    assert loaded.tokenizer(CORPUS).input_ids == built.tokenizer(CORPUS).input_ids
    assert type(loaded.scheduler).__name__ == "UniPCMultistepScheduler"
    assert torch.equal(make_schedule(loaded.scheduler, 6).sigmas, make_schedule(built.scheduler, 6).sigmas)
    # the other schedule choices and a shift override
    euler = load_components(ModelConfig(pretrained=str(tmp_path / "wan"), scheduler="flow_match_euler", flow_shift=5.0))
    assert type(euler.scheduler).__name__ == "FlowMatchEulerDiscreteScheduler" and euler.scheduler.config.shift == 5.0

    # the whole trainer on the saved folder, as a real run would load Wan2.1-T2V-1.3B
    config = load_config(
        None,
        [
            f"model.pretrained={tmp_path / 'wan'}", "model.dtype=float32", "model.text_max_length=16",
            "model.gradient_checkpointing=true", "lora.rank=4", "sampling.height=32", "sampling.width=32",
            "sampling.num_frames=5", "sampling.num_steps=3", "grpo.group_size=2", "grpo.prompts_per_step=1",
            "reward.source=brightness", "dynamic.enabled=false", "logging.progress=false",
            "logging.tensorboard=false", f"run.output_dir={tmp_path / 'run'}", "run.device=cpu",
        ],
    )  # fmt: skip
    with Trainer(config) as trainer:
        report = trainer.step()
    assert report.ok.all() and report.metrics["update/ratio_max_dev"] < 1e-4


def test_missing_checkpoints_fail_clearly(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(FileNotFoundError, match="no diffusers-format Wan checkpoint"):
        load_wan_components(str(tmp_path / "absent"))
    with pytest.raises(OSError, match="cannot load Wan 2.1 from 'Wan-AI/Wan2.1-T2V-1.3B-Diffusers'"):
        load_wan_components("Wan-AI/Wan2.1-T2V-1.3B-Diffusers")

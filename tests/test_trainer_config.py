"""Trainer configuration (defaults = the reference method), prompt sets and their sampling,
the main/dynamic phase schedule."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from trainer_client.trainer.config import ConfigError, DynamicPhaseConfig, TrainConfig, load_config
from trainer_client.trainer.prompts import PromptSampler, load_prompt_set, phase_at

REPO = Path(__file__).resolve().parents[1]


def test_defaults_are_the_reference_method():
    config = TrainConfig()
    assert (config.lora.rank, config.lora.alpha) == (32, 64)
    assert set(config.lora.target_modules) == {"to_q", "to_k", "to_v", "to_out.0"}
    assert (config.sampling.num_steps, config.sampling.guidance_scale, config.sampling.noise_level) == (50, 5.0, 0.7)
    assert (config.sampling.height, config.sampling.width, config.sampling.num_frames) == (480, 832, 81)
    assert (config.grpo.clip_range, config.grpo.kl_beta, config.grpo.adv_clip_max, config.grpo.std_eps) == (1e-3, 0.004, 5.0, 1e-4)
    assert config.grpo.group_size == 8  # paper 8 vs public code 2: documented choice
    assert config.num_train_timesteps == 24  # 0.49 of 50 steps, as the World-R1 code
    assert config.optim.learning_rate == 1e-4
    assert (config.ema.decay, config.ema.update_interval) == (0.9, 8)
    assert (config.dynamic.main_steps, config.dynamic.dynamic_steps, config.dynamic.terms) == (100, 50, ["quality"])
    assert config.model.pretrained == "Wan-AI/Wan2.1-T2V-1.3B-Diffusers"


def test_shipped_configs_load(tmp_path):
    for name in ("tiny_cpu.yaml", "wan2_1_1_3b.yaml", "wan2_1_14b.yaml"):
        load_config(REPO / "configs" / name)
    big = load_config(REPO / "configs" / "wan2_1_1_3b.yaml")
    assert big.model_dump(exclude={"run": {"output_dir"}}) == TrainConfig().model_dump(exclude={"run": {"output_dir"}})


def test_overrides_and_clear_errors(tmp_path):
    config = load_config(REPO / "configs" / "tiny_cpu.yaml", ["grpo.group_size=4", "reward.terms=[brightness]"])
    assert config.grpo.group_size == 4 and config.reward.terms == ["brightness"]
    bad = tmp_path / "bad.yaml"
    bad.write_text("grpo:\n  groupsize: 4\n")
    with pytest.raises(ConfigError, match="grpo.groupsize"):
        load_config(bad)
    with pytest.raises(ConfigError, match="4k\\+1"):
        load_config(None, ["sampling.num_frames=10"])
    with pytest.raises(ConfigError, match="multiples of 16"):
        load_config(None, ["sampling.height=100"])
    with pytest.raises(ConfigError, match="reward.function"):
        load_config(None, ["reward.source=python"])
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "missing.yaml")
    with pytest.raises(ConfigError, match="section.key=value"):
        load_config(None, ["grpo.group_size"])
    (tmp_path / "list.yaml").write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(tmp_path / "list.yaml")


def test_phase_schedule_cycles():
    dynamic = DynamicPhaseConfig(main_steps=100, dynamic_steps=50)
    phases = [phase_at(s, dynamic) for s in (0, 99, 100, 149, 150, 249, 250)]
    assert phases == ["main", "main", "dynamic", "dynamic", "main", "main", "dynamic"]
    assert phase_at(120, DynamicPhaseConfig(enabled=False)) == "main"


def test_prompt_sampler_is_deterministic_and_keeps_groups_whole():
    prompts = [f"p{i}" for i in range(7)]
    sampler = PromptSampler(prompts, seed=3, name="main")
    a = sampler.draw(5, prompts_per_rank=2, group_size=3)
    assert a == PromptSampler(prompts, seed=3, name="main").draw(5, prompts_per_rank=2, group_size=3)
    assert a.prompts[:3] == [a.prompts[0]] * 3 and a.group_ids == [0, 0, 0, 1, 1, 1]
    # two ranks with 1 prompt each see exactly the single-process step, split by whole groups
    single = sampler.draw(4, prompts_per_rank=2, group_size=3, world_size=1)
    rank0 = sampler.draw(4, prompts_per_rank=1, group_size=3, rank=0, world_size=2)
    rank1 = sampler.draw(4, prompts_per_rank=1, group_size=3, rank=1, world_size=2)
    assert rank0.prompts + rank1.prompts == single.prompts
    assert rank0.sample_ids + rank1.sample_ids == single.sample_ids
    # one pass over the set before any prompt repeats
    seen = [sampler.draw(s, prompts_per_rank=1, group_size=1).prompts[0] for s in range(7)]
    assert sorted(seen) == sorted(prompts)


def test_builtin_prompt_sets():
    train = load_prompt_set("camera_train")
    dynamic = load_prompt_set("dynamic")
    test = load_prompt_set("camera_test")
    assert len(train) > 2000 and len(dynamic) > 400 and len(test) > 100
    assert all(p.lower().startswith("camera") or "camera" in p.lower() for p in train[:50])
    assert not set(test) & set(train)
    with pytest.raises(FileNotFoundError, match="built-in sets"):
        load_prompt_set("no_such_set")


def test_prompt_files_are_what_the_script_makes(tmp_path):
    source = REPO.parents[1] / "shared" / "data" / "prompts_worldr1"
    if not source.is_dir():
        source = REPO.parent / "shared" / "data" / "prompts_worldr1"
    if not source.is_dir():
        pytest.skip("World-R1 prompt folder not found (../shared/data/prompts_worldr1)")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    subprocess.run(
        [sys.executable, str(REPO / "scripts" / "make_prompt_sets.py"), "--source", str(source), "--out", str(tmp_path)],
        check=True, capture_output=True, env=env,
    )  # fmt: skip
    for name in ("camera_train.txt", "camera_test.txt", "dynamic.txt", "README.md", "LICENSE-World-R1.txt"):
        assert (tmp_path / name).read_bytes() == (REPO / "trainer_client" / "prompts" / name).read_bytes(), name

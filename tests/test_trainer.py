"""The Flow-GRPO trainer on a tiny random Wan 2.1 (real classes, 2 layers, 9x32x32 frames,
4 steps) on CPU: log-prob consistency, gradients, KL, failure masks, overlap of rewards with
rollouts, the dynamic phase, checkpoint resume, RL sanity, the CLI.

The test-only brightness reward and a linear latent->RGB decoder are used where learning
must be visible (a random VAE's output barely depends on its input: see TinyWanConfig)."""

import copy
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from trainer_client.rewards import InProcessRewardSource, brightness_reward
from trainer_client.trainer.config import load_config
from trainer_client.trainer.grpo import group_advantages
from trainer_client.trainer.loop import Trainer
from trainer_client.trainer.prompts import load_prompt_set
from trainer_client.trainer.rollout import generate, step_log_prob
from trainer_client.trainer.wan import build_tiny_wan

REPO = Path(__file__).resolve().parents[1]
TINY = REPO / "configs" / "tiny_cpu.yaml"
NUM_LORA_TENSORS = 2 * 2 * 4 * 2  # layers x (self, cross attention) x (q, k, v, out) x (A, B)


def tiny_config(tmp_path, *overrides):
    quiet = ["logging.progress=false", "logging.tensorboard=false", f"run.output_dir={tmp_path}"]
    return load_config(TINY, [*quiet, *overrides])


@pytest.fixture(scope="module")
def pristine():
    """Tiny components built once; each trainer gets a deep copy (LoRA is added in place)."""
    config = load_config(TINY)
    corpus = load_prompt_set("camera_train") + load_prompt_set("dynamic")
    return build_tiny_wan(config.model.tiny, corpus=corpus)


def make_trainer(pristine, tmp_path, *overrides, reward_source=None) -> Trainer:
    return Trainer(tiny_config(tmp_path, *overrides), components=copy.deepcopy(pristine), reward_source=reward_source)


def lora_tensors(trainer):
    return {name: p.detach().clone() for name, p in trainer.policy.lora_named_parameters()}


def test_recomputed_log_probs_give_ratio_one(pristine, tmp_path):
    with make_trainer(pristine, tmp_path) as trainer:
        prompts = load_prompt_set("camera_train")[:6]
        embeds = trainer.policy.encode_prompts(prompts, max_length=trainer.config.model.text_max_length)
        generators = [torch.Generator().manual_seed(i) for i in range(6)]
        batch = generate(
            trainer.policy, prompts=prompts, sample_ids=list(range(6)), prompt_embeds=embeds,
            negative_embeds=trainer._negative(6), schedule=trainer.schedule, train_steps=[0, 1, 2],
            generators=generators, latent_shape=trainer.latent_shape, guidance_scale=5.0, noise_level=0.7,
        )  # fmt: skip
        assert batch.videos.shape == (6, 9, 3, 32, 32)
        for rows in ([0, 1, 2], [3], [4, 5]):  # other batch sizes than the rollout's, with grad
            for k, step_index in enumerate(batch.train_steps):
                current = step_log_prob(
                    trainer.policy, latents=batch.latents[rows, k], next_latents=batch.next_latents[rows, k],
                    step_index=step_index, prompt_embeds=batch.prompt_embeds[rows], negative_embeds=trainer._negative(len(rows)),
                    schedule=trainer.schedule, guidance_scale=5.0, noise_level=0.7,
                )  # fmt: skip
                assert current.log_prob.requires_grad
                ratio = torch.exp(current.log_prob - batch.log_probs[rows, k])
                torch.testing.assert_close(ratio, torch.ones_like(ratio), atol=1e-4, rtol=0)
        # the same check inside a training step, and its failure when the weights did change
        report = trainer.step()
        assert report.metrics["update/ratio_max_dev"] < 1e-4
    with make_trainer(pristine, tmp_path / "two", "grpo.updates_per_step=2") as trainer:
        assert trainer.step().metrics["update/ratio_max_dev"] > 1e-4  # second update sees moved weights


def test_gradients_reach_every_lora_tensor_and_kl_starts_at_zero(pristine, tmp_path):
    with make_trainer(pristine, tmp_path) as trainer:
        first, second = trainer.step(), trainer.step()
    assert len(first.grad_nonzero) == NUM_LORA_TENSORS
    # step 0: B = 0, so only the B matrices get gradient (A's gradient is B^T times something)
    assert all(ok for name, ok in first.grad_nonzero.items() if "lora_B" in name)
    assert first.metrics["loss/kl"] == 0.0
    # after the first update every LoRA tensor receives gradient, and the policy has left the reference
    assert all(second.grad_nonzero.values()), [n for n, ok in second.grad_nonzero.items() if not ok]
    assert second.metrics["update/lora_tensors_with_grad"] == 1.0
    assert second.metrics["loss/kl"] > 1e-8


def fail_first_of_each_batch(frames, prompts, *, terms=None):
    scores = brightness_reward(frames, prompts)
    scores[0] = None
    return scores


def test_failed_rewards_are_masked(pristine, tmp_path):
    source = InProcessRewardSource(fail_first_of_each_batch)
    with make_trainer(pristine, tmp_path / "masked", reward_source=source) as trainer:
        report = trainer.step()
        masked_weights = lora_tensors(trainer)
    group = 8  # rollout_batch_size = group_size = 8: one group per batch
    assert report.ok.tolist() == ([False] + [True] * 7) * 2
    assert report.mask.tolist() == report.ok.tolist()
    assert (report.advantages[~report.ok] == 0).all()
    assert report.metrics["update/samples"] == 14
    assert report.metrics["reward/ok_fraction"] == pytest.approx(14 / 16)
    # the ok samples' advantages use only ok samples: recompute without the failed ones
    expected = group_advantages(
        torch.from_numpy(np.nan_to_num(report.rewards)), torch.from_numpy(report.ok), torch.arange(16) // group
    )
    np.testing.assert_allclose(report.advantages, expected.advantages.numpy(), atol=1e-6)

    def zero_for_failures(frames, prompts, *, terms=None):  # the classic mistake: failure = reward 0
        scores = brightness_reward(frames, prompts)
        scores[0] = {"brightness": 0.0}
        return scores

    with make_trainer(pristine, tmp_path / "zero", reward_source=InProcessRewardSource(zero_for_failures)) as trainer:
        trainer.step()
        zero_weights = lora_tensors(trainer)
    assert any(not torch.equal(masked_weights[k], zero_weights[k]) for k in masked_weights)


def test_a_failed_batch_is_masked_and_persistent_failure_stops_the_run(pristine, tmp_path):
    calls = []

    def every_other_batch_raises(frames, prompts, *, terms=None):
        calls.append(1)
        if len(calls) % 2 == 0:
            raise ConnectionError("reward service unreachable")
        return brightness_reward(frames, prompts)

    with make_trainer(pristine, tmp_path / "a", reward_source=InProcessRewardSource(every_other_batch_raises, max_workers=1)) as trainer:
        before = lora_tensors(trainer)
        report = trainer.step()
        assert report.ok.tolist() == [True] * 8 + [False] * 8
        assert any("unreachable" in e for e in report.errors)
        assert any(not torch.equal(before[k], v) for k, v in lora_tensors(trainer).items())  # still trained

    slow = InProcessRewardSource(brightness_reward, latency_s=1.0)
    with make_trainer(pristine, tmp_path / "b", "reward.timeout_s=0.2", "reward.max_failed_steps=2", reward_source=slow) as trainer:
        before = lora_tensors(trainer)
        report = trainer.step()
        assert not report.ok.any() and "timed out" in report.errors[0]
        assert report.metrics["update/skipped"] == 1.0
        assert all(torch.equal(before[k], v) for k, v in lora_tensors(trainer).items())
        with pytest.raises(RuntimeError, match="every reward failed in 2 consecutive steps"):
            trainer.step()


def test_rewards_are_requested_right_after_each_rollout_and_overlap_the_next(pristine, tmp_path):
    source = InProcessRewardSource(brightness_reward, max_workers=4, latency_s=0.15)
    with make_trainer(pristine, tmp_path, "grpo.rollout_batch_size=4", reward_source=source) as trainer:
        report = trainer.step()
    timings = report.timings
    assert len(timings) == 4
    for earlier, later in zip(timings, timings[1:]):
        assert earlier.rollout_end <= earlier.submitted <= later.rollout_start  # sent before the next rollout
        assert earlier.completed > later.rollout_start  # and scored while it ran
    assert report.metrics["time/reward_hidden_share"] > 0.1
    assert report.metrics["time/reward_wait_s"] < report.metrics["time/reward_busy_s"]  # part of it was hidden


def test_dynamic_phase_switches_prompts_and_terms(pristine, tmp_path):
    seen = []

    def recording(frames, prompts, *, terms=None):
        seen.append((list(prompts), terms))
        return brightness_reward(frames, prompts)

    with make_trainer(
        pristine, tmp_path, "dynamic.main_steps=1", "dynamic.dynamic_steps=1", "dynamic.terms=[quality_only]",
        "reward.terms=[brightness]", reward_source=InProcessRewardSource(recording, max_workers=1),
    ) as trainer:  # fmt: skip
        phases = [trainer.step().phase for _ in range(3)]
    assert phases == ["main", "dynamic", "main"]
    train, dynamic = set(load_prompt_set("camera_train")), set(load_prompt_set("dynamic"))
    per_step = [seen[0:2], seen[2:4], seen[4:6]]  # 2 rollout batches per step
    for step, phase in zip(per_step, phases):
        for prompts, terms in step:
            assert set(prompts) <= (dynamic if phase == "dynamic" else train)
            assert terms == (["quality_only"] if phase == "dynamic" else ["brightness"])


def test_resume_gives_the_same_weights_as_an_uninterrupted_run(pristine, tmp_path):
    settings = ["run.save_every=2", "dynamic.main_steps=2", "dynamic.dynamic_steps=1", "ema.update_interval=1"]
    with make_trainer(pristine, tmp_path / "straight", *settings) as straight:
        straight.train(max_steps=4)
        expected = (lora_tensors(straight), straight.ema.state_dict(), straight.optimizer.state_dict())
    with make_trainer(pristine, tmp_path / "split", *settings) as first_half:
        first_half.train(max_steps=2)
    with make_trainer(pristine, tmp_path / "split", *settings, "run.resume=latest") as resumed:
        assert resumed.step_count == 2
        resumed.train(max_steps=4)
        got = (lora_tensors(resumed), resumed.ema.state_dict(), resumed.optimizer.state_dict())
    for name, value in expected[0].items():
        torch.testing.assert_close(got[0][name], value, atol=1e-7, rtol=0)
    for name, value in expected[1].items():
        torch.testing.assert_close(got[1][name], value, atol=1e-7, rtol=0)
    for index, state in expected[2]["state"].items():
        torch.testing.assert_close(got[2]["state"][index]["exp_avg_sq"], state["exp_avg_sq"], atol=1e-10, rtol=1e-6)
    assert sorted(p.name for p in (tmp_path / "split" / "checkpoints").iterdir()) == ["step_0000002", "step_0000004"]
    # and the run did change something, so the comparison means something
    assert any(v.abs().sum() > 0 for k, v in expected[0].items() if "lora_B" in k)


def test_rl_sanity_brightness_goes_up(pristine, tmp_path):
    """12 steps on the test-only brightness reward (bench/trainer_rl_sanity.py runs 30 x 3 seeds)."""
    with make_trainer(pristine, tmp_path, "dynamic.enabled=false") as trainer:
        rewards = [r.metrics["reward/mean"] for r in trainer.train(max_steps=12)]
    assert np.mean(rewards[-3:]) > np.mean(rewards[:3]) + 0.01, rewards


def test_vae_decoding_path_and_lora_export(pristine, tmp_path):
    shapes = []

    def recording(frames, prompts, *, terms=None):
        shapes.append(frames.shape)
        return brightness_reward(frames, prompts)

    with make_trainer(
        pristine, tmp_path, "model.tiny.pixel_decoder=vae", reward_source=InProcessRewardSource(recording)
    ) as trainer:
        report = trainer.step()
        exported = trainer.export_lora(tmp_path / "export")
        ema = trainer.ema.state_dict()
    assert shapes == [(8, 9, 32, 32, 3)] * 2 and report.ok.all()
    from safetensors.torch import load_file

    saved = load_file(str(exported / "pytorch_lora_weights.safetensors"))
    assert len(saved) == NUM_LORA_TENSORS
    for name, value in ema.items():  # diffusers drops the adapter name from the keys
        torch.testing.assert_close(saved[name.replace(".default", "")], value)


def test_cli_trains_resumes_and_reports_bad_input(tmp_path):
    from service.cli import app

    runner = CliRunner()
    out = tmp_path / "run"
    args = ["train", str(TINY), "--output-dir", str(out), "--set", "logging.progress=false", "--no-export"]
    result = runner.invoke(app, [*args, "--max-steps", "2"])
    assert result.exit_code == 0, result.output
    result = runner.invoke(app, [*args, "--max-steps", "3", "--resume", "latest"])
    assert result.exit_code == 0, result.output
    steps = [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert steps == [0, 1, 2]
    assert (out / "checkpoints" / "step_0000003").is_dir() and any((out / "tensorboard").iterdir())

    bad = runner.invoke(app, ["train", str(TINY), "--set", "grpo.group_size=1"])
    assert bad.exit_code == 2 and "grpo.group_size" in bad.output and "Traceback" not in bad.output
    missing = runner.invoke(app, ["train", str(TINY), "--set", "model.tiny=null", "--set", f"model.pretrained={tmp_path}/none"])
    assert missing.exit_code == 2 and "no diffusers-format Wan checkpoint" in missing.output
    assert runner.invoke(app, ["train", str(tmp_path / "nope.yaml")]).exit_code == 2


def test_service_cli_does_not_import_the_trainer_at_start_up():
    code = "import sys, service.cli; print(sorted(m for m in sys.modules if m.startswith(('trainer_client', 'diffusers', 'torch'))))"
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


@pytest.mark.gpu
def test_tiny_trainer_on_cuda_in_bf16(pristine, tmp_path):
    with make_trainer(pristine, tmp_path, "run.device=cuda", "model.dtype=bfloat16") as trainer:
        first, second = trainer.step(), trainer.step()
    assert first.metrics["update/ratio_max_dev"] < 1e-3  # bf16 forwards, fp32 log-probs
    assert all(second.grad_nonzero.values()) and second.metrics["loss/kl"] > 0
